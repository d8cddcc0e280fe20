"""torch's ``dtype`` objects and ``Size``, over NumPy's dtypes and shape tuples.

``dtrain.float32`` prints as ``dtrain.float32`` (as ``torch.float32`` does) but stays usable
wherever NumPy wants a dtype: NumPy reads its ``dtype`` attribute, so ``np.zeros(3, t.dtype)``
and ``array.astype(dtrain.float64)`` work, and it compares equal to the NumPy dtype, scalar type
or name it stands for (``t.dtype == np.float32``). ``Size`` is a tuple that prints like torch's.
"""

from __future__ import annotations

import numpy as np

# NumPy name -> torch name, for the dtypes torch has
_TORCH_NAMES = {"float16": "float16", "float32": "float32", "float64": "float64",
                "complex64": "complex64", "complex128": "complex128", "int8": "int8",
                "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8",
                "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool"}


class dtype:
    """A tensor element type, as ``torch.dtype``: one object per type, NumPy-compatible."""

    __slots__ = ("_hash", "_name", "_np")

    def __init__(self, np_dtype: np.dtype):
        self._np = np.dtype(np_dtype)
        self._name = _TORCH_NAMES.get(self._np.name, self._np.name)
        self._hash = hash(self._np)

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype (what NumPy reads when this object is given as a dtype)."""
        return self._np

    @property
    def is_floating_point(self) -> bool:
        """True for float16/32/64."""
        return self._np.kind == "f"

    @property
    def is_complex(self) -> bool:
        """True for complex64/128."""
        return self._np.kind == "c"

    @property
    def is_signed(self) -> bool:
        """True for types that hold negative values (floats and signed ints)."""
        return self._np.kind in "fic"

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self._np.itemsize

    def __getattr__(self, name: str):
        # NumPy's dtype attributes (kind, name, str, char, type, ...) for code written for NumPy
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._np, name)

    def __eq__(self, other) -> bool:
        if isinstance(other, dtype):
            return self._np == other._np
        if isinstance(other, np.dtype):
            return self._np == other
        if isinstance(other, str) or (isinstance(other, type) and issubclass(other, np.generic)):
            try:
                return self._np == np.dtype(other)
            except TypeError:
                return False
        if other in (float, int, bool, complex):  # NumPy's reading of the builtin types
            return self._np == np.dtype(other)
        return NotImplemented

    def __ne__(self, other) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"dtrain.{self._name}"

    def __copy__(self) -> dtype:
        return self

    def __deepcopy__(self, memo) -> dtype:
        return self


_BY_NUMPY: dict[np.dtype, dtype] = {}


def as_dtype(value) -> dtype:
    """The one ``dtype`` object for a NumPy dtype, scalar type, name or ``dtype``."""
    if isinstance(value, dtype):
        return value
    np_dtype = np.dtype(value)
    found = _BY_NUMPY.get(np_dtype)
    if found is None:
        found = _BY_NUMPY[np_dtype] = dtype(np_dtype)
    return found


float16 = as_dtype(np.float16)
float32 = as_dtype(np.float32)
float64 = as_dtype(np.float64)
complex64 = as_dtype(np.complex64)
complex128 = as_dtype(np.complex128)
int8 = as_dtype(np.int8)
int16 = as_dtype(np.int16)
int32 = as_dtype(np.int32)
int64 = as_dtype(np.int64)
uint8 = as_dtype(np.uint8)
bool_ = as_dtype(np.bool_)


class Size(tuple):
    """A tensor's shape: a tuple of ints that prints as ``dtrain.Size([2, 3])``, as torch.Size."""

    __slots__ = ()

    def numel(self) -> int:
        """The number of elements a tensor of this shape holds."""
        n = 1
        for d in self:
            n *= d
        return n

    def __repr__(self) -> str:
        return f"dtrain.Size({list(self)})"

    def __getitem__(self, key):
        out = super().__getitem__(key)
        return Size(out) if isinstance(key, slice) else out

    def __add__(self, other):
        return Size(tuple(self) + tuple(other))

    def __radd__(self, other):
        return Size(tuple(other) + tuple(self))

    def __mul__(self, n):
        return Size(tuple(self) * n)

    __rmul__ = __mul__
