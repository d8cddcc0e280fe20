"""Pre-0.4 PyTorch names old scripts still type: ``torch.FloatTensor``-style types (constructors,
``isinstance`` checks, ``x.type(torch.LongTensor)``) and ``autograd.Variable``."""

from __future__ import annotations

import numbers

import numpy as np

from . import dtypes
from .tensor import Tensor


class _TensorType(type):
    """The metaclass: calling a type builds a tensor of its dtype; isinstance checks the dtype."""

    def __call__(cls, *args, device=None):
        if len(args) == 1 and not isinstance(args[0], numbers.Integral):
            data = args[0]._data if isinstance(args[0], Tensor) else args[0]
            return Tensor._make(np.array(data, dtype=cls.dtype))
        return Tensor._make(np.zeros(tuple(int(n) for n in args), dtype=cls.dtype))

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, Tensor) and obj._data.dtype == cls.dtype

    def __repr__(cls) -> str:
        return f"<class 'dtrain.{cls.__name__}'>"


def _tensor_type(name: str, dtype) -> _TensorType:
    doc = (f"Legacy constructor and type of {np.dtype(dtype).name} tensors: {name}([1, 2]) or "
           f"{name}(2, 3) (zero-filled); isinstance(x, {name}); x.type({name}).")
    return _TensorType(name, (), {"dtype": np.dtype(dtype), "__doc__": doc})


FloatTensor = _tensor_type("FloatTensor", dtypes.float32)
DoubleTensor = _tensor_type("DoubleTensor", dtypes.float64)
HalfTensor = _tensor_type("HalfTensor", dtypes.float16)
LongTensor = _tensor_type("LongTensor", dtypes.int64)
IntTensor = _tensor_type("IntTensor", dtypes.int32)
ShortTensor = _tensor_type("ShortTensor", dtypes.int16)
CharTensor = _tensor_type("CharTensor", dtypes.int8)
ByteTensor = _tensor_type("ByteTensor", dtypes.uint8)
BoolTensor = _tensor_type("BoolTensor", dtypes.bool_)


def Variable(data: Tensor, requires_grad: bool = False, volatile: bool = False) -> Tensor:
    """A tensor sharing ``data``'s storage (Variables and Tensors merged in PyTorch 0.4)."""
    if not isinstance(data, Tensor):
        raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
    return Tensor._wrap(data._data, requires_grad)
