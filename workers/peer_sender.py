"""A worker's sends to its peers, packed, sealed and sent on a thread of their own.

A worker's range slices leave during backward: packing and sealing them on the main thread
(AES-GCM is a pass over every byte) would hold backward up. Here the main thread only queues a
message and this thread packs it, seals it once (``sealing``) and sends the same frames to every
peer it goes to; ``cryptography`` and ZeroMQ release the GIL while they work, so a spare core
takes the bytes while backward goes on. When the main thread has nothing else to do it carries
out what is queued itself (``flush``): handing work to a thread costs a wake-up and a GIL
hand-over, which at 10 Gbit/s on busy cores is more than the sealing it would save.

The DEALERs to the reducers are used only under the sender's lock, by whichever thread carries
out a command; connecting, sending and closing them are queued in order with the messages, so
a message queued under a range map leaves on that map's sockets. A message that cannot be
packed, sealed or sent is logged and dropped, as a lost message is (the reducers' checks and
the coordinator's deadlines cover it); nothing here ends the worker. Nor does a peer that stops
reading (stopped, stuck, or gone before a new range map says so): once ``SNDHWM`` messages wait
for it, the next ones to it are dropped instead of blocking every send of this worker, which
would stall its own steps and heartbeats and turn one stuck process into two.

Arrays in a queued message stay referenced until it is sent, so a reducer that steps its
parameters in place copies them first (``reducer.unshare``), as for ZeroMQ's zero-copy sends.
"""

from __future__ import annotations

import collections
import logging
import threading

import zmq

from dtrain.distributed import protocol as P
from dtrain.distributed.security import ClientKeys, make_client

log = logging.getLogger("dtrain.worker")

JOIN_SECONDS = 5.0
SNDHWM = 1000  # messages queued for one peer (ZeroMQ's default) before more are dropped


class PeerSender:
    """The DEALERs to this worker's peers, each keyed by the peer's (address, key), and the
    thread that sends on them. ``keys``: CURVE client keys for the DEALERs (None: no
    mechanism, as when peers seal or keys are off)."""

    def __init__(self, ctx: zmq.Context, keys: ClientKeys | None):
        self.ctx = ctx
        self.keys = keys
        self.sockets: dict[tuple, zmq.Socket] = {}  # used under _lock only (tests read it)
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()  # held while a command is carried out
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dtrain-peer-sender",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the main thread's side
    def connect(self, peer: tuple) -> None:
        """Open a DEALER to ``peer`` = (address, server public key, '' without keys)."""
        self._put((self._connect, peer))

    def drop(self, peer: tuple) -> None:
        """Close the DEALER to ``peer`` after the commands queued before; what ZeroMQ still
        holds for it is discarded (a new range map left it out: those messages are stale)."""
        self._put((self._drop, peer))

    def send(self, peers: list, msg, job_id: str, sealer=None, background: bool = True) -> None:
        """Send ``msg`` to every one of ``peers``: packed, and sealed with ``sealer`` if given,
        once for all of them; on the sender's thread, or (``background`` False) on this one,
        after everything queued before it."""
        self._put((self._send, list(peers), msg, job_id, sealer), wake=background)
        if not background:
            self.flush()

    def flush(self) -> None:
        """Carry out everything queued so far, in order, on this thread if the sender's is not
        already at it (then wait for it): one thread at a time."""
        with self._lock:
            while self._queue:
                command = self._queue.popleft()
                try:
                    command[0](*command[1:])
                except zmq.ContextTerminated:
                    self._queue.clear()
                    return
                except Exception as e:  # noqa: BLE001 - a message lost, never the worker
                    log.warning("a message to a peer was not sent: %s", e)

    def close(self) -> None:
        """Send what is queued, stop the thread, close the sockets."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(JOIN_SECONDS)
        if self._thread.is_alive():
            log.warning("the peer sender did not stop within %.0f s; leaving it", JOIN_SECONDS)
            return
        with self._lock:
            for sock in self.sockets.values():
                sock.close(0)
            self.sockets.clear()

    def _put(self, command: tuple, wake: bool = True) -> None:
        self._queue.append(command)
        if wake:
            with self._wake:
                self._wake.notify()

    # ------------------------------------------------------------------ the sender's thread
    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._stopping)
            self.flush()
            if self._stopping:
                return

    def _connect(self, peer: tuple) -> None:
        if peer in self.sockets:
            return
        address, key = peer
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
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
            try:
                P.send_packed(sock, frames, zmq.NOBLOCK)
            except zmq.Again:  # a stuck or dead peer must not stop this worker's other sends
                log.warning("peer %s is not taking messages (%d queued for it): dropped a %s "
                            "of step %s", peer[0], SNDHWM, msg.TYPE, msg.step)
