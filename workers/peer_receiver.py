"""A worker's mailbox served on a thread of its own: peer messages received and opened there.

Opening a sealed peer message is a pass over its bytes (AES-GCM), and a reducer's mailbox
brings it every other worker's slices of its ranges, mostly while its own backward runs. Here a
thread receives them from the mailbox and opens them (``cryptography`` releases the GIL while
it decrypts), then hands the plaintext frames to the main thread through an in-process pair
(no copy); the main thread decodes and acts on them as before, at the points it serves its
mailbox. A message that fails to open is handed over as a rejection (its reason and text), so
the main thread logs and drops it as it does any bad peer message; nothing a peer sends stops
the thread.
"""

from __future__ import annotations

import itertools
import logging
import threading

import zmq

from dtrain.distributed import protocol as P

log = logging.getLogger("dtrain.worker")

OPENED, REJECTED = b"+", b"!"
JOIN_SECONDS = 5.0
_names = itertools.count()


class PeerReceiver:
    """Serve ``mailbox`` (a bound ROUTER, handed over to the thread) with ``open_frames`` (a
    peer message's frames after the sender's identity, to its plaintext frames; raises
    ProtocolError when they do not open). The main thread reads ``inbox``: ``take``."""

    def __init__(self, ctx: zmq.Context, mailbox: zmq.Socket, open_frames):
        self.mechanism = mailbox.getsockopt(zmq.MECHANISM)
        self._mailbox = mailbox
        self._open = open_frames
        address = f"inproc://dtrain-peer-inbox-{next(_names)}"
        self.inbox = ctx.socket(zmq.PAIR)
        self._outbox = ctx.socket(zmq.PAIR)
        for sock in (self.inbox, self._outbox):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)  # the mailbox's queue moves here: never block
            sock.setsockopt(zmq.RCVHWM, 0)
        self.inbox.bind(address)
        self._outbox.connect(address)
        self._thread = threading.Thread(target=self._run, name="dtrain-peer-receiver",
                                        daemon=True)
        self._thread.start()

    def take(self) -> list | None:
        """The next peer message's plaintext frames, or None if none is waiting; raises
        ProtocolError for one that did not open."""
        try:
            frames = self.inbox.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        if frames[0].bytes == OPENED:
            return frames[1:]
        raise P.ProtocolError(frames[1].bytes.decode(), frames[2].bytes.decode())

    def close(self) -> None:
        """Stop the thread (it closes the mailbox), then the main thread's end."""
        if self._thread.is_alive():
            try:
                self.inbox.send(b"stop", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self._thread.join(JOIN_SECONDS)
            if self._thread.is_alive():
                log.warning("the peer receiver did not stop within %.0f s; leaving it",
                            JOIN_SECONDS)
        self.inbox.close(0)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._mailbox, zmq.POLLIN)
        poller.register(self._outbox, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self._outbox in ready:
                    return
                self._drain()
        except zmq.ContextTerminated:
            return
        finally:
            self._mailbox.close(0)
            self._outbox.close(0)

    def _drain(self) -> None:
        """Hand over every message waiting in the mailbox, opened or rejected."""
        while True:
            try:
                frames = self._mailbox.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                out = [OPENED, *self._open(frames[1:])]
            except P.ProtocolError as e:
                out = [REJECTED, e.reason.encode(), str(e).encode()]
            except Exception as e:  # noqa: BLE001 - a peer's bytes never stop the thread
                out = [REJECTED, b"sealed", f"a peer message that did not open: {e}".encode()]
            self._outbox.send_multipart(out, copy=False)
