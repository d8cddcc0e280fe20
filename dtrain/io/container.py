"""The checkpoint file: a checksummed header around a msgpack tree and its array buffers.

File layout (little-endian)::

    header (64 bytes)  magic b"DTRAINCK" | u32 format version | u32 flags (0) | u64 payload length
                       | 32-byte BLAKE2b digest | 8 reserved zero bytes
    payload            u64 table length | u64 tree length
                       | table: msgpack list of [dtype, shape, offset, nbytes], one per array
                         (the packed layout of ``dtrain.io.arraytable``)
                       | tree: msgpack of the object | zero padding to 64 bytes
                       | the array buffers, each starting on a 64-byte boundary

The digest covers the header (all but the digest itself) and the payload, so a flipped byte
anywhere is reported instead of loaded. Writing to a path is atomic: the bytes go to a temporary
file in the same directory (``.<name>.<random>.dtrain.tmp``), which is flushed, fsynced and
renamed over the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import struct
from typing import BinaryIO

import msgpack
import numpy as np

from .arraytable import ALIGN, TableError, decode_packed, encode_packed

__all__ = ["FORMAT_VERSION", "MAGIC", "TMP_SUFFIX", "CheckpointError", "build", "describe",
           "malformed", "read", "remove_temporaries", "temporary_path", "write"]

MAGIC = b"DTRAINCK"
FORMAT_VERSION = 1
TMP_SUFFIX = ".dtrain.tmp"
_HEADER = struct.Struct("<8sIIQ32s8x")  # magic, version, flags, payload length, digest
_DIGEST_AT = 24  # byte offset of the digest field in the header
_SIZES = struct.Struct("<QQ")  # table length, tree length
_READ_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded: truncated, corrupted, foreign or too new."""


def _new_digest(header: bytes):
    """A BLAKE2b hasher fed with the header, its digest field zeroed; the payload follows."""
    start, end = _DIGEST_AT, _DIGEST_AT + 32
    return hashlib.blake2b(header[:start] + bytes(32) + header[end:], digest_size=32)


def _nbytes(chunk) -> int:
    return len(chunk) if isinstance(chunk, bytes) else chunk.nbytes


# ------------------------------------------------------------------------------------ writing
def build(tree: bytes, arrays: list[np.ndarray]) -> list:
    """The file's bytes as a list of chunks, header first; array memory is not copied."""
    table, buffers, _ = encode_packed(arrays)
    table_bytes = msgpack.packb(table, use_bin_type=True)
    head = _SIZES.pack(len(table_bytes), len(tree))
    body_len = len(head) + len(table_bytes) + len(tree)
    chunks: list = [head, table_bytes, tree, bytes(-body_len % ALIGN)]
    position = 0
    for entry, buffer in zip(table, buffers):
        chunks.append(bytes(entry[2] - position))
        chunks.append(buffer)
        position = entry[2] + buffer.nbytes
    payload_len = sum(_nbytes(c) for c in chunks)
    digest = _new_digest(_HEADER.pack(MAGIC, FORMAT_VERSION, 0, payload_len, bytes(32)))
    for c in chunks:
        digest.update(c)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, payload_len, digest.digest())
    return [header, *chunks]


def _fsync_dir(directory: str) -> None:
    if os.name != "posix":
        return  # directories cannot be opened for fsync on Windows; the rename is still atomic
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: str) -> str:
    """A fresh name, beside ``path``, for the temporary that an atomic write renames over it."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{secrets.token_hex(6)}{TMP_SUFFIX}")


_TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX))


def remove_temporaries(directory: str, target: re.Pattern) -> list[str]:
    """Delete the temporaries that killed writers left in ``directory`` for files whose names
    match ``target``; returns their paths. Call it only where no such write can be running."""
    removed = []
    for name in os.listdir(directory):
        found = _TEMPORARY.fullmatch(name)
        if found and target.fullmatch(found.group(1)):
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def _atomic_write(path: str, chunks: list) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = temporary_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # 0o666 minus the umask, like a plain open()
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def write(chunks: list, f: str | os.PathLike | BinaryIO, caller: str = "dtrain.save") -> None:
    """Write ``build``'s chunks to a path (atomically) or to a writable binary file object."""
    if isinstance(f, (str, bytes, os.PathLike)):
        _atomic_write(os.fsdecode(f), chunks)
    elif hasattr(f, "write"):
        for chunk in chunks:
            f.write(chunk)
    else:
        raise TypeError(f"{caller}: f must be a path or a writable binary file object, "
                        f"got {type(f).__name__}")


# ------------------------------------------------------------------------------------ reading
def _read_payload(f, length: int, where: str, available: int | None) -> bytearray:
    if available is not None and available < length:
        raise CheckpointError(f"{where}: file is truncated: the header declares {length} payload "
                              f"bytes but only {available} follow")
    if available is not None:
        buffer = bytearray(length)
        view, got = memoryview(buffer), 0
        while got < length:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
    else:  # the size is unknown: grow with what arrives instead of trusting the header
        buffer = bytearray()
        while len(buffer) < length:
            chunk = f.read(min(length - len(buffer), _READ_CHUNK))
            if not chunk:
                break
            buffer += chunk
        got = len(buffer)
    if got < length:
        raise CheckpointError(f"{where}: file is truncated: the header declares {length} payload "
                              f"bytes but only {got} follow")
    return buffer


def _read_checked(f, where: str, file_size: int | None) -> bytearray:
    """The payload after checking magic, version, flags, length and digest."""
    header = f.read(_HEADER.size)
    if not header:
        raise CheckpointError(f"{where}: empty file, not a dtrain checkpoint")
    if not header.startswith(MAGIC):
        if MAGIC.startswith(header):
            raise CheckpointError(f"{where}: file is truncated inside the header")
        hint = ""
        if header.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip, or a bare pickle
            hint = ("; it looks like a file written by torch.save, which dtrain does not read "
                    "(it never unpickles): in torch, save {name: tensor.numpy()} with "
                    "numpy.savez and pass dict(numpy.load(file)) to load_state_dict")
        raise CheckpointError(f"{where}: not a dtrain checkpoint (wrong magic bytes "
                              f"{header[:8]!r}, expected {MAGIC!r}){hint}")
    if len(header) < _HEADER.size:
        raise CheckpointError(f"{where}: file is truncated inside the header "
                              f"({len(header)} of {_HEADER.size} bytes)")
    _, version, flags, length, digest = _HEADER.unpack(header)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: unsupported checkpoint format version {version} "
                              f"(this dtrain reads version {FORMAT_VERSION})")
    if flags != 0:
        raise CheckpointError(f"{where}: unsupported checkpoint flags {flags:#x}")
    available = None if file_size is None else file_size - _HEADER.size
    payload = _read_payload(f, length, where, available)
    if available is not None and available > length:
        raise CheckpointError(f"{where}: {available - length} unexpected bytes after the payload "
                              "(corrupted header or appended data)")
    check = _new_digest(header)
    check.update(payload)
    if check.digest() != digest:
        raise CheckpointError(f"{where}: checksum mismatch, the file is corrupted")
    return payload


def _split(payload: bytearray) -> tuple[memoryview, list[np.ndarray]]:
    view = memoryview(payload)
    if len(payload) < _SIZES.size:
        raise TableError("length", "payload shorter than its size fields")
    table_len, tree_len = _SIZES.unpack_from(payload)
    table_end = _SIZES.size + table_len
    tree_end = table_end + tree_len
    if tree_end > len(payload):
        raise TableError("length", "table and tree lengths exceed the payload")
    table = msgpack.unpackb(view[_SIZES.size:table_end], raw=False, use_list=True)
    arrays = decode_packed(table, view, -(-tree_end // ALIGN) * ALIGN)
    return view[table_end:tree_end], arrays


def describe(error: Exception, own: tuple[type, ...] = (TableError,)) -> str:
    """An error's message, prefixed by its type unless it is one of dtrain's ``own`` types."""
    return str(error) if isinstance(error, own) else f"{type(error).__name__} {error}".strip()


def malformed(where: str, detail: str) -> CheckpointError:
    """The CheckpointError for a payload whose table or tree does not decode."""
    return CheckpointError(f"{where}: malformed checkpoint payload: {detail}")


def read(f: str | os.PathLike | BinaryIO,
         caller: str = "dtrain.load") -> tuple[str, memoryview, list[np.ndarray]]:
    """(name of the file, msgpack tree, owned arrays) of a checked checkpoint file.

    ``f`` is a path or a readable binary file object. Raises CheckpointError when the file is
    truncated, corrupted, foreign or too new, or when its array table is invalid.
    """
    if isinstance(f, (str, bytes, os.PathLike)):
        where = os.fsdecode(f)
        with open(where, "rb") as fh:
            payload = _read_checked(fh, where, os.fstat(fh.fileno()).st_size)
    elif hasattr(f, "read"):
        where = str(getattr(f, "name", f"<{type(f).__name__}>"))
        payload = _read_checked(f, where, None)
    else:
        raise TypeError(f"{caller}: f must be a path or a readable binary file object, "
                        f"got {type(f).__name__}")
    try:
        tree, arrays = _split(payload)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        raise malformed(where, describe(e)) from None
    return where, tree, arrays
