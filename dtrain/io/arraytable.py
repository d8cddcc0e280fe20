"""Array tables: arrays described in msgpack, their bytes beside it; one codec for wire and files.

A table lets a msgpack header describe arrays whose bytes travel outside it, so they are written
straight from the arrays' memory and read back without parsing. Each entry describes one array
(name, dtype, shape) and where its bytes are, in one of two layouts:

- *frames* (the wire, ``dtrain.distributed.protocol``): ``[name, dtype, shape, nframes]``, the
  bytes in the next ``nframes`` payloads (ZeroMQ frames). An array in one payload is read as a
  zero-copy, read-only view of it; one split over several is joined into one buffer.
- *packed* (checkpoint files, ``dtrain.io.container``): ``[dtype, shape, offset, nbytes]``, the
  bytes at ``offset`` in one buffer, each array on an ``ALIGN`` boundary after the previous one;
  arrays are named by their position.

A dtype allow-list (``NamedDtypes``, ``NumericDtypes``) says which dtypes a reader accepts and
how a table spells them: the wire's names (``'float32'``, always little-endian) or the files'
byte-order strings (``'<f4'``). Decoding checks every entry (its form, name, dtype, shape, byte
count and the reader's limits) before building its array; a ``TableError`` carries a ``reason``
slug from ``REASONS`` and a message naming the array.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np

__all__ = ["ALIGN", "MAX_NDIM", "NUMERIC", "REASONS", "NamedDtypes", "NumericDtypes",
           "TableError", "aligned_offsets", "decode_frames", "decode_packed", "dtype_name",
           "encode_frames", "encode_packed", "named_dtypes", "parse_dtype"]

ALIGN = 64  # packed arrays start on multiples of this, so readers can map them in place
MAX_NDIM = 64  # NumPy 2's limit; a reader may ask for fewer (the wire: NumPy 1's 32)
MAX_EXTENT = 2**62  # bound on the product of an array's dims (zeros counted as 1)

REASONS = {
    "arrays": "the table is not a list of entries of its layout's form",
    "names": "an array name is missing, not a non-empty string, or repeated",
    "dtype": "an array's dtype is not on the reader's allow-list",
    "shape": "an array's shape is not a list of non-negative ints within the limits",
    "size": "the arrays declared need more bytes than the reader accepts",
    "frames": "the entries do not account for exactly the payloads given",
    "offset": "an array starts before the end of the previous one",
    "length": "an array's bytes are not shape * itemsize, or lie outside the buffer",
}


class TableError(ValueError):
    """A table that does not describe valid arrays in its payloads: ``reason`` is a slug from
    REASONS, ``str(e)`` the detail, naming the array."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _label(key: str | int) -> str:
    """How messages name an array: by its name on the wire (``'w'``), by position in a file."""
    return repr(key) if type(key) is str else str(key)


def _short(value: object, limit: int = 60) -> str:
    """repr of an untrusted value, cut to ``limit`` characters so a message stays readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- dtypes
def dtype_name(dtype: np.dtype) -> str:
    """The files' name for a numeric or bool dtype (byte order included); TypeError otherwise."""
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(f"arrays of dtype {dtype} are not supported (numeric or bool only)")
    return dtype.str


_BYTE_ORDER_NAME = re.compile(r"[<>|][biufc][0-9]{1,2}")


def parse_dtype(text) -> np.dtype:
    """The dtype a file names; TableError for anything but a plain numeric or bool dtype."""
    dtype = NUMERIC.parse(text)
    if dtype is None:
        raise TableError("dtype", f"invalid dtype {_short(text)}")
    return dtype


class NumericDtypes:
    """Any numeric or bool dtype, spelled with its byte order (``'<f4'``, ``'|b1'``): the files'.

    Arrays are stored in their own byte order, so a file reads back exactly what was saved.
    """

    allowed = "numeric or bool dtypes spelled like '<f4'"

    @staticmethod
    def stored(array: np.ndarray) -> np.ndarray:
        """The array as is: files keep its byte order."""
        return array

    spell = staticmethod(dtype_name)

    @staticmethod
    def parse(text) -> np.dtype | None:
        """The dtype ``text`` names, or None when it is not one of these."""
        if type(text) is not str or not _BYTE_ORDER_NAME.fullmatch(text):
            return None
        try:
            return np.dtype(text)
        except TypeError:
            return None


NUMERIC = NumericDtypes()


@lru_cache(maxsize=64)
def _plain_name(dtype: np.dtype) -> str:
    return dtype.name  # numpy builds this string in Python on every access: slow in a hot loop


class NamedDtypes:
    """The listed dtypes by name (``'float32'``), always little-endian: the wire's allow-list.

    Writing spells any numeric or bool dtype (the receiver chooses what it accepts); reading
    accepts only the listed names.
    """

    def __init__(self, names: Sequence[str]):
        self.by_name = {name: np.dtype(name).newbyteorder("<") for name in names}
        self.allowed = ", ".join(self.by_name)

    @staticmethod
    def stored(array: np.ndarray) -> np.ndarray:
        """The array in little-endian byte order (copied only when it is not already)."""
        order = array.dtype.byteorder
        if order == ">" or (order == "=" and sys.byteorder == "big"):
            return array.astype(array.dtype.newbyteorder("<"))
        return array

    spell = staticmethod(_plain_name)

    def parse(self, text) -> np.dtype | None:
        """The dtype ``text`` names, or None when it is not on the list."""
        return self.by_name.get(text) if type(text) is str else None


@lru_cache(maxsize=16)
def named_dtypes(names: tuple[str, ...]) -> NamedDtypes:
    """The allow-list of these dtype names (cached: a receiver passes the same list each time)."""
    return NamedDtypes(names)


# ---------------------------------------------------------------------------- encoding
def _raw_bytes(a: np.ndarray) -> memoryview:
    """A flat byte memoryview of a C-contiguous array (no copy)."""
    try:
        return memoryview(a).cast("B")
    except (TypeError, ValueError, NotImplementedError):  # empty shapes, formats memoryview lacks
        return memoryview(a.reshape(-1).view(np.uint8))


def _payload(key: str | int, array, dtypes) -> tuple[str, list, memoryview]:
    """(spelled dtype, shape, the bytes as the table stores them): C order, no copy when the
    array already is in the stored byte order and contiguous. TypeError for other dtypes."""
    a = array if type(array) is np.ndarray else np.asarray(array)
    dtype = a.dtype
    if dtype.kind not in "biufc" or dtype.fields is not None:  # an array's is no subarray
        raise TypeError(f"array {_label(key)} has dtype {dtype}, which an array table cannot hold "
                        "(numeric or bool only)")
    a = dtypes.stored(a)
    if not a.flags.c_contiguous:
        a = a.copy(order="C")
    return dtypes.spell(a.dtype), list(a.shape), _raw_bytes(a)


def aligned_offsets(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Offsets of consecutive byte runs of these sizes, each on an ``ALIGN`` boundary, and the
    end of the last one."""
    offsets, end = [], 0
    for nbytes in sizes:
        offset = -(-end // ALIGN) * ALIGN
        offsets.append(offset)
        end = offset + nbytes
    return offsets, end


def encode_packed(arrays: Sequence[np.ndarray]) -> tuple[list[list], list[memoryview], int]:
    """The packed table, the flat byte buffers (no copy when possible) and the total size.

    Entry ``i`` places buffer ``i`` at its offset, a multiple of ``ALIGN``; the bytes between
    buffers are zero padding. Raises TypeError for arrays that are not numeric or bool.
    """
    described = [_payload(i, a, NUMERIC) for i, a in enumerate(arrays)]
    buffers = [raw for _, _, raw in described]
    offsets, size = aligned_offsets([raw.nbytes for raw in buffers])
    table = [[spelled, shape, offset, raw.nbytes]
             for (spelled, shape, raw), offset in zip(described, offsets)]
    return table, buffers, size


def encode_frames(arrays: Mapping[str, np.ndarray], max_frame_bytes: int
                  ) -> tuple[list[list], list[memoryview]]:
    """The frames table and the payloads: memoryviews of the arrays' own bytes, no copies
    (only big-endian or non-contiguous arrays are converted first).

    Dtypes are spelled by name, little-endian (``NamedDtypes``). An array larger than
    ``max_frame_bytes`` is spread over consecutive payloads. Raises TypeError, naming the
    array, for arrays that are not numeric or bool.
    """
    table: list[list] = []
    payloads: list[memoryview] = []
    for name, array in arrays.items():
        # the class itself spells: ``stored`` and ``spell`` need no allow-list
        spelled, shape, raw = _payload(name, array, NamedDtypes)
        nbytes = raw.nbytes
        if nbytes <= max_frame_bytes:
            table.append([name, spelled, shape, 1])
            payloads.append(raw)
        else:
            table.append([name, spelled, shape, -(-nbytes // max_frame_bytes)])
            payloads.extend(raw[i : i + max_frame_bytes]
                            for i in range(0, nbytes, max_frame_bytes))
    return table, payloads


# ---------------------------------------------------------------------------- decoding
def _check_table(table) -> None:
    if type(table) is not list:
        raise TableError("arrays", f"array table must be a list, got {_short(table)}")


def _bad_form(i: int, entry, form: str) -> TableError:
    return TableError("arrays", f"array entry {i} is {_short(entry)}, not {form}")


def _count(key: str | int, shape, max_ndim: int) -> int:
    """The element count of a well-formed shape: a list of at most ``max_ndim`` ints >= 0."""
    count = extent = 1
    if type(shape) is list and len(shape) <= max_ndim:
        for d in shape:
            if type(d) is not int or d < 0:
                break
            count *= d
            extent *= d or 1  # bounds the dims numpy multiplies even when one of them is 0
        else:
            if extent <= MAX_EXTENT:
                return count
    raise TableError("shape", f"array {_label(key)} has shape {_short(shape)}; need at most "
                              f"{max_ndim} non-negative int dims of reasonable size")


def _describe(key: str | int, spelled, shape, dtypes, max_ndim: int) -> tuple[np.dtype, int]:
    """(dtype, byte count) of a described array, its dtype and shape checked."""
    dtype = dtypes.parse(spelled)
    if dtype is None:
        raise TableError("dtype", f"array {_label(key)} has dtype {_short(spelled)}; "
                                  f"allowed: {dtypes.allowed}")
    return dtype, _count(key, shape, max_ndim) * dtype.itemsize


def _wrong_length(key: str | int, dtype: np.dtype, shape, need: int, got, where: str) -> TableError:
    return TableError("length", f"array {_label(key)} ({dtype.name} {tuple(shape)}) needs {need} "
                                f"bytes, {where} {_short(got)}")


def _join(name: str, dtype, shape, parts: list, allocate: Callable | None) -> np.ndarray:
    """An array split over several payloads, copied into one buffer from ``allocate(name,
    dtype, shape)`` or a fresh one; read-only like the zero-copy views."""
    buf = allocate(name, dtype, shape) if allocate is not None else np.empty(shape, dtype)
    flat = buf.reshape(-1).view(np.uint8)
    offset = 0
    for part in parts:
        flat[offset : offset + part.nbytes] = np.frombuffer(part, dtype=np.uint8)
        offset += part.nbytes
    array = buf.view()
    array.flags.writeable = False
    return array


def decode_frames(table, payloads: Sequence[memoryview], dtypes: NamedDtypes, *,
                  max_bytes: int | None = None, max_ndim: int = MAX_NDIM,
                  allocate: Callable | None = None) -> dict[str, np.ndarray]:
    """The named arrays a frames table describes in ``payloads`` (flat byte memoryviews).

    Every entry is checked before anything is allocated for it: form, name (non-empty, unique),
    dtype (on ``dtypes``), shape, the bytes of its frames, and the running total of declared
    bytes against ``max_bytes``; all payloads must be accounted for. An array in one payload is
    a zero-copy read-only view of it; a split one is joined (see ``_join``).
    """
    _check_table(table)
    arrays: dict[str, np.ndarray] = {}
    declared, k, n = 0, 0, len(payloads)
    for i, entry in enumerate(table):
        if type(entry) is not list or len(entry) != 4:
            raise _bad_form(i, entry, "[name, dtype, shape, nframes]")
        name, spelled, shape, nframes = entry
        if type(name) is not str or not name:
            raise TableError("names", f"array {i} is named {_short(name)}; need a non-empty str")
        if name in arrays:
            raise TableError("names", f"array name {name!r} appears twice")
        dtype, nbytes = _describe(name, spelled, shape, dtypes, max_ndim)
        declared += nbytes
        if max_bytes is not None and declared > max_bytes:
            raise TableError("size", f"arrays up to {name!r} need {declared} bytes, over the "
                                     f"{max_bytes} limit")
        if type(nframes) is not int or not 1 <= nframes <= n - k:
            raise TableError("frames", f"array {name!r} declares {_short(nframes)} frames, "
                                       f"{n - k} frames remain")
        parts = payloads[k : k + nframes]
        got = parts[0].nbytes if nframes == 1 else sum(p.nbytes for p in parts)
        if got != nbytes:
            raise _wrong_length(name, dtype, shape, nbytes, got, f"its {nframes} frame(s) hold")
        if nframes == 1:  # a read-only buffer gives a read-only array: no flag to set
            arrays[name] = np.ndarray(shape, dtype, parts[0].toreadonly())
        else:
            arrays[name] = _join(name, dtype, shape, parts, allocate)
        k += nframes
    if k != n:
        raise TableError("frames", f"header declares {k} array frames, the message has {n}")
    return arrays


def decode_packed(table, buffer, start: int = 0, *, copy: bool = True) -> list[np.ndarray]:
    """The arrays a packed table describes inside ``buffer`` (offsets count from ``start``).

    Every entry is checked (form, dtype, shape, byte count, increasing offsets, within the
    buffer) before its array is built. ``copy=True`` gives owned, writable arrays;
    ``copy=False`` read-only views of the buffer.
    """
    _check_table(table)
    view = memoryview(buffer).cast("B")
    arrays, end = [], 0
    for i, entry in enumerate(table):
        if type(entry) is not list or len(entry) != 4:
            raise _bad_form(i, entry, "[dtype, shape, offset, nbytes]")
        spelled, shape, offset, nbytes = entry
        dtype, need = _describe(i, spelled, shape, NUMERIC, MAX_NDIM)
        if type(offset) is not int or offset < end:
            raise TableError("offset", f"array {i} has offset {_short(offset)}; need an int "
                                       f">= {end}, where the previous array ends")
        if type(nbytes) is not int or nbytes != need:
            raise _wrong_length(i, dtype, shape, need, nbytes, "its entry declares")
        first = start + offset
        end = offset + nbytes
        if first + nbytes > len(view):
            raise TableError("length", f"array {i} extends past the end of the payload")
        raw = np.frombuffer(view, np.uint8, nbytes, first)
        if copy:
            array = np.empty(shape, dtype)
            array.reshape(-1).view(np.uint8)[:] = raw
        else:
            array = raw.view(dtype).reshape(shape)
            array.flags.writeable = False
        arrays.append(array)
    return arrays
