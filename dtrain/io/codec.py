"""The object codec: Python values as msgpack plus a list of arrays, with nothing executable.

Plain values (None, bool, int, float, str, bytes, str/int-keyed dicts, lists) are msgpack's
own; a fixed set of extension types carries the rest (arrays and Tensors as indices into the
array list, tuples, big ints, NumPy scalars and dtypes, complex numbers). Decoding refuses any
other extension, caps how deeply extensions nest and how large an integer may be, and keeps
shared arrays and tensors shared.
"""

from __future__ import annotations

import msgpack
import numpy as np

from ..autograd.device import device as _Device
from ..autograd.dtypes import dtype as _DType
from ..autograd.tensor import Tensor
from .arraytable import dtype_name, parse_dtype

__all__ = ["MAX_EXT_DEPTH", "Malformed", "Unsupported", "decode", "encode"]

# Extension type codes; any other code in a file is refused.
EXT_ARRAY = 1
EXT_TENSOR = 2
EXT_TUPLE = 3
EXT_BIGINT = 4
EXT_NPSCALAR = 5
EXT_DTYPE = 6
EXT_SCALARTYPE = 7
EXT_COMPLEX = 8

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack's integer formats hold
MAX_BIGINT_BYTES = 1 << 16
# Extension values nest by unpacking their data from inside a hook; each level costs C stack
# (msgpack keeps a 32 KiB parse stack per call), so the depth is capped well below a crash.
MAX_EXT_DEPTH = 32

_SUPPORTED = ("dict (str/int keys), list, tuple, str, bytes, int, float, complex, bool, None, "
              "numpy arrays (numeric/bool), numpy scalars and dtypes, dtrain Tensors")


class Unsupported(TypeError):
    """A value the codec cannot store; carries the key path (innermost first) for the message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def where(self, root: str = "obj") -> str:
        """The path of the refused value, e.g. ``obj['a'][1]``."""
        return root + "".join(reversed(self.path))


class Malformed(ValueError):
    """Encoded data whose structure is invalid."""


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _dtype_str(dtype: np.dtype) -> str:
    try:
        return dtype_name(dtype)
    except TypeError as e:
        raise Unsupported(str(e)) from None


# ----------------------------------------------------------------------------------- encoding
def _is_module(obj) -> bool:
    from ..nn.module import Module

    return isinstance(obj, Module)


class _Encoder:
    """Turns an object into msgpack-native values plus the list of arrays they refer to."""

    def __init__(self):
        self.arrays: list[np.ndarray] = []
        self.memo: dict[int, msgpack.ExtType] = {}  # id -> ext: shared arrays stay shared
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
            return self._nested(obj, self._items)
        if isinstance(obj, tuple):
            return self._nested(obj, self._tuple)
        if isinstance(obj, Tensor):
            return self._memoized(obj, self._tensor)
        if isinstance(obj, _Device):  # torch-style device objects are stored by name ('cpu')
            return str(obj)
        if isinstance(obj, _DType):  # dtrain.float32 and friends are stored as NumPy dtypes
            return self.encode(obj.dtype)
        if isinstance(obj, np.ndarray):
            return self._memoized(obj, lambda a: msgpack.ExtType(EXT_ARRAY, _pack(self._array(a))))
        if isinstance(obj, np.generic):
            raw = np.asarray(obj).tobytes()
            return msgpack.ExtType(EXT_NPSCALAR, _pack([_dtype_str(obj.dtype), raw]))
        if isinstance(obj, np.dtype):
            return msgpack.ExtType(EXT_DTYPE, _pack(_dtype_str(obj)))
        if isinstance(obj, type) and issubclass(obj, np.generic):
            return msgpack.ExtType(EXT_SCALARTYPE, _pack(_dtype_str(np.dtype(obj))))
        if t is complex:
            return msgpack.ExtType(EXT_COMPLEX, _pack([obj.real, obj.imag]))
        if _is_module(obj):
            raise Unsupported(f"a {t.__qualname__} module inside another object is not supported "
                              "(save the model itself, or its state_dict())")
        raise Unsupported(f"objects of type {t.__module__}.{t.__qualname__} are not supported "
                          f"(supported: {_SUPPORTED})")

    def _nested(self, obj, encode_fn):
        key = id(obj)
        if key in self.active:
            raise Unsupported("the object contains itself (a reference cycle)")
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
            except Unsupported as e:
                e.path.append(f"[{i}]")
                raise
        return out

    def _tuple(self, seq: tuple) -> msgpack.ExtType:
        if self.tuple_depth >= MAX_EXT_DEPTH - 1:
            raise Unsupported(f"tuples nested more than {MAX_EXT_DEPTH - 1} deep")
        self.tuple_depth += 1
        try:
            return msgpack.ExtType(EXT_TUPLE, _pack(self._items(seq)))
        finally:
            self.tuple_depth -= 1

    def _dict(self, d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if type(k) not in (str, int, bool):
                raise Unsupported(f"dict key {k!r} of type {type(k).__name__} is not supported "
                                  "(str and int keys only)")
            try:
                out[self.encode(k)] = self.encode(v)
            except Unsupported as e:
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
        """Add an array to the list (dtype checked now, so errors carry their path)."""
        _dtype_str(a.dtype)
        self.arrays.append(a)
        return len(self.arrays) - 1

    def _tensor(self, t: Tensor) -> msgpack.ExtType:
        from ..nn.parameter import Parameter

        kind = "parameter" if isinstance(t, Parameter) else "tensor"
        index = self._array(t.detach().numpy())
        self.tensor_count += 1
        return msgpack.ExtType(EXT_TENSOR, _pack([self.tensor_count - 1, index,
                                                   t.requires_grad, kind]))

    def _bigint(self, n: int) -> msgpack.ExtType:
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        if len(raw) > MAX_BIGINT_BYTES:
            raise Unsupported(f"integer with {n.bit_length()} bits is too large "
                              f"(limit {8 * MAX_BIGINT_BYTES} bits)")
        return msgpack.ExtType(EXT_BIGINT, raw)


def encode(obj) -> tuple[bytes, list[np.ndarray]]:
    """The msgpack tree of ``obj`` and the arrays it refers to by index.

    Raises Unsupported (a TypeError) naming the path of the first value that cannot be stored;
    RecursionError or ValueError for nesting too deep or strings that are not UTF-8.
    """
    encoder = _Encoder()
    tree = _pack(encoder.encode(obj))
    return tree, encoder.arrays


# ----------------------------------------------------------------------------------- decoding
class _Decoder:
    """msgpack hooks that rebuild the extension types and refuse everything else."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.tensors: dict[int, Tensor] = {}
        self.depth = 0

    def unpack(self, data):
        if self.depth >= MAX_EXT_DEPTH:
            raise Malformed(f"values nested more than {MAX_EXT_DEPTH} extension levels deep")
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
                raise Malformed("unknown extension type -1 (msgpack timestamp)")
        return items

    def pairs_hook(self, pairs: list) -> dict:
        out = {}
        for key, value in pairs:
            if type(key) not in (str, int, bool):
                raise Malformed(f"dict key of type {type(key).__name__} (str or int expected)")
            if isinstance(value, msgpack.Timestamp):
                raise Malformed("unknown extension type -1 (msgpack timestamp)")
            if key in out:
                raise Malformed(f"duplicate dict key {key!r}")
            out[key] = value
        return out

    def ext_hook(self, code: int, data: bytes):
        if code == EXT_ARRAY:
            return self._array(self.unpack(data))
        if code == EXT_TENSOR:
            return self._tensor(self.unpack(data))
        if code == EXT_TUPLE:
            items = self.unpack(data)
            if not isinstance(items, list):
                raise Malformed("tuple payload is not a list")
            return tuple(items)
        if code == EXT_BIGINT:
            if not data or len(data) > MAX_BIGINT_BYTES:
                raise Malformed(f"integer of {len(data)} bytes")
            return int.from_bytes(data, "little", signed=True)
        if code == EXT_NPSCALAR:
            return self._scalar(self.unpack(data))
        if code == EXT_DTYPE:
            return parse_dtype(self.unpack(data))
        if code == EXT_SCALARTYPE:
            return parse_dtype(self.unpack(data)).type
        if code == EXT_COMPLEX:
            value = self.unpack(data)
            if not (isinstance(value, list) and len(value) == 2
                    and all(type(v) is float for v in value)):
                raise Malformed("complex payload is not [real, imag]")
            return complex(*value)
        raise Malformed(f"unknown extension type {code}")

    def _scalar(self, value) -> np.generic:
        if not (isinstance(value, list) and len(value) == 2 and type(value[1]) is bytes):
            raise Malformed("numpy scalar payload is not [dtype, bytes]")
        dtype = parse_dtype(value[0])
        if len(value[1]) != dtype.itemsize:
            raise Malformed(f"numpy scalar of {dtype} with {len(value[1])} bytes")
        return np.frombuffer(value[1], dtype)[0]

    def _array(self, index) -> np.ndarray:
        if type(index) is not int or not 0 <= index < len(self.arrays):
            raise Malformed(f"array reference {index!r} is not in the array table")
        return self.arrays[index]

    def _tensor(self, value) -> Tensor:
        if not (isinstance(value, list) and len(value) == 4 and type(value[0]) is int
                and type(value[2]) is bool and value[3] in ("tensor", "parameter")):
            raise Malformed("tensor payload is not [id, array, requires_grad, kind]")
        tensor_id, index, requires_grad, kind = value
        if tensor_id in self.tensors:
            return self.tensors[tensor_id]
        array = self._array(index)
        if requires_grad and array.dtype.kind not in "fc":
            raise Malformed(f"tensor of dtype {array.dtype} marked requires_grad")
        if kind == "parameter":
            from ..nn.parameter import Parameter

            tensor = Parameter(array, requires_grad=requires_grad)
        else:
            tensor = Tensor._wrap(array, requires_grad=requires_grad)
        self.tensors[tensor_id] = tensor
        return tensor


def decode(tree, arrays: list[np.ndarray]):
    """The object encoded in ``tree``, its array references resolved against ``arrays``.

    Raises Malformed, TableError (both ValueErrors), msgpack's UnpackException or
    RecursionError for invalid data; never builds anything but the supported types.
    """
    return _Decoder(arrays).unpack(tree)
