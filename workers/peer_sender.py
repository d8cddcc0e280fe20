"""A worker's sends to its peers, packed, sealed and sent on a thread of their own.

A worker's range slices leave during backward, and its reducer's new parameters while the next
step's tasks travel: both on the critical path of a step when the main thread packs and seals
them itself (AES-GCM is a pass over every byte, about a quarter of a worker's remote traffic
time on 2-core hosts). Here the main thread only queues a message; this thread packs it, seals
it once (``sealing``) and sends the same frames to every peer it goes to. ``cryptography`` and
ZeroMQ release the GIL while they work, so a host's spare core takes the bytes while backward
goes on; with none spare the work costs what it did.

The thread owns the DEALERs to the reducers: connecting, sending and closing them are queued
in order with the messages, so a message queued under a range map leaves on that map's sockets.
A message that cannot be packed, sealed or sent is logged and dropped, as a lost message is (the
reducers' checks and the coordinator's deadlines cover it); nothing here ends the worker.
Arrays in a queued message stay referenced until it is sent, so a reducer that steps its
parameters in place copies them first (``reducer.unshare``), as for ZeroMQ's zero-copy sends.
"""

from __future__ import annotations

import logging
import queue
import threading

import zmq

from dtrain.distributed import protocol as P
from dtrain.distributed.security import ClientKeys, make_client

log = logging.getLogger("dtrain.worker")

_STOP = object()
JOIN_SECONDS = 5.0


class PeerSender:
    """The DEALERs to this worker's peers, each keyed by the peer's (address, key), and the
    thread that sends on them. ``keys``: CURVE client keys for the DEALERs (None: no
    mechanism, as when peers seal or keys are off)."""

    def __init__(self, ctx: zmq.Context, keys: ClientKeys | None):
        self.ctx = ctx
        self.keys = keys
        self.sockets: dict[tuple, zmq.Socket] = {}  # the thread's; read elsewhere only by tests
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._queued = 0  # commands not yet carried out
        self._thread = threading.Thread(target=self._run, name="dtrain-peer-sender",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the main thread's side
    def connect(self, peer: tuple) -> None:
        """Open a DEALER to ``peer`` = (address, server public key, '' without keys)."""
        self._put(self._connect, peer)

    def drop(self, peer: tuple) -> None:
        """Close the DEALER to ``peer`` (messages queued before it have left)."""
        self._put(self._drop, peer)

    def send(self, peers: list, msg, job_id: str, sealer=None) -> None:
        """Send ``msg`` to every one of ``peers``: packed, and sealed with ``sealer`` if given,
        once for all of them."""
        self._put(self._send, list(peers), msg, job_id, sealer)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Whether everything queued so far was carried out within ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._queued == 0, timeout)

    def close(self) -> None:
        """Send what is queued, stop the thread, close the sockets."""
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        self._thread.join(JOIN_SECONDS)
        if self._thread.is_alive():
            log.warning("the peer sender did not stop within %.0f s; leaving it", JOIN_SECONDS)

    def _put(self, *command) -> None:
        with self._idle:
            self._queued += 1
        self._queue.put(command)

    # ------------------------------------------------------------------ the thread's side
    def _run(self) -> None:
        try:
            while True:
                command = self._queue.get()
                if command is _STOP:
                    return
                try:
                    command[0](*command[1:])
                except zmq.ContextTerminated:
                    return
                except Exception as e:  # noqa: BLE001 - a message lost, never the worker
                    log.warning("a message to a peer was not sent: %s", e)
                finally:
                    with self._idle:
                        self._queued -= 1
                        self._idle.notify_all()
        finally:
            for sock in self.sockets.values():
                sock.close(0)
            self.sockets.clear()

    def _connect(self, peer: tuple) -> None:
        if peer in self.sockets:
            return
        address, key = peer
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            make_client(sock, ClientKeys(self.keys.public, self.keys.secret, key.encode()))
        sock.connect(address)
        self.sockets[peer] = sock

    def _drop(self, peer: tuple) -> None:
        sock = self.sockets.pop(peer, None)
        if sock is not None:
            sock.close(0)

    def _send(self, peers: list, msg, job_id: str, sealer) -> None:
        frames = None
        for peer in peers:
            sock = self.sockets.get(peer)
            if sock is None:
                log.warning("no connection to peer %s for a %s", peer[0], msg.TYPE)
                continue
            if frames is None:
                frames = P.pack(msg, job_id, P.frame_bytes_for(sock))
                if sealer is not None:
                    frames = sealer.seal(frames)
            P.send_packed(sock, frames)
