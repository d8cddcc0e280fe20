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

Each sender seals under a key of its own, derived from the map's key, its worker id and a
generation (HMAC-SHA256), so the random nonces of one key are drawn only by one sender, and
only ``FRAMES_PER_KEY`` of them: a sender moves to its next generation's key before that.
AES-GCM's bound for random 96-bit nonces (2^32 frames per key) then holds in any run, however
long or wide (512 workers exchange ~500,000 frames a step; one range map may last all run).

Layout: frame 0, in the clear, is ``MAGIC``, the sender's id and generation, the frame count,
a random message id and one random 96-bit nonce per frame; then each plaintext frame
encrypted, with its 16-byte tag. Each frame's associated data is ``MAGIC``, the sender and
generation, the message id, its index and the count.
"""

from __future__ import annotations

import hashlib
import hmac
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
MAX_SENDER = (1 << 32) - 1
FRAMES_PER_KEY = 1 << 30  # frames a sender seals under one generation's key (GCM: <= 2^32)
_KEYS_KEPT = 4096  # senders' keys cached by an opener (any more are derived each time)
_COUNT = struct.Struct("!I")
_ORIGIN = struct.Struct("!II")  # sender, generation
_HEAD = len(MAGIC) + _ORIGIN.size + _COUNT.size + ID_BYTES


def peers_seal(keys_on: bool, peer_cipher: str) -> bool:
    """Whether the sharded reduction's peers seal their messages: with keys, under
    ``peer_cipher = aes-gcm`` (the coordinator, the workers and the scaling model ask here)."""
    return keys_on and peer_cipher == "aes-gcm"


def new_key() -> bytes:
    """A fresh random key for one range map."""
    return os.urandom(KEY_BYTES)


def header_bytes(frames: int) -> int:
    """Bytes of the seal header (frame 0) of a message of ``frames`` frames."""
    return _HEAD + NONCE_BYTES * frames


def _aad(origin: bytes, msg_id: bytes, index: int, count: int) -> bytes:
    return MAGIC + origin + msg_id + _COUNT.pack(index) + _COUNT.pack(count)


def sender_key(key: bytes, sender: int, generation: int = 0) -> bytes:
    """The key worker ``sender`` seals under in ``generation``: HMAC-SHA256 of both under the
    map's key."""
    return hmac.new(key, b"dtrain seal sender " + _ORIGIN.pack(sender, generation),
                    hashlib.sha256).digest()


class Sealer:
    """Seals peer messages (lists of frames) as worker ``sender`` under one range map's key,
    and opens any sender's."""

    def __init__(self, key: bytes, sender: int):
        if type(key) is not bytes or len(key) != KEY_BYTES:
            got = f"{len(key)} bytes" if isinstance(key, (bytes, bytearray)) else \
                f"a {type(key).__name__}"  # never the value: it may be a key
            raise ValueError(f"a seal key is {KEY_BYTES} bytes, got {got}")
        if type(sender) is not int or not 0 <= sender <= MAX_SENDER:
            raise ValueError(f"a sender is a worker id in 0..{MAX_SENDER}, got {sender!r}")
        self._key = key
        self._sender = sender
        self._openers: dict[bytes, AESGCM] = {}
        self._use_generation(0)

    def _use_generation(self, generation: int) -> None:
        self.generation, self._sealed = generation, 0
        self._origin = _ORIGIN.pack(self._sender, generation)
        self._aead = self._opener(self._origin)

    def seal(self, frames: list) -> list:
        """The sealed frames of a message (``frames``: buffers, e.g. ``protocol.pack``'s)."""
        count = len(frames)
        if self._sealed + count > FRAMES_PER_KEY:
            self._use_generation(self.generation + 1)
        self._sealed += count
        msg_id = os.urandom(ID_BYTES)
        nonces = os.urandom(NONCE_BYTES * count)
        sealed = [MAGIC + self._origin + _COUNT.pack(count) + msg_id + nonces]
        for i, frame in enumerate(frames):
            nonce = nonces[i * NONCE_BYTES:(i + 1) * NONCE_BYTES]
            sealed.append(self._aead.encrypt(nonce, frame, _aad(self._origin, msg_id, i, count)))
        return sealed

    def _opener(self, origin: bytes) -> AESGCM:
        aead = self._openers.get(origin)
        if aead is None:
            aead = AESGCM(sender_key(self._key, *_ORIGIN.unpack(origin)))
            if len(self._openers) < _KEYS_KEPT:
                self._openers[origin] = aead
        return aead

    def open(self, frames: list) -> list:
        """The plaintext frames of a sealed message; ProtocolError ("sealed") when it is not one
        sealed under this key, whole and unchanged."""
        if not frames:
            raise ProtocolError("sealed", "empty peer message")
        head = memoryview(frames[0]).cast("B")
        if head.nbytes < _HEAD or bytes(head[:len(MAGIC)]) != MAGIC:
            raise ProtocolError("sealed", "a peer message that is not sealed (peers seal with "
                                "AES-256-GCM under the range map's key)")
        origin = bytes(head[len(MAGIC):len(MAGIC) + _ORIGIN.size])
        (count,) = _COUNT.unpack_from(head, len(MAGIC) + _ORIGIN.size)
        if not 0 < count <= MAX_FRAMES or count != len(frames) - 1 or \
                head.nbytes != header_bytes(count):
            raise ProtocolError("sealed", f"a sealed peer message names {count} frames, holds "
                                f"{len(frames) - 1} and {head.nbytes} bytes of seal header")
        msg_id = bytes(head[_HEAD - ID_BYTES:_HEAD])
        aead = self._opener(origin)
        opened = []
        for i, frame in enumerate(frames[1:]):
            at = _HEAD + i * NONCE_BYTES
            view = memoryview(frame).cast("B")
            if view.nbytes < TAG_BYTES:
                raise ProtocolError("sealed", f"frame {i} of a sealed peer message is shorter "
                                    "than its tag")
            try:
                opened.append(aead.decrypt(bytes(head[at:at + NONCE_BYTES]), view,
                                           _aad(origin, msg_id, i, count)))
            except InvalidTag:
                raise ProtocolError("sealed", f"frame {i} of a peer message failed "
                                    "authentication: not sealed under this range map's key, "
                                    "or changed on the way") from None
        return opened
