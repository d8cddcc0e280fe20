"""Checkpoints without pickle: ``save``/``load`` for nested state, ``save_model``/``load_model``.

Loading a checkpoint never executes code stored in it: the payload is msgpack, whose only
non-plain values are a fixed set of extension types (arrays, tensors, tuples, big ints, NumPy
scalars and dtypes, complex numbers); anything else is refused. Array bytes are not inside the
msgpack tree but follow it, so saving writes each array's memory straight to the file.

File layout (little-endian)::

    header (64 bytes)  magic b"DTRAINCK" | u32 format version | u32 flags (0) | u64 payload length
                       | 32-byte BLAKE2b digest | 8 reserved zero bytes
    payload            u64 table length | u64 tree length
                       | table: msgpack list of [dtype, shape, offset, nbytes], one per array
                       | tree: msgpack of the object | zero padding to 64 bytes
                       | the array buffers, each starting on a 64-byte boundary

The digest covers the header (all but the digest itself) and the payload, so a flipped byte
anywhere is reported instead of loaded. Saving to a path is atomic: the bytes go to a temporary
file in the same directory, which is flushed, fsynced and renamed over the target.

``save_model`` stores a model as its class's import path, the arguments of its ``__init__`` call
(recorded by ``Module``; nested Modules encoded the same way), its ``state_dict`` and its mode
flags. Trust model: ``load_model`` imports the module named in the file and calls the class's
``__init__``, as ``torch.load`` of a whole model would; it refuses classes that are not
``dtrain.nn.Module`` subclasses and runs no code carried in the file's data.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import secrets
import struct
from typing import BinaryIO

import msgpack
import numpy as np

from . import random as _random
from .autograd.device import device as _Device
from .autograd.dtypes import dtype as _DType
from .autograd.tensor import Tensor

__all__ = ["CheckpointError", "load", "load_model", "save", "save_model"]

MAGIC = b"DTRAINCK"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQ32s8x")  # magic, version, flags, payload length, digest
_DIGEST_AT = 24  # byte offset of the digest field in the header
_SIZES = struct.Struct("<QQ")  # table length, tree length
_ALIGN = 64
_READ_CHUNK = 1 << 24

# Extension type codes; any other code in a file is refused.
_EXT_ARRAY = 1
_EXT_TENSOR = 2
_EXT_TUPLE = 3
_EXT_BIGINT = 4
_EXT_NPSCALAR = 5
_EXT_DTYPE = 6
_EXT_SCALARTYPE = 7
_EXT_COMPLEX = 8

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack's integer formats hold
_MAX_BIGINT_BYTES = 1 << 16
# Extension values nest by unpacking their data from inside a hook; each level costs C stack
# (msgpack keeps a 32 KiB parse stack per call), so the depth is capped well below a crash.
_MAX_EXT_DEPTH = 32
_DTYPE_RE = re.compile(r"[<>|][biufc][0-9]{1,2}")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

_SUPPORTED = ("dict (str/int keys), list, tuple, str, bytes, int, float, complex, bool, None, "
              "numpy arrays (numeric/bool), numpy scalars and dtypes, dtrain Tensors")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded: truncated, corrupted, foreign or too new."""


def _new_digest(header: bytes):
    """A BLAKE2b hasher fed with the header, its digest field zeroed; the payload follows."""
    start, end = _DIGEST_AT, _DIGEST_AT + 32
    return hashlib.blake2b(header[:start] + bytes(32) + header[end:], digest_size=32)


# ----------------------------------------------------------------------------------- encoding
class _Unsupported(TypeError):
    """A value save cannot store; carries the key path (innermost last) for the message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _dtype_str(dtype: np.dtype) -> str:
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise _Unsupported(f"arrays of dtype {dtype} are not supported (numeric or bool only)")
    return dtype.str


class _Encoder:
    """Turns an object into msgpack-native values plus a table of array buffers."""

    def __init__(self):
        self.table: list[list] = []
        self.buffers: list[np.ndarray] = []
        self.size = 0
        self.memo: dict[int, msgpack.ExtType] = {}  # id -> ext, so shared arrays/tensors stay shared
        self.keep: list = []  # holds memoized objects so their ids are not reused
        self.active: set[int] = set()  # containers being encoded, to catch cycles
        self.tensor_count = 0
        self.tuple_depth = 0

    def encode(self, obj):
        t = type(obj)
        if obj is None or t is bool or t is str or t is bytes or t is float:
            return obj
        if t is int:
            return obj if _INT_MIN <= obj <= _INT_MAX else self._bigint(obj)
        if isinstance(obj, dict):
            return self._nested(obj, self._dict)
        if isinstance(obj, list):
            return self._nested(obj, lambda seq: self._items(seq))
        if isinstance(obj, tuple):
            return self._nested(obj, self._tuple)
        if isinstance(obj, Tensor):
            return self._memoized(obj, self._tensor)
        if isinstance(obj, np.ndarray):
            return self._memoized(obj, lambda a: msgpack.ExtType(_EXT_ARRAY, _pack(self._array(a))))
        if isinstance(obj, np.generic):
            raw = np.asarray(obj).tobytes()
            return msgpack.ExtType(_EXT_NPSCALAR, _pack([_dtype_str(obj.dtype), raw]))
        if isinstance(obj, np.dtype):
            return msgpack.ExtType(_EXT_DTYPE, _pack(_dtype_str(obj)))
        if isinstance(obj, type) and issubclass(obj, np.generic):
            return msgpack.ExtType(_EXT_SCALARTYPE, _pack(_dtype_str(np.dtype(obj))))
        if t is complex:
            return msgpack.ExtType(_EXT_COMPLEX, _pack([obj.real, obj.imag]))
        if isinstance(obj, _Device):  # torch-style device objects are stored by name ('cpu')
            return str(obj)
        if isinstance(obj, _DType):  # dtrain.float32 and friends are stored as NumPy dtypes
            return self.encode(obj.dtype)
        raise _Unsupported(f"objects of type {t.__module__}.{t.__qualname__} are not supported "
                           f"(supported: {_SUPPORTED})")

    def _nested(self, obj, encode_fn):
        key = id(obj)
        if key in self.active:
            raise _Unsupported("the object contains itself (a reference cycle)")
        self.active.add(key)
        try:
            return encode_fn(obj)
        finally:
            self.active.discard(key)

    def _items(self, seq) -> list:
        out = []
        for i, item in enumerate(seq):
            try:
                out.append(self.encode(item))
            except _Unsupported as e:
                e.path.append(f"[{i}]")
                raise
        return out

    def _tuple(self, seq: tuple) -> msgpack.ExtType:
        if self.tuple_depth >= _MAX_EXT_DEPTH - 1:
            raise _Unsupported(f"tuples nested more than {_MAX_EXT_DEPTH - 1} deep")
        self.tuple_depth += 1
        try:
            return msgpack.ExtType(_EXT_TUPLE, _pack(self._items(seq)))
        finally:
            self.tuple_depth -= 1

    def _dict(self, d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if type(k) not in (str, int, bool):
                raise _Unsupported(f"dict key {k!r} of type {type(k).__name__} is not supported "
                                   "(str and int keys only)")
            try:
                out[self.encode(k)] = self.encode(v)
            except _Unsupported as e:
                e.path.append(f"[{k!r}]")
                raise
        return out

    def _memoized(self, obj, encode_fn):
        ext = self.memo.get(id(obj))
        if ext is None:
            ext = encode_fn(obj)
            self.memo[id(obj)] = ext
            self.keep.append(obj)
        return ext

    def _array(self, a: np.ndarray) -> int:
        """Register an array's bytes as a buffer; returns its table index."""
        dtype = _dtype_str(a.dtype)
        if not a.flags.c_contiguous:
            a = a.copy(order="C")
        flat = a.reshape(-1).view(np.uint8)
        offset = -(-self.size // _ALIGN) * _ALIGN
        self.table.append([dtype, list(a.shape), offset, flat.nbytes])
        self.buffers.append(flat)
        self.size = offset + flat.nbytes
        return len(self.table) - 1

    def _tensor(self, t: Tensor) -> msgpack.ExtType:
        from .nn.parameter import Parameter

        kind = "parameter" if isinstance(t, Parameter) else "tensor"
        index = self._array(t._data)
        self.tensor_count += 1
        return msgpack.ExtType(_EXT_TENSOR, _pack([self.tensor_count - 1, index,
                                                    t.requires_grad, kind]))

    def _bigint(self, n: int) -> msgpack.ExtType:
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        if len(raw) > _MAX_BIGINT_BYTES:
            raise _Unsupported(f"integer with {n.bit_length()} bits is too large "
                               f"(limit {8 * _MAX_BIGINT_BYTES} bits)")
        return msgpack.ExtType(_EXT_BIGINT, raw)


def _serialize(obj) -> list:
    """The file's bytes as a list of chunks (header first); raises TypeError for bad values."""
    encoder = _Encoder()
    try:
        tree = encoder.encode(obj)
        table_bytes, tree_bytes = _pack(encoder.table), _pack(tree)
    except _Unsupported as e:
        where = "obj" + "".join(reversed(e.path))
        raise TypeError(f"dtrain.save: cannot save {where}: {e.reason}") from None
    except (RecursionError, ValueError) as e:  # nesting too deep, strings that are not UTF-8
        raise TypeError(f"dtrain.save: cannot save obj: {type(e).__name__}: {e}") from None
    head = _SIZES.pack(len(table_bytes), len(tree_bytes))
    body_len = len(head) + len(table_bytes) + len(tree_bytes)
    chunks: list = [head, table_bytes, tree_bytes, bytes(-body_len % _ALIGN)]
    position = 0
    for entry, buffer in zip(encoder.table, encoder.buffers):
        chunks.append(bytes(entry[2] - position))
        chunks.append(buffer)
        position = entry[2] + buffer.nbytes
    payload_len = sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks)
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


def _atomic_write(path: str, chunks: list) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.dtrain.tmp")
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


def save(obj, f: str | os.PathLike | BinaryIO) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of arrays, Tensors, numbers, ...) to ``f``.

    ``f`` is a path (written atomically: the old file survives any failure) or a writable
    binary file object (atomicity is then the caller's). Unsupported values raise TypeError
    naming where they are, before anything is written.
    """
    chunks = _serialize(obj)
    if isinstance(f, (str, bytes, os.PathLike)):
        _atomic_write(os.fsdecode(f), chunks)
    elif hasattr(f, "write"):
        for chunk in chunks:
            f.write(chunk)
    else:
        raise TypeError(f"dtrain.save: f must be a path or a writable binary file object, "
                        f"got {type(f).__name__}")


# ----------------------------------------------------------------------------------- decoding
class _Malformed(Exception):
    """Internal: the payload's structure is invalid (reported as CheckpointError)."""


def _check_dtype(text) -> np.dtype:
    if not isinstance(text, str) or not _DTYPE_RE.fullmatch(text):
        raise _Malformed(f"invalid dtype {text!r}")
    try:
        return np.dtype(text)
    except TypeError as e:
        raise _Malformed(f"invalid dtype {text!r}") from e


def _arrays_from_table(table, payload: memoryview, data_start: int) -> list[np.ndarray]:
    """Owned, writable copies of every buffer in the table, after checking every entry."""
    if not isinstance(table, list):
        raise _Malformed("array table is not a list")
    arrays, end = [], 0
    for i, entry in enumerate(table):
        if not (isinstance(entry, list) and len(entry) == 4):
            raise _Malformed(f"array table entry {i} is not [dtype, shape, offset, nbytes]")
        dtype = _check_dtype(entry[0])
        shape, offset, nbytes = entry[1:]
        if (not isinstance(shape, list) or len(shape) > 64
                or not all(type(n) is int and n >= 0 for n in shape)):
            raise _Malformed(f"array table entry {i} has an invalid shape {shape!r}")
        if type(offset) is not int or type(nbytes) is not int or offset < end:
            raise _Malformed(f"array table entry {i} has an invalid offset")
        count = 1
        for n in shape:
            count *= n
        if nbytes != count * dtype.itemsize:
            raise _Malformed(f"array table entry {i}: {nbytes} bytes do not hold shape "
                             f"{tuple(shape)} of {dtype}")
        start = data_start + offset
        end = offset + nbytes
        if start + nbytes > len(payload):
            raise _Malformed(f"array {i} extends past the end of the payload")
        array = np.empty(shape, dtype)
        array.reshape(-1).view(np.uint8)[:] = np.frombuffer(payload, np.uint8, nbytes, start)
        arrays.append(array)
    return arrays


class _Decoder:
    """msgpack hooks that rebuild the extension types and refuse everything else."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.tensors: dict[int, Tensor] = {}
        self.depth = 0

    def unpack(self, data):
        if self.depth >= _MAX_EXT_DEPTH:
            raise _Malformed(f"values nested more than {_MAX_EXT_DEPTH} extension levels deep")
        self.depth += 1
        try:
            return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False,
                                   ext_hook=self.ext_hook, list_hook=self.list_hook,
                                   object_pairs_hook=self.pairs_hook)
        finally:
            self.depth -= 1

    def list_hook(self, items: list) -> list:
        for item in items:
            if isinstance(item, msgpack.Timestamp):  # decoded by msgpack without ext_hook
                raise _Malformed("unknown extension type -1 (msgpack timestamp)")
        return items

    def pairs_hook(self, pairs: list) -> dict:
        out = {}
        for key, value in pairs:
            if type(key) not in (str, int, bool):
                raise _Malformed(f"dict key of type {type(key).__name__} (str or int expected)")
            if isinstance(value, msgpack.Timestamp):
                raise _Malformed("unknown extension type -1 (msgpack timestamp)")
            if key in out:
                raise _Malformed(f"duplicate dict key {key!r}")
            out[key] = value
        return out

    def ext_hook(self, code: int, data: bytes):
        if code == _EXT_ARRAY:
            return self._array(self.unpack(data))
        if code == _EXT_TENSOR:
            return self._tensor(self.unpack(data))
        if code == _EXT_TUPLE:
            items = self.unpack(data)
            if not isinstance(items, list):
                raise _Malformed("tuple payload is not a list")
            return tuple(items)
        if code == _EXT_BIGINT:
            if not data or len(data) > _MAX_BIGINT_BYTES:
                raise _Malformed(f"integer of {len(data)} bytes")
            return int.from_bytes(data, "little", signed=True)
        if code == _EXT_NPSCALAR:
            value = self.unpack(data)
            if not (isinstance(value, list) and len(value) == 2 and type(value[1]) is bytes):
                raise _Malformed("numpy scalar payload is not [dtype, bytes]")
            dtype = _check_dtype(value[0])
            if len(value[1]) != dtype.itemsize:
                raise _Malformed(f"numpy scalar of {dtype} with {len(value[1])} bytes")
            return np.frombuffer(value[1], dtype)[0]
        if code == _EXT_DTYPE:
            return _check_dtype(self.unpack(data))
        if code == _EXT_SCALARTYPE:
            return _check_dtype(self.unpack(data)).type
        if code == _EXT_COMPLEX:
            value = self.unpack(data)
            if not (isinstance(value, list) and len(value) == 2
                    and all(type(v) is float for v in value)):
                raise _Malformed("complex payload is not [real, imag]")
            return complex(*value)
        raise _Malformed(f"unknown extension type {code}")

    def _array(self, index) -> np.ndarray:
        if type(index) is not int or not 0 <= index < len(self.arrays):
            raise _Malformed(f"array reference {index!r} is not in the array table")
        return self.arrays[index]

    def _tensor(self, value) -> Tensor:
        if not (isinstance(value, list) and len(value) == 4 and type(value[0]) is int
                and type(value[2]) is bool and value[3] in ("tensor", "parameter")):
            raise _Malformed("tensor payload is not [id, array, requires_grad, kind]")
        tensor_id, index, requires_grad, kind = value
        if tensor_id in self.tensors:
            return self.tensors[tensor_id]
        array = self._array(index)
        if requires_grad and array.dtype.kind not in "fc":
            raise _Malformed(f"tensor of dtype {array.dtype} marked requires_grad")
        if kind == "parameter":
            from .nn.parameter import Parameter

            tensor = Parameter(array, requires_grad=requires_grad)
        else:
            tensor = Tensor._wrap(array, requires_grad=requires_grad)
        self.tensors[tensor_id] = tensor
        return tensor


def _decode(payload: bytearray):
    view = memoryview(payload)
    if len(payload) < _SIZES.size:
        raise _Malformed("payload shorter than its size fields")
    table_len, tree_len = _SIZES.unpack_from(payload)
    table_end = _SIZES.size + table_len
    tree_end = table_end + tree_len
    if tree_end > len(payload):
        raise _Malformed("table and tree lengths exceed the payload")
    table = msgpack.unpackb(view[_SIZES.size:table_end], raw=False, use_list=True)
    arrays = _arrays_from_table(table, view, -(-tree_end // _ALIGN) * _ALIGN)
    return _Decoder(arrays).unpack(view[table_end:tree_end])


def _read_payload(f, length: int, where: str, available: int | None) -> bytearray:
    if available is not None and available < length:
        raise CheckpointError(f"{where}: file is truncated: the header declares {length} payload "
                              f"bytes but only {available} follow")
    buffer = bytearray(length) if available is not None else bytearray()
    if available is not None:
        view, got = memoryview(buffer), 0
        while got < length:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
    else:
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


def _read(f, where: str, file_size: int | None):
    header = f.read(_HEADER.size)
    if not header:
        raise CheckpointError(f"{where}: empty file, not a dtrain checkpoint")
    if not header.startswith(MAGIC):
        if MAGIC.startswith(header):
            raise CheckpointError(f"{where}: file is truncated inside the header")
        raise CheckpointError(f"{where}: not a dtrain checkpoint (wrong magic bytes "
                              f"{header[:8]!r}, expected {MAGIC!r})")
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
    try:
        return _decode(payload)
    except (_Malformed, ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        detail = str(e) if isinstance(e, _Malformed) else f"{type(e).__name__} {e}".strip()
        raise CheckpointError(f"{where}: malformed checkpoint payload: {detail}") from None


def load(f: str | os.PathLike | BinaryIO):
    """Read an object written by ``save`` from a path or a readable binary file object.

    Arrays come back as owned, writable copies; Tensors as leaf Tensors (Parameters as
    Parameters) with ``requires_grad`` kept; tuples as tuples; dict key types and order kept.
    A truncated, corrupted, foreign or too-new file raises ``CheckpointError``.
    """
    if isinstance(f, (str, bytes, os.PathLike)):
        path = os.fsdecode(f)
        with open(path, "rb") as fh:
            return _read(fh, path, os.fstat(fh.fileno()).st_size)
    if hasattr(f, "read"):
        return _read(f, str(getattr(f, "name", f"<{type(f).__name__}>")), None)
    raise TypeError(f"dtrain.load: f must be a path or a readable binary file object, "
                    f"got {type(f).__name__}")


# ------------------------------------------------------------------------------ whole models
_MODEL_FORMAT = "dtrain.model"
_MODEL_VERSION = 1
_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, np.dtype, np.generic,
               np.ndarray, Tensor, _Device, _DType)


def _class_path(cls: type) -> tuple[str, str]:
    """(module, qualname) of a class, checked to resolve back to it so load can import it."""
    module_name, qualname = cls.__module__, cls.__qualname__
    if "<locals>" in qualname:
        raise TypeError(f"dtrain.save_model: class {qualname} is defined inside a function; "
                        "load_model imports classes by name, so define it at module level")
    found = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not cls:
        raise TypeError(f"dtrain.save_model: class {module_name}.{qualname} cannot be found "
                        "again by that name (was it created dynamically or renamed?)")
    return module_name, qualname


class _ArchEncoder:
    """Encodes a module's recorded ``__init__`` arguments as a tagged tree, Modules recursively.

    Tags: ``["module", index, module_name, qualname, args, kwargs]``, ``["ref", index]`` for a
    Module seen before (so shared submodules stay shared), ``["list"|"tuple", items]``,
    ``["dict", [[key, value], ...]]`` and ``["value", v]`` for plain values.
    """

    def __init__(self):
        self.memo: dict[int, int] = {}

    def module(self, m, where: str = "") -> list:
        if id(m) in self.memo:
            return ["ref", self.memo[id(m)]]
        index = self.memo[id(m)] = len(self.memo)
        cls = type(m)
        module_name, qualname = _class_path(cls)
        args = m.__dict__.get("_init_args", ())
        kwargs = m.__dict__.get("_init_kwargs", {})
        where = f"{where} > {qualname}.__init__" if where else f"{qualname}.__init__"
        args_out = [self.value(a, f"{where} argument {i}") for i, a in enumerate(args)]
        kwargs_out = [[k, self.value(v, f"{where} argument {k!r}")] for k, v in kwargs.items()]
        return ["module", index, module_name, qualname, args_out, kwargs_out]

    def value(self, v, where: str) -> list:
        from .nn.module import Module

        if isinstance(v, Module):
            return self.module(v, where)
        if isinstance(v, (list, tuple)):
            tag = "list" if isinstance(v, list) else "tuple"
            return [tag, [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]]
        if isinstance(v, dict):
            items = []
            for k, x in v.items():
                if type(k) not in (str, int, bool):
                    raise TypeError(f"dtrain.save_model: cannot save {where}: dict key {k!r} of "
                                    f"type {type(k).__name__} (str and int keys only)")
                items.append([k, self.value(x, f"{where}[{k!r}]")])
            return ["dict", items]
        if isinstance(v, _LEAF_TYPES) or (isinstance(v, type) and issubclass(v, np.generic)):
            return ["value", v]
        raise TypeError(f"dtrain.save_model: cannot save {where}: {type(v).__qualname__} values "
                        "cannot be stored (numbers, strings, None, bytes, dtypes, arrays, "
                        "Tensors, Modules and lists/tuples/dicts of those can)")


def save_model(model, f: str | os.PathLike | BinaryIO) -> None:
    """Save a whole model, architecture and weights, without pickle (see the module docstring).

    The architecture is the class's import path plus the recorded ``__init__`` arguments, so the
    model must be rebuildable by calling its class again: arguments such as lambdas raise
    TypeError here, naming the argument.
    """
    from .nn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"dtrain.save_model expects a dtrain.nn.Module, got {type(model).__name__}")
    record = {
        "format": _MODEL_FORMAT,
        "version": _MODEL_VERSION,
        "arch": _ArchEncoder().module(model),
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "state_dict": dict(model.state_dict()),
    }
    save(record, f)


def _import_module_class(module_name, qualname, where: str) -> type:
    """Import ``module_name`` and return the Module subclass ``qualname`` in it; refuse others."""
    from .nn.module import Module

    if not (isinstance(module_name, str) and _NAME_RE.fullmatch(module_name)
            and isinstance(qualname, str) and _NAME_RE.fullmatch(qualname)):
        raise CheckpointError(f"{where}: invalid class path {module_name!r}, {qualname!r}")
    try:
        found = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(f"{where}: cannot import module {module_name!r} that defines "
                              f"{qualname}: {e}") from e
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if not (isinstance(found, type) and issubclass(found, Module)):
        raise CheckpointError(f"{where}: {module_name}.{qualname} is not a dtrain.nn.Module "
                              "subclass; load_model only constructs Modules")
    return found


class _ArchDecoder:
    """Rebuilds modules from the tagged tree written by ``_ArchEncoder``."""

    def __init__(self, where: str):
        self.where = where
        self.built: dict[int, object] = {}

    def bad(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: malformed model architecture: {what}")

    def value(self, node):
        if not (isinstance(node, list) and node and node[0] in
                ("module", "ref", "list", "tuple", "dict", "value")):
            raise self.bad(f"unexpected node {node!r:.80}")
        tag = node[0]
        if tag == "module":
            return self.module(node)
        if len(node) != 2:
            raise self.bad(f"{tag} node of length {len(node)}")
        if tag == "ref":
            if node[1] not in self.built:
                raise self.bad(f"reference to unknown module {node[1]!r}")
            return self.built[node[1]]
        if tag == "value":
            return node[1]
        if tag == "dict":
            if not isinstance(node[1], list) or not all(
                    isinstance(kv, list) and len(kv) == 2 for kv in node[1]):
                raise self.bad("dict node is not a list of pairs")
            return {k: self.value(v) for k, v in node[1]}
        if not isinstance(node[1], list):
            raise self.bad(f"{tag} node without items")
        items = [self.value(x) for x in node[1]]
        return items if tag == "list" else tuple(items)

    def module(self, node):
        if len(node) != 6 or not isinstance(node[4], list) or not isinstance(node[5], list):
            raise self.bad("module node is not [module, index, path, qualname, args, kwargs]")
        _, index, module_name, qualname, args, kwargs = node
        if index in self.built:
            raise self.bad(f"module index {index!r} used twice")
        cls = _import_module_class(module_name, qualname, self.where)
        args = [self.value(a) for a in args]
        if not all(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], str)
                   for kv in kwargs):
            raise self.bad(f"keyword arguments of {qualname} are not [name, value] pairs")
        kwargs = {k: self.value(v) for k, v in kwargs}
        try:
            module = cls(*args, **kwargs)
        except Exception as e:
            raise CheckpointError(f"{self.where}: constructing {module_name}.{qualname} from its "
                                  f"saved arguments failed: {type(e).__name__}: {e}") from e
        self.built[index] = module
        return module


@contextlib.contextmanager
def _private_rng():
    """Run layer constructors on a throwaway generator so loading leaves the global RNG as it was."""
    saved = _random._generator[0]
    _random._generator[0] = np.random.Generator(np.random.PCG64(0))
    try:
        yield
    finally:
        _random._generator[0] = saved


def _restore_state(model, record: dict, where: str) -> None:
    state = record["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: model state_dict is not a dict")
    for key, target in model.state_dict(keep_vars=True).items():
        saved = state.get(key)
        saved = saved._data if isinstance(saved, Tensor) else saved
        # a model cast after construction (e.g. .double()) keeps its saved dtype
        if (isinstance(saved, np.ndarray) and saved.shape == target.shape
                and saved.dtype != target.dtype):
            target._data = target._data.astype(saved.dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: the model rebuilt from its saved __init__ arguments does "
                              f"not match the saved weights (was it changed after construction?)"
                              f": {e}") from e
    for name, flag in record["training"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError as e:
            raise CheckpointError(f"{where}: saved mode for unknown submodule {name!r}") from e
        module.training = bool(flag)
    for name, flag in record["requires_grad"].items():
        try:
            model.get_parameter(name).requires_grad = bool(flag)
        except AttributeError as e:
            raise CheckpointError(f"{where}: saved requires_grad for unknown parameter "
                                  f"{name!r}") from e


def load_model(f: str | os.PathLike | BinaryIO):
    """Rebuild a model written by ``save_model``: import its class, construct, load weights.

    Imports the module that defines each class (trusted code, as for any import) and refuses
    classes that are not ``dtrain.nn.Module`` subclasses. The global RNG is left untouched.
    """
    where = os.fsdecode(f) if isinstance(f, (str, bytes, os.PathLike)) else "model file"
    record = load(f)
    if not (isinstance(record, dict) and record.get("format") == _MODEL_FORMAT):
        raise CheckpointError(f"{where}: not a dtrain.save_model file (use dtrain.load for "
                              "state_dicts and other objects)")
    if record.get("version") != _MODEL_VERSION:
        raise CheckpointError(f"{where}: unsupported save_model version {record.get('version')!r}"
                              f" (this dtrain reads version {_MODEL_VERSION})")
    missing = {"arch", "training", "requires_grad", "state_dict"} - record.keys()
    if missing or not isinstance(record["training"], dict) or not isinstance(
            record["requires_grad"], dict):
        raise CheckpointError(f"{where}: malformed save_model record (missing or invalid "
                              f"{sorted(missing) or 'mode fields'})")
    if not isinstance(record["arch"], list) or record["arch"][:1] != ["module"]:
        raise CheckpointError(f"{where}: malformed save_model record (arch is not a module)")
    with _private_rng():
        model = _ArchDecoder(where).value(record["arch"])
    _restore_state(model, record, where)
    return model
