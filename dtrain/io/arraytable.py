"""Array tables: raw array buffers described by ``[dtype, shape, offset, nbytes]`` entries.

An array table lets a msgpack header describe arrays whose bytes travel outside it (after a
checkpoint's tree, or in later frames), so the bytes are written straight from the arrays'
memory and read back without parsing. ``encode_arrays`` lays out a list of arrays;
``decode_arrays`` checks every entry against the buffer before building anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["ALIGN", "TableError", "decode_arrays", "dtype_name", "encode_arrays", "parse_dtype"]

ALIGN = 64  # every buffer starts on a multiple of this, so readers can map arrays in place
MAX_NDIM = 64
_DTYPE_RE = re.compile(r"[<>|][biufc][0-9]{1,2}")


class TableError(ValueError):
    """An array table that does not describe valid arrays inside its buffer."""


def dtype_name(dtype: np.dtype) -> str:
    """The table's name for a numeric or bool dtype (byte order included); TypeError otherwise."""
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(f"arrays of dtype {dtype} are not supported (numeric or bool only)")
    return dtype.str


def parse_dtype(text) -> np.dtype:
    """The dtype a table names; TableError for anything but a plain numeric or bool dtype."""
    if not isinstance(text, str) or not _DTYPE_RE.fullmatch(text):
        raise TableError(f"invalid dtype {text!r}")
    try:
        return np.dtype(text)
    except TypeError as e:
        raise TableError(f"invalid dtype {text!r}") from e


def encode_arrays(arrays: Sequence[np.ndarray]) -> tuple[list[list], list[np.ndarray], int]:
    """The table, the flat uint8 buffers (C order, no copy when possible) and the total size.

    Entry ``i`` places buffer ``i`` at its offset, a multiple of ``ALIGN``; the bytes between
    buffers are zero padding. Raises TypeError for arrays that are not numeric or bool.
    """
    table, buffers, size = [], [], 0
    for a in arrays:
        name = dtype_name(a.dtype)
        flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        offset = -(-size // ALIGN) * ALIGN
        table.append([name, list(a.shape), offset, flat.nbytes])
        buffers.append(flat)
        size = offset + flat.nbytes
    return table, buffers, size


def _check_entry(i: int, entry, end: int) -> tuple[np.dtype, list, int, int]:
    if not (isinstance(entry, list) and len(entry) == 4):
        raise TableError(f"array table entry {i} is not [dtype, shape, offset, nbytes]")
    dtype = parse_dtype(entry[0])
    shape, offset, nbytes = entry[1:]
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise TableError(f"array table entry {i} has an invalid shape {shape!r}")
    if type(offset) is not int or type(nbytes) is not int or offset < end:
        raise TableError(f"array table entry {i} has an invalid offset")
    count = 1
    for n in shape:
        count *= n
    if nbytes != count * dtype.itemsize:
        raise TableError(f"array table entry {i}: {nbytes} bytes do not hold shape "
                         f"{tuple(shape)} of {dtype}")
    return dtype, shape, offset, nbytes


def decode_arrays(table, buffer, start: int = 0, *, copy: bool = True) -> list[np.ndarray]:
    """The arrays a table describes inside ``buffer`` (offsets count from ``start``).

    Every entry is checked (dtype, shape, size, increasing offsets, within the buffer) before
    its array is built. ``copy=True`` gives owned, writable arrays; ``copy=False`` read-only
    views of the buffer. Raises TableError naming the first bad entry.
    """
    if not isinstance(table, list):
        raise TableError("array table is not a list")
    view = memoryview(buffer).cast("B")
    arrays, end = [], 0
    for i, entry in enumerate(table):
        dtype, shape, offset, nbytes = _check_entry(i, entry, end)
        first = start + offset
        end = offset + nbytes
        if first + nbytes > len(view):
            raise TableError(f"array {i} extends past the end of the payload")
        raw = np.frombuffer(view, np.uint8, nbytes, first)
        if copy:
            array = np.empty(shape, dtype)
            array.reshape(-1).view(np.uint8)[:] = raw
        else:
            array = raw.view(dtype).reshape(shape)
            array.flags.writeable = False
        arrays.append(array)
    return arrays
