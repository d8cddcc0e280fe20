"""Sealed peer messages: AES-256-GCM for the sharded reduction's worker-to-worker traffic.

Across machines the reducers' traffic is nearly all of a step's bytes, and CURVE (ZeroMQ's
XSalsa20-Poly1305, run in its I/O threads) spends more CPU on it than the 2-core hosts have to
spare: 0.75 GB/s through a pair of sockets here, against several GB/s a core for AES-GCM with
the CPU's AES instructions (OpenSSL, through the ``cryptography`` package). With
``peer_cipher = aes-gcm`` (the default of a CURVE run) the workers' mailboxes and the DEALERs
that reach them carry no ZeroMQ mechanism; every message between them is sealed instead, under
a key the coordinator draws for each range map and hands out in the RANGEMAP, over its own
CURVE sockets. Only the job's workers can read a peer message or forge one that opens, as
under CURVE; every other socket (the coordinator's) keeps CURVE.

What CURVE's handshake did at the mailbox, sealing does per message: a stranger can connect,
but what it sends fails to open and is rejected like any malformed message (it costs the
reducer one pass over the bytes). A message is bound to itself: frames reordered, dropped,
moved between messages or changed in a bit fail to open. A replayed message is a copy of one
the job sent under the same map; the reducers' checks (a node's slices once per step and
range, parameters of the step in flight only) drop it, and a new map brings a new key.

Layout: frame 0, in the clear, is ``MAGIC``, the frame count, a random message id and one
random 96-bit nonce per frame; then each plaintext frame encrypted, with its 16-byte tag. Each
frame's associated data is ``MAGIC``, the message id, its index and the count.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .protocol import SEAL_KEY_BYTES as KEY_BYTES  # AES-256
from .protocol import ProtocolError

MAGIC = b"DTS1"
ID_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_FRAMES = 1 << 16  # more than any message of the protocol has
_COUNT = struct.Struct("!I")
_HEAD = len(MAGIC) + _COUNT.size + ID_BYTES


def new_key() -> bytes:
    """A fresh random key for one range map."""
    return os.urandom(KEY_BYTES)


def _aad(msg_id: bytes, index: int, count: int) -> bytes:
    return MAGIC + msg_id + _COUNT.pack(index) + _COUNT.pack(count)


class Sealer:
    """Seals and opens peer messages (lists of frames) under one range map's key."""

    def __init__(self, key: bytes):
        if type(key) is not bytes or len(key) != KEY_BYTES:
            raise ValueError(f"a seal key is {KEY_BYTES} bytes, got "
                             f"{len(key) if isinstance(key, (bytes, bytearray)) else key!r}")
        self._aead = AESGCM(key)

    def seal(self, frames: list) -> list:
        """The sealed frames of a message (``frames``: buffers, e.g. ``protocol.pack``'s)."""
        count = len(frames)
        msg_id = os.urandom(ID_BYTES)
        nonces = os.urandom(NONCE_BYTES * count)
        sealed = [MAGIC + _COUNT.pack(count) + msg_id + nonces]
        for i, frame in enumerate(frames):
            nonce = nonces[i * NONCE_BYTES:(i + 1) * NONCE_BYTES]
            sealed.append(self._aead.encrypt(nonce, frame, _aad(msg_id, i, count)))
        return sealed

    def open(self, frames: list) -> list:
        """The plaintext frames of a sealed message; ProtocolError ("sealed") when it is not one
        sealed under this key, whole and unchanged."""
        if not frames:
            raise ProtocolError("sealed", "empty peer message")
        head = memoryview(frames[0]).cast("B")
        if head.nbytes < _HEAD or bytes(head[:len(MAGIC)]) != MAGIC:
            raise ProtocolError("sealed", "a peer message that is not sealed (peers seal with "
                                "AES-256-GCM under the range map's key)")
        (count,) = _COUNT.unpack_from(head, len(MAGIC))
        if not 0 < count <= MAX_FRAMES or count != len(frames) - 1 or \
                head.nbytes != _HEAD + NONCE_BYTES * count:
            raise ProtocolError("sealed", f"a sealed peer message names {count} frames, holds "
                                f"{len(frames) - 1} and {head.nbytes} bytes of seal header")
        msg_id = bytes(head[len(MAGIC) + _COUNT.size:_HEAD])
        opened = []
        for i, frame in enumerate(frames[1:]):
            at = _HEAD + i * NONCE_BYTES
            view = memoryview(frame).cast("B")
            if view.nbytes < TAG_BYTES:
                raise ProtocolError("sealed", f"frame {i} of a sealed peer message is shorter "
                                    "than its tag")
            try:
                opened.append(self._aead.decrypt(bytes(head[at:at + NONCE_BYTES]), view,
                                                 _aad(msg_id, i, count)))
            except InvalidTag:
                raise ProtocolError("sealed", f"frame {i} of a peer message failed "
                                    "authentication: not sealed under this range map's key, "
                                    "or changed on the way") from None
        return opened
