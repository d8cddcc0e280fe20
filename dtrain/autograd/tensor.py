"""``Tensor``: a NumPy array that records the operations applied to it, for reverse-mode autograd.

Every operation computes its result and defines its backward right below it: a closure that maps
the gradient of the output to the gradients of the inputs (``None`` for inputs that need none).
The closures are the graph's nodes; ``dtrain.autograd.engine`` walks them in reverse.
Semantics follow PyTorch: broadcasting, ``requires_grad`` propagation, leaf accumulation,
``retain_grad``, in-place checks and error messages.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from . import return_types
from ._format import tensor_repr
from .device import CPU, check_device, parse_to
from .dtypes import Size, as_dtype
from .grad_mode import is_grad_enabled

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
bool_ = np.dtype(np.bool_)
uint8 = np.dtype(np.uint8)

_default_dtype = [float32]

_LEAF_ONLY = "you can only change requires_grad flags of leaf variables."
_LEAF_ONLY_HINT = (
    " If you want to use a computed variable in a subgraph that doesn't require differentiation "
    "use var_no_grad = var.detach()."
)


def get_default_dtype():
    """The floating dtype given to tensors made from Python floats (``dtrain.float32``)."""
    return as_dtype(_default_dtype[0])


def set_default_dtype(dtype) -> None:
    """Set the floating dtype for tensors made from Python floats (float32 or float64)."""
    dtype = np.dtype(dtype)
    if dtype not in (float32, float64):
        raise TypeError(f"only float32 and float64 can be the default dtype, got {dtype}")
    _default_dtype[0] = dtype


class Node:
    """One recorded operation: its inputs and the closure that carries gradients back to them."""

    __slots__ = ("__weakref__", "_name", "backward_fn", "edges", "graph_fn", "inputs", "retained")

    def __init__(self, name: str, inputs: tuple, backward_fn, graph_fn=None):
        self._name = name
        self.inputs = inputs
        # the inputs' nodes now: an in-place op later gives an input a new grad_fn, but the
        # gradient of this op must still flow to the node that produced the value it used
        self.edges = tuple(t.grad_fn for t in inputs)
        self.backward_fn = backward_fn
        # the backward in Tensor ops, for create_graph=True; None: the op has no double backward
        self.graph_fn = graph_fn
        self.retained = None  # weakref to the output tensor when retain_grad() was called

    def name(self) -> str:
        """PyTorch-style node name, e.g. ``AddBackward0``."""
        return self._name

    @property
    def next_functions(self) -> tuple:
        """The nodes feeding this one (None for inputs that are leaves or need no grad)."""
        return tuple((node, 0) for node in self.edges)

    def __repr__(self):
        return f"<{self._name} object at {id(self):#x}>"


def _to_array(value, dtype=None) -> np.ndarray:
    """Convert Python data, NumPy arrays or Tensors to an ndarray with PyTorch's dtype rules."""
    if isinstance(value, Tensor):
        arr = value._data
    elif isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) for v in _flat(value)):
        arr = np.array([_to_array(v) for v in value])
    else:
        arr = np.asarray(value)
        if dtype is None and arr.dtype.kind == "f":
            arr = arr.astype(_default_dtype[0])
    if dtype is not None:
        arr = arr.astype(np.dtype(dtype), copy=False)
    elif arr.dtype.kind == "i" and arr.dtype != int64 and not isinstance(value, np.ndarray):
        arr = arr.astype(int64)
    return arr


def _legacy_array(args: tuple) -> np.ndarray:
    """The array ``torch.Tensor(*args)`` holds: sizes give zeros, data the default float dtype."""
    if not args:
        return np.zeros((0,), _default_dtype[0])
    if len(args) == 1 and isinstance(args[0], Tensor):
        return args[0]._data
    sizes = args[0] if len(args) == 1 and isinstance(args[0], Size) else args
    if all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in sizes):
        if any(n < 0 for n in sizes):
            raise RuntimeError(f"Trying to create tensor with negative dimension "
                               f"{next(n for n in sizes if n < 0)}: {list(sizes)}")
        return np.zeros(tuple(int(n) for n in sizes), _default_dtype[0])
    if len(args) == 1 and isinstance(args[0], (list, tuple, np.ndarray)):
        return _to_array(args[0]).astype(_default_dtype[0])
    raise TypeError(f"new(): data must be a sequence (got {type(args[0]).__name__}); "
                    f"Tensor() takes sizes (ints) or one sequence, as torch.Tensor")


def _flat(seq):
    for item in seq:
        if isinstance(item, (list, tuple)):
            yield from _flat(item)
        else:
            yield item


def _unbroadcast(grad, shape: tuple):
    """Sum ``grad`` (an array, or a Tensor in a create_graph backward) down to ``shape``."""
    if grad.shape == shape:
        return grad
    if isinstance(grad, Tensor):
        return _unbroadcast_tensor(grad, tuple(shape))
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    assert grad.shape == shape, (grad.shape, shape)
    return grad


def _unbroadcast_tensor(grad: Tensor, shape: tuple) -> Tensor:
    extra = grad.ndim - len(shape)
    if extra:
        grad = sum(grad, tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = sum(grad, axes, keepdim=True)
    assert grad.shape == shape, (grad.shape, shape)
    return grad


def _normalize_dims(dim, ndim: int):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    n = ndim if ndim > 0 else 1  # a 0-d tensor accepts dim 0 and -1, as in PyTorch
    for d in dims:
        if not -n <= d < n:
            raise IndexError(
                f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})"
            )
        out.append(d % n)
    return tuple(out)


def _expand_reduced(grad: np.ndarray, shape: tuple, dims, keepdim: bool) -> np.ndarray:
    """Broadcast a reduction's output gradient back over the reduced dims."""
    if dims is None:
        return np.broadcast_to(grad, shape)
    if not keepdim and len(shape):
        grad = np.expand_dims(grad, dims)
    return np.broadcast_to(grad, shape)


def _expand_reduced_tensor(grad: Tensor, shape: tuple, dims, keepdim: bool) -> Tensor:
    """``_expand_reduced`` in Tensor ops, for create_graph backwards."""
    if dims is not None and not keepdim and len(shape):
        grad = _unsqueeze_dims(grad, dims)
    return expand(grad, shape)


def _unsqueeze_dims(grad: Tensor, dims: tuple) -> Tensor:
    """``grad`` with size-1 dimensions put back at the (sorted) reduced ``dims``."""
    for d in sorted(dims):
        grad = unsqueeze(grad, d)
    return grad


def _zeros_like(t: Tensor) -> Tensor:
    return Tensor._wrap(np.zeros_like(t._data))


def _index_key(key):
    """Turn Tensors inside an index into arrays."""
    if isinstance(key, Tensor):
        return key._data
    if isinstance(key, tuple):
        return tuple(k._data if isinstance(k, Tensor) else k for k in key)
    if isinstance(key, list):
        return np.asarray(key)
    return key


def _is_basic_index(key) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return all(
        isinstance(k, (slice, numbers.Integral, type(None), type(Ellipsis))) and not isinstance(k, bool)
        for k in parts
    )


def _basic_index_name(key, shape: tuple) -> str:
    """torch's grad_fn for basic indexing: the last view it applies, left to right (``x[0]``
    selects, ``x[0, 1:3]`` slices, ``x[None]`` unsqueezes; whole-dim slices change nothing)."""
    parts = key if isinstance(key, tuple) else (key,)
    consuming = len([k for k in parts if k is not None and k is not Ellipsis])
    name, dim = "AliasBackward0", 0
    for k in parts:
        if k is Ellipsis:
            dim += len(shape) - consuming
        elif k is None:
            name = "UnsqueezeBackward0"
        elif isinstance(k, slice):
            start, stop, step = k.indices(shape[dim])
            if (start, stop, step) != (0, shape[dim], 1):
                name = "SliceBackward0"
            dim += 1
        else:
            name, dim = "SelectBackward0", dim + 1
    return name



def _unary_inplace(name: str):
    """The method ``name_`` of Tensor: this module's function ``name`` applied in place
    (``t.exp_()``). Looked up when called: the functions are defined after the class."""
    def method(self):
        op = globals()[name]
        return self._inplace(lambda t, _: op(t), None)

    method.__name__ = name + "_"
    method.__qualname__ = f"Tensor.{name}_"
    method.__doc__ = f"In-place :func:`{name}`."
    return method

class Tensor:
    """An n-dimensional array with PyTorch's autograd semantics, stored as a NumPy array."""

    __slots__ = ("__weakref__", "_data", "_requires_grad", "_retains_grad", "grad", "grad_fn")
    __array_priority__ = 1000
    __array_ufunc__ = None  # make NumPy defer to Tensor's reflected operators

    def __init__(self, *args, device=None):
        """torch's legacy constructor: ``Tensor(2, 3)`` (that shape, zero-filled where torch
        leaves memory uninitialised), ``Tensor([1, 2])`` (data in the default float dtype),
        ``Tensor(other)`` (the same storage) or ``Tensor()`` (empty). Use ``dtrain.tensor``."""
        check_device(device)
        self._reset(_legacy_array(args))

    def _reset(self, array: np.ndarray) -> None:
        self._data = array
        self.grad = None
        self.grad_fn = None
        self._retains_grad = False
        self._requires_grad = False

    @classmethod
    def _make(cls, data, dtype=None, requires_grad: bool = False) -> Tensor:
        """A tensor of ``data`` with dtrain.tensor's dtype rules (the factories' constructor)."""
        t = cls._wrap(_to_array(data, dtype))
        if requires_grad:
            t.requires_grad = True
        return t

    @classmethod
    def _wrap(cls, data: np.ndarray, requires_grad: bool = False, grad_fn=None) -> Tensor:
        """Build a tensor around an existing array without checks or copies."""
        t = object.__new__(cls)
        # NumPy gives scalars, not 0-d arrays, for arithmetic on 0-d arrays; in-place ops and
        # .numpy() need the array (``correct = 0; correct += pred.eq(y).sum()`` twice)
        t._data = data if isinstance(data, np.ndarray) else np.asarray(data)
        t.grad = None
        t._requires_grad = requires_grad
        t.grad_fn = grad_fn
        t._retains_grad = False
        return t

    # ----------------------------------------------------------------- attributes
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        # as in torch, assigning the attribute of a non-leaf is refused even when it is a no-op
        if self.grad_fn is not None:
            raise RuntimeError(_LEAF_ONLY + ("" if value else _LEAF_ONLY_HINT))
        self._set_requires_grad(bool(value))

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place and return self (for freezing or unfreezing)."""
        if self.grad_fn is not None and not requires_grad:
            raise RuntimeError(_LEAF_ONLY + _LEAF_ONLY_HINT)
        if self.grad_fn is None:
            self._set_requires_grad(bool(requires_grad))
        return self

    def _set_requires_grad(self, value: bool) -> None:
        if value and self._data.dtype.kind not in "fc":
            raise RuntimeError("only Tensors of floating point dtype can require gradients")
        self._requires_grad = value

    @property
    def data(self) -> Tensor:
        """This tensor's values outside autograd: a Tensor sharing memory, with no history.

        Changes made through it (``p.data.add_(...)``, ``p.data[0] = 1``) reach this tensor and
        are never recorded, as with ``torch.Tensor.data``.
        """
        return Tensor._wrap(self._data)

    @data.setter
    def data(self, value: Tensor) -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(value).__name__}")
        if self._requires_grad and value._data.dtype.kind not in "fc":
            raise RuntimeError("data set to a tensor that requires gradients must be floating "
                               "point or complex dtype")
        self._data = value._data

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is not None:
            import weakref

            self._retains_grad = True
            self.grad_fn.retained = weakref.ref(self)

    @property
    def shape(self) -> Size:
        """The dimensions, as a ``dtrain.Size`` (a tuple)."""
        return Size(self._data.shape)

    def size(self, dim: int | None = None):
        """The shape (a ``dtrain.Size``), or the length of dimension ``dim``."""
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[_normalize_dims(dim, self.ndim)[0]]

    @property
    def dtype(self):
        """The element type, e.g. ``dtrain.float32`` (equal to NumPy's ``float32`` too)."""
        return as_dtype(self._data.dtype)

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return self._data.size

    nelement = numel

    def ndimension(self) -> int:
        return self._data.ndim

    def is_contiguous(self, memory_format=None) -> bool:
        """True when the elements lie in row-major order (False after ``t()``, as in torch)."""
        return bool(self._data.flags.c_contiguous)

    def element_size(self) -> int:
        """Bytes per element."""
        return self._data.itemsize

    @property
    def device(self):
        """Always the CPU: dtrain computes with NumPy."""
        return CPU

    @property
    def is_cuda(self) -> bool:
        return False

    # the other placement and layout flags scripts test (`input.is_cuda or input.is_xpu`)
    is_cpu = property(lambda self: True, doc="True: dtrain tensors live on the CPU.")
    is_mps = property(lambda self: False, doc="False: no Apple GPU.")
    is_xpu = property(lambda self: False, doc="False: no Intel GPU.")
    is_meta = property(lambda self: False, doc="False: every tensor holds data.")
    is_sparse = property(lambda self: False, doc="False: tensors are dense.")
    is_quantized = property(lambda self: False, doc="False: no quantized tensors.")

    def get_device(self) -> int:
        """-1: the CPU, as torch numbers it."""
        return -1

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:
        return self.transpose(-2, -1)

    # ------------------------------------------------------------ conversions
    def numpy(self) -> np.ndarray:
        """The underlying array (shared memory); refuses tensors that require grad, like PyTorch."""
        if self._requires_grad:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."
            )
        return self._data

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self._data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self._data.size} elements cannot be converted to Scalar"
            )
        return self._data.reshape(()).item()

    def tolist(self):
        return self._data.tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"Boolean value of Tensor with {self._data.size} values is ambiguous"
            )
        return bool(self._data.reshape(()))

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __array__(self, dtype=None, copy=None):
        return self._data if dtype is None else self._data.astype(dtype)

    def __hash__(self):
        return id(self)

    def __format__(self, format_spec: str) -> str:
        """A 0-d tensor formats as its number (``f"{loss:.4f}"``, ``f"Label: {y[0]}"``), as in
        torch; other tensors accept only the empty format."""
        if self._data.ndim == 0 and type(self) is Tensor:
            return self.item().__format__(format_spec)
        return object.__format__(self, format_spec)

    def __repr__(self):
        dtype = self._data.dtype
        # an empty tensor shows any non-default dtype: there are no values to tell it by
        implied = (_default_dtype[0],) if self._data.size == 0 else (_default_dtype[0], int64,
                                                                       bool_)
        dtype_suffix = None if dtype in implied else f"dtype=dtrain.{dtype.name}"
        if self.grad_fn is not None:
            grad_suffix = f"grad_fn=<{self.grad_fn.name()}>"
        else:
            grad_suffix = "requires_grad=True" if self._requires_grad else None
        return tensor_repr(self._data, dtype_suffix, grad_suffix)

    # ------------------------------------------------------- graph utilities
    def detach(self) -> Tensor:
        """A tensor sharing this one's data, with no history and ``requires_grad == False``."""
        return Tensor._wrap(self._data)

    def detach_(self) -> Tensor:
        """Cut this tensor from its graph in place."""
        self.grad_fn = None
        self._requires_grad = False
        return self

    def backward(self, gradient=None, retain_graph: bool | None = None, create_graph=False,
                 inputs=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``, as ``torch.Tensor.backward``."""
        from .engine import backward

        backward([self], None if gradient is None else [gradient], retain_graph, create_graph,
                 inputs=inputs)

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned Tensor replaces it."""
        from .engine import register_hook

        return register_hook(self, hook)

    # ------------------------------------------------------------- dtype casts
    def to(self, *args, **kwargs) -> Tensor:
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``, as torch.

        A differentiable cast when the dtype changes, else self (a copy with ``copy=True``);
        devices other than the CPU raise ``DeviceUnavailableError``.
        """
        dtype, like, copy = parse_to(args, kwargs)
        if like is not None:
            dtype = like._data.dtype
        out = self if dtype is None else self.type(dtype)
        return out.clone() if copy and out is self else out

    def type(self, dtype=None) -> Tensor | str:
        """Cast to ``dtype`` (differentiable); without one, the type name ('dtrain.FloatTensor')."""
        if dtype is None:
            return f"dtrain.{_torch_name(self._data.dtype)}Tensor"
        if isinstance(dtype, str) and dtype.endswith("Tensor"):
            dtype = _dtype_of_type_name(dtype)
        dtype = np.dtype(dtype)
        if dtype == self._data.dtype:
            return self
        src = self._data.dtype

        def backward(g):
            return (g.astype(src),)

        differentiable = dtype.kind == "f"
        return _op(self._data.astype(dtype), (self,), backward, "ToCopyBackward0", differentiable,
                   graph=lambda g: (g.type(src),))

    def float(self) -> Tensor:
        return self.type(float32)

    def double(self) -> Tensor:
        return self.type(float64)

    def long(self) -> Tensor:
        return self.type(int64)

    def int(self) -> Tensor:
        return self.type(int32)

    def bool(self) -> Tensor:
        return self.type(bool_)

    def half(self) -> Tensor:
        return self.type(np.float16)

    def short(self) -> Tensor:
        return self.type(np.int16)

    def char(self) -> Tensor:
        return self.type(np.int8)

    def byte(self) -> Tensor:
        return self.type(uint8)

    def type_as(self, other: Tensor) -> Tensor:
        """Cast to ``other``'s dtype (differentiable)."""
        return self.type(other._data.dtype)

    def cpu(self) -> Tensor:
        """This tensor: it is on the CPU already."""
        return self

    def cuda(self, device=None, non_blocking: bool = False) -> Tensor:
        """Refused with a clear error: dtrain has no GPU backend."""
        check_device("cuda" if device is None else device if isinstance(device, str)
                     else f"cuda:{device}")
        return self

    def clone(self) -> Tensor:
        """A copy with its own memory that stays in the graph."""
        return _op(self._data.copy(), (self,), lambda g: (g,), "CloneBackward0",
                   graph=lambda g: (g,))

    def contiguous(self, memory_format=None) -> Tensor:
        """Itself when row-major, else a row-major copy (differentiable), as in torch."""
        if self._data.flags.c_contiguous:
            return self
        return _op(np.ascontiguousarray(self._data), (self,), lambda g: (g,), "CloneBackward0",
                   graph=lambda g: (g,))

    def is_floating_point(self) -> bool:
        return self._data.dtype.kind == "f"

    # ------------------------------------------------------------- arithmetic
    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(other, self)

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return sub(other, self)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(other, self)

    def __truediv__(self, other):
        return div(self, other)

    def __rtruediv__(self, other):
        return div(other, self)

    def __pow__(self, other):
        return pow(self, other)

    def __rpow__(self, other):
        return pow(other, self)

    def __neg__(self):
        return neg(self)

    def __pos__(self):
        return self

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __abs__(self):
        return self.abs()

    def __floordiv__(self, other):
        return floor_divide(self, other)

    def __rfloordiv__(self, other):
        return floor_divide(other, self)

    def __mod__(self, other):
        return remainder(self, other)

    def __rmod__(self, other):
        return remainder(other, self)

    # comparisons never carry gradients
    def __eq__(self, other):
        return Tensor._wrap(self._data == _data(other))

    def __ne__(self, other):
        return Tensor._wrap(self._data != _data(other))

    def __lt__(self, other):
        return Tensor._wrap(self._data < _data(other))

    def __le__(self, other):
        return Tensor._wrap(self._data <= _data(other))

    def __gt__(self, other):
        return Tensor._wrap(self._data > _data(other))

    def __ge__(self, other):
        return Tensor._wrap(self._data >= _data(other))

    def __invert__(self):
        return Tensor._wrap(~self._data)

    def __and__(self, other):
        return Tensor._wrap(self._data & _data(other))

    def __or__(self, other):
        return Tensor._wrap(self._data | _data(other))

    def eq(self, other):
        return self == other

    def ne(self, other):
        return self != other

    def lt(self, other):
        return self < other

    def le(self, other):
        return self <= other

    def gt(self, other):
        return self > other

    def ge(self, other):
        return self >= other

    def equal(self, other) -> bool:
        return self.shape == other.shape and bool(np.array_equal(self._data, _data(other)))

    def allclose(self, other, rtol=1e-5, atol=1e-8) -> bool:
        return bool(np.allclose(self._data, _data(other), rtol=rtol, atol=atol))

    def isnan(self):
        return Tensor._wrap(np.isnan(self._data))

    def isfinite(self):
        return Tensor._wrap(np.isfinite(self._data))

    def argmax(self, dim=None, keepdim=False):
        return Tensor._wrap(_arg_reduce(np.argmax, self._data, dim, keepdim))

    def argmin(self, dim=None, keepdim=False):
        return Tensor._wrap(_arg_reduce(np.argmin, self._data, dim, keepdim))

    def sign(self):
        A = self._data
        return Tensor._wrap(A.copy() if A.dtype == bool_ else np.sign(A))

    def any(self, dim=None, keepdim=False):
        return Tensor._wrap(np.asarray(self._data.any(_normalize_dims(dim, self._data.ndim),
                                                      keepdims=keepdim)))

    def all(self, dim=None, keepdim=False):
        return Tensor._wrap(np.asarray(self._data.all(_normalize_dims(dim, self._data.ndim),
                                                      keepdims=keepdim)))

    # ------------------------------------------------------ method forms of ops
    def add(self, other, *, alpha=1):
        from .functional import add as add_

        return add_(self, other, alpha=alpha)

    def sub(self, other, *, alpha=1):
        from .functional import sub as sub_

        return sub_(self, other, alpha=alpha)

    def mul(self, other):
        return mul(self, other)

    def div(self, other, *, rounding_mode=None):
        from .functional import div as div_

        return div_(self, other, rounding_mode=rounding_mode)

    def floor_divide(self, other):
        return floor_divide(self, other)

    def remainder(self, other):
        return remainder(self, other)

    def pow(self, exponent):
        return pow(self, exponent)

    def matmul(self, other):
        return matmul(self, other)

    def mm(self, other):
        return matmul(self, other)

    def neg(self):
        return neg(self)

    def sum(self, dim=None, keepdim=False):
        return sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return mean(self, dim, keepdim)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return var(self, dim, unbiased=unbiased, keepdim=keepdim, correction=correction)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return std(self, dim, unbiased=unbiased, keepdim=keepdim, correction=correction)

    def max(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return maximum(self, dim)
        return max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return minimum(self, dim)
        return min(self, dim, keepdim)

    def amax(self, dim=None, keepdim=False):
        return amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return amin(self, dim, keepdim)

    def exp(self):
        return exp(self)

    def log(self):
        return log(self)

    def sqrt(self):
        return sqrt(self)

    def abs(self):
        return abs(self)

    def tanh(self):
        return tanh(self)

    def sigmoid(self):
        return sigmoid(self)

    def relu(self):
        return relu(self)

    def clamp(self, min=None, max=None):
        return clamp(self, min, max)

    clip = clamp

    def softmax(self, dim):
        return softmax(self, dim)

    def log_softmax(self, dim):
        return log_softmax(self, dim)

    def reshape(self, *shape):
        return reshape(self, _shape_arg(shape))

    def view(self, *shape):
        return reshape(self, _shape_arg(shape))

    def view_as(self, other):
        return reshape(self, other.shape)

    def reshape_as(self, other):
        return reshape(self, other.shape)

    def expand(self, *shape):
        return expand(self, _shape_arg(shape))

    def expand_as(self, other):
        return expand(self, other.shape)

    def transpose(self, dim0, dim1):
        return transpose(self, dim0, dim1)

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
        return self.T

    def permute(self, *dims):
        return permute(self, _shape_arg(dims))

    def squeeze(self, dim=None):
        return squeeze(self, dim)

    def unsqueeze(self, dim):
        return unsqueeze(self, dim)

    def flatten(self, start_dim=0, end_dim=-1):
        return flatten(self, start_dim, end_dim)

    def __getitem__(self, key):
        return getitem(self, key)

    # ---------------------------------------- ops defined in indexing/sorting/pieces modules
    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        from .pieces import norm as norm_

        return norm_(self, p, dim, keepdim, dtype)

    def split(self, split_size, dim=0):
        from .pieces import split as split_

        return split_(self, split_size, dim)

    def chunk(self, chunks, dim=0):
        from .pieces import chunk as chunk_

        return chunk_(self, chunks, dim)

    def unbind(self, dim=0):
        from .pieces import unbind as unbind_

        return unbind_(self, dim)

    def index_select(self, dim, index):
        from .indexing import index_select as index_select_

        return index_select_(self, dim, index)

    def repeat(self, *sizes):
        from .pieces import repeat as repeat_

        return repeat_(self, _shape_arg(sizes))

    def cumsum(self, dim, *, dtype=None):
        from .pieces import cumsum as cumsum_

        return cumsum_(self, dim, dtype=dtype)

    def gather(self, dim, index):
        from .indexing import gather as gather_

        return gather_(self, dim, index)

    def scatter(self, dim, index, src=None, *, value=None, reduce=None):
        from .indexing import scatter as scatter_

        return scatter_(self, dim, index, src, value=value, reduce=reduce)

    def scatter_(self, dim, index, src=None, *, value=None, reduce=None):
        from .indexing import scatter as scatter_

        return self._inplace(lambda t, s: scatter_(t, dim, index, s, value=value, reduce=reduce),
                             src)

    def scatter_add(self, dim, index, src):
        from .indexing import scatter_add as scatter_add_

        return scatter_add_(self, dim, index, src)

    def scatter_add_(self, dim, index, src):
        from .indexing import scatter_add as scatter_add_

        return self._inplace(lambda t, s: scatter_add_(t, dim, index, s), src)

    def masked_fill(self, mask, value):
        from .indexing import masked_fill as masked_fill_

        return masked_fill_(self, mask, value)

    def masked_fill_(self, mask, value):
        from .indexing import masked_fill as masked_fill_

        return self._inplace(lambda t, v: masked_fill_(t, mask, v), value)

    def where(self, condition, other):
        """``self`` where ``condition`` holds, else ``other`` (torch's method form)."""
        return where(condition, self, other)

    def sort(self, dim=-1, descending=False, stable=False):
        from .sorting import sort as sort_

        return sort_(self, dim, descending, stable)

    def argsort(self, dim=-1, descending=False, stable=False):
        from .sorting import argsort as argsort_

        return argsort_(self, dim, descending, stable)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        from .sorting import topk as topk_

        return topk_(self, k, dim, largest, sorted)

    def addcmul(self, tensor1, tensor2, *, value=1):
        """``self + value * tensor1 * tensor2``."""
        return add(self, mul(mul(tensor1, tensor2), value))

    def addcdiv(self, tensor1, tensor2, *, value=1):
        """``self + value * tensor1 / tensor2``."""
        return add(self, mul(div(tensor1, tensor2), value))

    def addcmul_(self, tensor1, tensor2, *, value=1):
        return self._inplace(lambda t, _: t.addcmul(tensor1, tensor2, value=value),
                             _first_needing_grad(tensor1, tensor2))

    def addcdiv_(self, tensor1, tensor2, *, value=1):
        return self._inplace(lambda t, _: t.addcdiv(tensor1, tensor2, value=value),
                             _first_needing_grad(tensor1, tensor2))

    # ------------------------------------------------- new tensors like this one
    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        """A copy of ``data`` with this tensor's dtype unless ``dtype`` is given."""
        check_device(device)
        return Tensor._make(np.array(_data(data), copy=True), dtype or self._data.dtype,
                            requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return self.new_full(_shape_arg(size), 0, dtype=dtype, device=device,
                             requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self.new_full(_shape_arg(size), 1, dtype=dtype, device=device,
                             requires_grad=requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        """Zero-filled (torch leaves the memory uninitialised): repeatable runs."""
        return self.new_zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        check_device(device)
        array = np.full(tuple(size), fill_value, np.dtype(dtype or self._data.dtype))
        return Tensor._make(array, requires_grad=requires_grad)

    # ---------------------------------------------------------- in-place ops
    def _check_inplace(self) -> bool:
        """Refuse in-place changes of leaves that require grad; True when history must be rebased."""
        if not is_grad_enabled():
            return False
        if self.grad_fn is None and self._requires_grad:
            raise RuntimeError(
                "a leaf Variable that requires grad is being used in an in-place operation."
            )
        return self._requires_grad

    def _inplace(self, func, other) -> Tensor:
        """Apply ``self = func(self, other)`` in place, keeping the graph right when recording."""
        other_rg = isinstance(other, Tensor) and other._requires_grad
        if self._check_inplace() or (other_rg and is_grad_enabled()):
            snapshot = Tensor._wrap(self._data, self._requires_grad, self.grad_fn)
            result = func(snapshot, other)
            _check_result_cast(result._data.dtype, self._data.dtype)
            self._data = result._data.astype(self._data.dtype, copy=False)
            self.grad_fn = result.grad_fn
            self._requires_grad = result._requires_grad
        else:
            with _no_grad_block():
                result = func(Tensor._wrap(self._data), other)
            _check_result_cast(result._data.dtype, self._data.dtype)
            np.copyto(self._data, result._data, casting="unsafe")
        return self

    def __iadd__(self, other):
        return self._inplace(add, other)

    def __isub__(self, other):
        return self._inplace(sub, other)

    def __imul__(self, other):
        return self._inplace(mul, other)

    def __itruediv__(self, other):
        return self._inplace(div, other)

    def add_(self, other, *, alpha=1):
        from .functional import _scaled

        return self._inplace(add, _scaled(other, alpha, self))

    def sub_(self, other, *, alpha=1):
        from .functional import _scaled

        return self._inplace(sub, _scaled(other, alpha, self))

    def mul_(self, other):
        return self._inplace(mul, other)

    def div_(self, other):
        return self._inplace(div, other)

    def pow_(self, exponent):
        return self._inplace(pow, exponent)

    def clamp_(self, min=None, max=None):
        return self._inplace(lambda t, _: clamp(t, min, max), None)

    # The unary in-place methods: ``t.exp_()`` is ``t = exp(t)`` written into t's storage.
    neg_, sqrt_, exp_, log_ = map(_unary_inplace, ("neg", "sqrt", "exp", "log"))
    abs_, tanh_, sigmoid_, relu_ = map(_unary_inplace, ("abs", "tanh", "sigmoid", "relu"))

    def zero_(self):
        self._check_inplace()
        self._data[...] = 0
        return self

    def fill_(self, value):
        self._check_inplace()
        self._data[...] = _data(value)
        return self

    def copy_(self, src):
        """Copy ``src`` into this tensor's memory (broadcasting, casting)."""
        if self._check_inplace() or (isinstance(src, Tensor) and src._requires_grad and is_grad_enabled()):
            shape, dtype = self.shape, self.dtype
            return self._inplace(lambda t, s: expand(s, shape).type(dtype) + t * 0, src)
        np.copyto(self._data, _data(src), casting="unsafe")
        return self

    def uniform_(self, a=0.0, b=1.0, generator=None):
        from .. import random as _random

        self._check_inplace()
        self._data[...] = _random.uniform(a, b, self.shape, generator)
        return self

    def normal_(self, mean=0.0, std=1.0, generator=None):
        from .. import random as _random

        self._check_inplace()
        self._data[...] = _random.normal(mean, std, self.shape, generator)
        return self

    def __setitem__(self, key, value):
        key = _index_key(key)
        if self._check_inplace() or (isinstance(value, Tensor) and value._requires_grad and is_grad_enabled()):
            self._inplace(lambda t, v: index_put(t, key, v), value)
        else:
            self._data[key] = _data(value)


def _check_result_cast(result: np.dtype, target: np.dtype) -> None:
    """torch's rule for in-place results: no cast to a lower category (float into int, ...)."""
    if _category(result) > _category(target):
        raise RuntimeError(f"result type {_torch_name(result)} can't be cast to the desired "
                           f"output type {_torch_name(target)}")


def _first_needing_grad(*tensors):
    """The first operand that requires grad (so ``_inplace`` records), else None."""
    return next((t for t in tensors if isinstance(t, Tensor) and t._requires_grad), None)


def _no_grad_block():
    from .grad_mode import no_grad

    return no_grad()


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _data(x):
    return x._data if isinstance(x, Tensor) else x


def _as_tensor(x, like: Tensor | None = None) -> Tensor:
    """Wrap a non-Tensor operand; a Python scalar next to ``like`` takes their promoted dtype."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, numbers.Number) and like is not None:
        return _scalar_tensor(x, _result_dtype(like, x))
    return Tensor._make(x)


def _scalar_tensor(x, dtype: np.dtype) -> Tensor:
    # astype wraps out-of-range integers as torch does, where asarray(x, dtype) would raise
    return Tensor._wrap(np.array(x).astype(dtype, copy=False))


def _category(dtype: np.dtype) -> int:
    return {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}[dtype.kind]


def _promote_types(a: np.dtype, b: np.dtype) -> np.dtype:
    """``torch.promote_types``: a higher category (bool < int < float) wins outright."""
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def _scalar_dtype(x) -> np.dtype:
    """The dtype a Python scalar stands for: bool, int64 or the default float dtype."""
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, numbers.Integral):
        return int64
    if isinstance(x, numbers.Real):
        return _default_dtype[0]
    return np.dtype(np.complex64 if _default_dtype[0] == float32 else np.complex128)


def _result_dtype(*operands) -> np.dtype:
    """PyTorch's result type of Tensors and Python scalars.

    Operands form three classes: dimensioned tensors, 0-d tensors, Python scalars. A class only
    overrides the dtype of a stronger class when it brings a higher category, so float32 * 2.5
    stays float32 and float32 * float64-0d stays float32, while int64 * 2.5 becomes float32.
    """
    classes: list = [None, None, None]
    for x in operands:
        if isinstance(x, Tensor):
            k, dt = (0 if x._data.ndim else 1), x._data.dtype
        else:
            k, dt = 2, _scalar_dtype(x)
        classes[k] = dt if classes[k] is None else _promote_types(classes[k], dt)
    result = None
    for dt in reversed(classes):
        if dt is not None and (result is None or _category(dt) >= _category(result)):
            result = dt
    return result


def _op(data: np.ndarray, inputs: tuple, backward_fn, name: str, differentiable: bool = True,
        graph=None) -> Tensor:
    """Wrap an op's result, recording its node when grad mode is on and an input requires grad.

    ``backward_fn`` maps an array gradient to arrays (the fast first-order path); ``graph`` is the
    same map in Tensor ops, used by ``create_graph=True`` (None: no double backward for the op).
    """
    if differentiable and is_grad_enabled():
        for t in inputs:
            if t._requires_grad:
                return Tensor._wrap(data, True, Node(name, inputs, backward_fn, graph))
    return Tensor._wrap(data)


def _arg_reduce(fn, data, dim, keepdim):
    if dim is None:
        return np.asarray(fn(data))
    d = _normalize_dims(dim, data.ndim)[0]
    out = fn(data, axis=d) if data.ndim else np.asarray(0)
    return np.expand_dims(out, d) if keepdim and data.ndim else out


def _ieee(fn):
    """Run an op with NumPy's floating-point warnings off: inf and nan come silently, as in torch."""

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return quiet


def _binary_operands(a, b):
    """Both operands as Tensors of one dtype, chosen by PyTorch's type promotion."""
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a._data.dtype == b._data.dtype:
        return a, b
    # the common float-tensor-and-Python-number case: the scalar takes the tensor's dtype
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and a._data.dtype.kind == "f":
        return a, Tensor._wrap(np.asarray(b, a._data.dtype))
    if isinstance(b, Tensor) and isinstance(a, (int, float)) and b._data.dtype.kind == "f":
        return Tensor._wrap(np.asarray(a, b._data.dtype)), b
    if not isinstance(a, (Tensor, numbers.Number)):
        a = Tensor._make(a)
    if not isinstance(b, (Tensor, numbers.Number)):
        b = Tensor._make(b)
    dtype = _result_dtype(a, b)
    return _cast_operand(a, dtype), _cast_operand(b, dtype)


def _is_bool(x) -> bool:
    if isinstance(x, Tensor):
        return x._data.dtype == bool_
    return isinstance(x, (bool, np.bool_))


def _floating(a: Tensor) -> Tensor:
    """``a`` itself when floating, else cast to the default float dtype (torch's unary float ops)."""
    return a if a._data.dtype.kind in "fc" else a.type(_default_dtype[0])


def _not_for(a: Tensor, op: str, kinds: str) -> None:
    """Refuse dtypes of the given kinds, with torch's NotImplementedError wording."""
    if a._data.dtype.kind in kinds:
        raise NotImplementedError(f'"{op}" not implemented for \'{_torch_name(a._data.dtype)}\'')


def _torch_name(dtype: np.dtype) -> str:
    """The C type name torch uses in kernel errors ('Float', 'Long', 'Bool', ...)."""
    names = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
             "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}
    return names.get(np.dtype(dtype).name, np.dtype(dtype).name)


def _dtype_of_type_name(name: str) -> np.dtype:
    """The dtype of a legacy type name such as 'dtrain.DoubleTensor' or 'torch.LongTensor'."""
    short = name.rpartition(".")[2].removesuffix("Tensor")
    for np_name in ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8",
                    "bool"):
        if _torch_name(np_name) == short:
            return np.dtype(np_name)
    raise ValueError(f"invalid type: '{name}'")


def _cast_operand(x, dtype: np.dtype) -> Tensor:
    if not isinstance(x, Tensor):
        return _scalar_tensor(x, dtype)
    return x if x._data.dtype == dtype else x.type(dtype)  # a differentiable cast


# ============================================================================ elementwise binary
def add(a, b) -> Tensor:
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data

    def backward(g):
        return (_unbroadcast(g, A.shape) if a._requires_grad else None,
                _unbroadcast(g, B.shape) if b._requires_grad else None)

    def graph(g):
        return (_unbroadcast(g, A.shape) if a._requires_grad else None,
                _unbroadcast(g, B.shape) if b._requires_grad else None)

    return _op(A + B, (a, b), backward, "AddBackward0", graph=graph)


def sub(a, b) -> Tensor:
    if _is_bool(a) or _is_bool(b):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported. "
                           "If you are trying to invert a mask, use the `~` or `logical_not()` "
                           "operator instead.")
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data

    def backward(g):
        return (_unbroadcast(g, A.shape) if a._requires_grad else None,
                _unbroadcast(-g, B.shape) if b._requires_grad else None)

    def graph(g):
        return (_unbroadcast(g, A.shape) if a._requires_grad else None,
                _unbroadcast(neg(g), B.shape) if b._requires_grad else None)

    return _op(A - B, (a, b), backward, "SubBackward0", graph=graph)


def mul(a, b) -> Tensor:
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data

    def backward(g):
        return (_unbroadcast(g * B, A.shape) if a._requires_grad else None,
                _unbroadcast(g * A, B.shape) if b._requires_grad else None)

    def graph(g):
        return (_unbroadcast(mul(g, b), A.shape) if a._requires_grad else None,
                _unbroadcast(mul(g, a), B.shape) if b._requires_grad else None)

    return _op(A * B, (a, b), backward, "MulBackward0", graph=graph)


@_ieee
def div(a, b) -> Tensor:
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data
    if A.dtype.kind in "iub":  # true division of integers gives the default float, as in torch
        A, B = A.astype(_default_dtype[0]), B.astype(_default_dtype[0])

    def backward(g):
        ga = _unbroadcast(g / B, A.shape) if a._requires_grad else None
        gb = _unbroadcast(-g * A / (B * B), B.shape) if b._requires_grad else None
        return ga, gb

    def graph(g):
        fa, fb = _floating(a), _floating(b)
        ga = _unbroadcast(div(g, fb), A.shape) if a._requires_grad else None
        gb = _unbroadcast(neg(div(mul(g, fa), mul(fb, fb))), B.shape) if b._requires_grad else None
        return ga, gb

    return _op(A / B, (a, b), backward, "DivBackward0", graph=graph)


@_ieee
def pow(a, b) -> Tensor:
    if isinstance(a, Tensor) and isinstance(b, numbers.Number):
        exponent = b
        dtype = _result_dtype(a, b)
        a = a if a._data.dtype == dtype else a.type(dtype)
        A = a._data
        if A.dtype.kind in "iu" and isinstance(exponent, numbers.Integral) and exponent < 0:
            raise RuntimeError("Integers to negative integer powers are not allowed.")
        out = (A ** exponent).astype(dtype, copy=False)

        def backward_scalar(g):
            if exponent == 0:
                return (np.zeros_like(A),)
            return (g * (exponent * A ** (exponent - 1)),)

        def graph_scalar(g):
            if exponent == 0:
                return (_zeros_like(a),)
            return (mul(g, mul(pow(a, exponent - 1), exponent)),)

        return _op(out, (a,), backward_scalar, "PowBackward0", graph=graph_scalar)
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data
    _not_for(a, "pow", "b")
    out = A ** B

    def backward(g):
        # as torch: a zero exponent passes no gradient to the base, and a zero base raised to a
        # non-negative exponent none to the exponent; elsewhere inf and nan are left to IEEE
        ga = gb = None
        if a._requires_grad:
            ga = _unbroadcast(np.where(B == 0, 0, g * B * A ** (B - 1)), A.shape)
        if b._requires_grad:
            gb = _unbroadcast(np.where((A == 0) & (B >= 0), 0, g * out * np.log(A)), B.shape)
        return ga, gb

    def graph(g):
        ga = gb = None
        if a._requires_grad:
            ga = _unbroadcast(where(B == 0, 0, mul(mul(g, b), pow(a, sub(b, 1)))), A.shape)
        if b._requires_grad:
            gb = _unbroadcast(where((A == 0) & (B >= 0), 0, mul(mul(g, pow(a, b)), log(a))),
                              B.shape)
        return ga, gb

    return _op(out, (a, b), backward, "PowBackward1", graph=graph)


def maximum(a, b) -> Tensor:
    """Elementwise maximum; ties split the gradient evenly, as in PyTorch."""
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data

    def backward(g):
        wa = (A > B) + 0.5 * (A == B)
        return (_unbroadcast(g * wa, A.shape) if a._requires_grad else None,
                _unbroadcast(g * (1 - wa), B.shape) if b._requires_grad else None)

    def graph(g):
        wa = ((A > B) + 0.5 * (A == B)).astype(g._data.dtype)
        return (_unbroadcast(mul(g, wa), A.shape) if a._requires_grad else None,
                _unbroadcast(mul(g, 1 - wa), B.shape) if b._requires_grad else None)

    return _op(np.maximum(A, B), (a, b), backward, "MaximumBackward0", graph=graph)


def minimum(a, b) -> Tensor:
    """Elementwise minimum; ties split the gradient evenly, as in PyTorch."""
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data

    def backward(g):
        wa = (A < B) + 0.5 * (A == B)
        return (_unbroadcast(g * wa, A.shape) if a._requires_grad else None,
                _unbroadcast(g * (1 - wa), B.shape) if b._requires_grad else None)

    def graph(g):
        wa = ((A < B) + 0.5 * (A == B)).astype(g._data.dtype)
        return (_unbroadcast(mul(g, wa), A.shape) if a._requires_grad else None,
                _unbroadcast(mul(g, 1 - wa), B.shape) if b._requires_grad else None)

    return _op(np.minimum(A, B), (a, b), backward, "MinimumBackward0", graph=graph)


def where(condition, a, b) -> Tensor:
    """Pick from ``a`` where ``condition`` holds, else from ``b``; gradients follow the choice."""
    cond = np.asarray(_data(condition), dtype=bool)
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data

    def backward(g):
        return (_unbroadcast(np.where(cond, g, 0), A.shape) if a._requires_grad else None,
                _unbroadcast(np.where(cond, 0, g), B.shape) if b._requires_grad else None)

    def graph(g):
        return (_unbroadcast(where(cond, g, 0), A.shape) if a._requires_grad else None,
                _unbroadcast(where(cond, 0, g), B.shape) if b._requires_grad else None)

    out = np.where(cond, A, B)
    return _op(out, (a, b), backward, "WhereBackward0", graph=graph)


def _integer_divisor_check(B: np.ndarray) -> None:
    if B.dtype.kind in "iu" and not B.all():
        raise RuntimeError("ZeroDivisionError")


@_ieee
def floor_divide(a, b) -> Tensor:
    """``a // b`` rounded toward minus infinity, in the promoted dtype (no gradient, as torch)."""
    a, b = _binary_operands(a, b)
    _not_for(a, "div_floor_cpu", "b")
    _integer_divisor_check(b._data)
    return Tensor._wrap(np.floor_divide(a._data, b._data))


@_ieee
def remainder(a, b) -> Tensor:
    """``a % b`` with the divisor's sign (Python's and torch's rule), in the promoted dtype."""
    a, b = _binary_operands(a, b)
    _not_for(a, "remainder_cpu", "b")
    A, B = a._data, b._data
    _integer_divisor_check(B)

    def backward(g):
        return (_unbroadcast(g, A.shape) if a._requires_grad else None,
                _unbroadcast(-g * np.floor_divide(A, B), B.shape) if b._requires_grad else None)

    def graph(g):
        quotient = np.floor_divide(A, B)
        return (_unbroadcast(g, A.shape) if a._requires_grad else None,
                _unbroadcast(mul(neg(g), quotient), B.shape) if b._requires_grad else None)

    return _op(np.mod(A, B), (a, b), backward, "RemainderBackward0", graph=graph)


# ============================================================================ elementwise unary
def neg(a: Tensor) -> Tensor:
    if a._data.dtype == bool_:
        raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. If you "
                           "are trying to invert a mask, use the `~` or `logical_not()` operator "
                           "instead.")
    return _op(-a._data, (a,), lambda g: (-g,), "NegBackward0", graph=lambda g: (neg(g),))


@_ieee
def exp(a: Tensor) -> Tensor:
    a = _floating(a)
    out = np.exp(a._data)
    return _op(out, (a,), lambda g: (g * out,), "ExpBackward0", graph=lambda g: (mul(g, exp(a)),))


@_ieee
def log(a: Tensor) -> Tensor:
    a = _floating(a)
    A = a._data
    return _op(np.log(A), (a,), lambda g: (g / A,), "LogBackward0", graph=lambda g: (div(g, a),))


@_ieee
def sqrt(a: Tensor) -> Tensor:
    a = _floating(a)
    out = np.sqrt(a._data)
    return _op(out, (a,), lambda g: (g / (2 * out),), "SqrtBackward0",
               graph=lambda g: (div(g, mul(sqrt(a), 2)),))


def abs(a: Tensor) -> Tensor:
    _not_for(a, "abs_cpu", "b")
    A = a._data
    return _op(np.abs(A), (a,), lambda g: (g * np.sign(A),), "AbsBackward0",
               graph=lambda g: (mul(g, np.sign(A).astype(g._data.dtype)),))


def tanh(a: Tensor) -> Tensor:
    a = _floating(a)
    out = np.tanh(a._data)
    def graph(g):
        t = tanh(a)
        return (mul(g, sub(1, mul(t, t))),)

    return _op(out, (a,), lambda g: (g * (1 - out * out),), "TanhBackward0", graph=graph)


def sigmoid(a: Tensor) -> Tensor:
    a = _floating(a)
    A = a._data
    # exp of a non-positive number only: no overflow for large |x|
    e = np.exp(-np.abs(A))
    out = np.where(A >= 0, 1 / (1 + e), e / (1 + e)).astype(A.dtype, copy=False)
    def graph(g):
        s = sigmoid(a)
        return (mul(mul(g, s), sub(1, s)),)

    return _op(out, (a,), lambda g: (g * out * (1 - out),), "SigmoidBackward0", graph=graph)


def relu(a: Tensor) -> Tensor:
    if a._data.dtype == bool_:
        raise RuntimeError("Boolean inputs not supported for relu")
    out = np.maximum(a._data, 0)
    return _op(out, (a,), lambda g: (g * (out > 0),), "ReluBackward0",
               graph=lambda g: (mul(g, (out > 0).astype(g._data.dtype)),))


def clamp(a: Tensor, min=None, max=None) -> Tensor:
    """Clip to [min, max]; the gradient flows where the input lies inside the bounds."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        # tensor bounds take the gradient where they are the result, as in torch
        dtype = _result_dtype(*(v for v in (a, min, max) if v is not None))
        out = a if a._data.dtype == dtype else a.type(dtype)
        if min is not None:
            out = where(out >= min, out, min)
        if max is not None:
            out = where(out <= max, out, max)
        return out
    dtype = _result_dtype(a, *(v for v in (min, max) if v is not None))
    a = a if a._data.dtype == dtype else a.type(dtype)
    A = a._data
    lo, hi = _data(min), _data(max)
    out = A
    if lo is not None:
        out = np.maximum(out, lo)
    if hi is not None:
        out = np.minimum(out, hi)
    out = out.astype(A.dtype, copy=False)

    def inside():
        keep = np.ones(A.shape, dtype=bool)
        if lo is not None:
            keep &= A >= lo
        if hi is not None:
            keep &= A <= hi
        return keep

    def backward(g):
        return (g * inside(),)

    def graph(g):
        return (mul(g, inside().astype(g._data.dtype)),)

    return _op(out, (a,), backward, "ClampBackward1", graph=graph)


# ============================================================================ matmul
def matmul(a, b) -> Tensor:
    """Matrix product with NumPy/PyTorch rules for 1-D, 2-D and batched operands."""
    a, b = _binary_operands(a, b)
    A, B = a._data, b._data
    if A.ndim == 0 or B.ndim == 0:
        raise RuntimeError("both arguments to matmul need to be at least 1D")
    if A.shape[-1] != B.shape[-2 if B.ndim > 1 else 0]:
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({_shape_str(A)} and {_shape_str(B)})"
        )

    def backward(g):
        if A.ndim == 2 and B.ndim == 2:
            return (g @ B.T if a._requires_grad else None, A.T @ g if b._requires_grad else None)
        if A.ndim == 1 and B.ndim == 1:  # a dot product: g is 0-d
            return (g * B if a._requires_grad else None, g * A if b._requires_grad else None)
        a2 = A if A.ndim > 1 else A[None, :]
        b2 = B if B.ndim > 1 else B[:, None]
        g2 = g
        if A.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        if B.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        ga = gb = None
        if a._requires_grad:
            ga = g2 @ np.swapaxes(b2, -1, -2)
            if A.ndim == 1:
                ga = ga[..., 0, :]
            ga = _unbroadcast(ga, A.shape)
        if b._requires_grad:
            gb = np.swapaxes(a2, -1, -2) @ g2
            if B.ndim == 1:
                gb = gb[..., 0]
            gb = _unbroadcast(gb, B.shape)
        return ga, gb

    def graph(g):
        if A.ndim == 1 and B.ndim == 1:
            return (mul(g, b) if a._requires_grad else None,
                    mul(g, a) if b._requires_grad else None)
        a2 = a if A.ndim > 1 else unsqueeze(a, 0)
        b2 = b if B.ndim > 1 else unsqueeze(b, 1)
        g2 = g
        if A.ndim == 1:
            g2 = unsqueeze(g2, -2)
        if B.ndim == 1:
            g2 = unsqueeze(g2, -1)
        ga = gb = None
        if a._requires_grad:
            ga = matmul(g2, transpose(b2, -1, -2))
            ga = _unbroadcast(squeeze(ga, -2) if A.ndim == 1 else ga, A.shape)
        if b._requires_grad:
            gb = matmul(transpose(a2, -1, -2), g2)
            gb = _unbroadcast(squeeze(gb, -1) if B.ndim == 1 else gb, B.shape)
        return ga, gb

    name = "MmBackward0" if A.ndim == B.ndim == 2 else "MatmulBackward0"
    return _op(A @ B, (a, b), backward, name, graph=graph)


def _shape_str(arr) -> str:
    return "x".join(str(n) for n in (arr.shape if arr.ndim > 1 else (1, arr.shape[0])))


# ============================================================================ reductions
def sum(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    A = a._data
    dims = _normalize_dims(dim, A.ndim) if A.ndim else None
    out = A.sum(axis=dims, keepdims=keepdim)
    if A.dtype.kind in "biu":  # torch sums every integer and bool type in int64
        out = out.astype(int64)

    def backward(g):
        return (_expand_reduced(g, A.shape, dims, keepdim),)

    def graph(g):
        return (_expand_reduced_tensor(g, A.shape, dims, keepdim),)

    return _op(np.asarray(out), (a,), backward, "SumBackward1" if dims else "SumBackward0",
               graph=graph)


def mean(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    A = a._data
    if A.dtype.kind not in "fc":
        raise RuntimeError(
            f"mean(): could not infer output dtype. Input dtype must be either a floating point "
            f"or complex dtype. Got: {_torch_name(A.dtype)}"
        )
    dims = _normalize_dims(dim, A.ndim) if A.ndim else None
    out = np.asarray(A.mean(axis=dims, keepdims=keepdim))
    count = A.size // out.size if out.size else 0  # the module's max shadows the builtin

    def backward(g):
        return (_expand_reduced(g / count, A.shape, dims, keepdim),)

    def graph(g):
        return (_expand_reduced_tensor(div(g, count), A.shape, dims, keepdim),)

    return _op(out, (a,), backward, "MeanBackward1" if dims else "MeanBackward0", graph=graph)


def var(a: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
    """Variance with Bessel's correction by default (``correction=1``), as ``torch.var``."""
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    if a._data.dtype.kind not in "fc":
        raise RuntimeError("std and var only support floating point and complex dtypes")
    A = a._data
    dims = _normalize_dims(dim, A.ndim) if A.ndim else None
    n = A.size if dims is None else int(np.prod([A.shape[d] for d in dims]))
    mu = A.mean(axis=dims, keepdims=True)
    centered = A - mu
    denom = n - correction
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray((centered * centered).sum(axis=dims, keepdims=keepdim) / denom)
    out = out.astype(A.dtype, copy=False)

    def backward(g):
        gg = g if keepdim or dims is None else np.expand_dims(g, dims)
        return ((2.0 / denom) * gg * centered,)

    def graph(g):
        gg = g if keepdim or dims is None else _unsqueeze_dims(g, dims)
        centered_t = sub(a, mean(a, dims, keepdim=True))
        return (mul(mul(gg, centered_t), 2.0 / denom),)

    return _op(out, (a,), backward, "VarBackward0", graph=graph)


def std(a: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
    """Standard deviation; where it is 0 the gradient is 0 (not nan), as in torch."""
    v = var(a, dim, unbiased=unbiased, keepdim=keepdim, correction=correction)
    out = np.sqrt(v._data)

    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.where(out == 0, 0, g / (2 * out)).astype(out.dtype, copy=False),)

    def graph(g):
        return (where(out == 0, 0, div(g, mul(sqrt(v), 2))),)

    return _op(out, (v,), backward, "StdBackward0", graph=graph)


def amax(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Maximum over ``dim``; equal maxima share the gradient evenly."""
    return _extreme(a, dim, keepdim, np.max, "AmaxBackward0")


def amin(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Minimum over ``dim``; equal minima share the gradient evenly."""
    return _extreme(a, dim, keepdim, np.min, "AminBackward0")


def _extreme(a, dim, keepdim, fn, name):
    A = a._data
    dims = _normalize_dims(dim, A.ndim) if A.ndim else None
    if A.size == 0:
        raise RuntimeError(f"{name[:4].lower()}(): Expected reduction dim to be specified for input.numel() == 0.")
    out = np.asarray(fn(A, axis=dims, keepdims=keepdim))

    def backward(g):
        kept = out if keepdim or dims is None else np.expand_dims(out, dims)
        mask = A == kept
        count = mask.sum(axis=dims, keepdims=True)
        gg = g if keepdim or dims is None else np.expand_dims(g, dims)
        return (mask * (gg / count),)

    def graph(g):
        kept = out if keepdim or dims is None else np.expand_dims(out, dims)
        mask = A == kept
        share = (mask / mask.sum(axis=dims, keepdims=True)).astype(g._data.dtype)
        gg = g if keepdim or dims is None else _unsqueeze_dims(g, dims)
        return (mul(gg, share),)

    return _op(out, (a,), backward, name, graph=graph)


def max(a: Tensor, dim=None, keepdim: bool = False):
    """Without ``dim`` the largest element; with ``dim`` a (values, indices) pair, as torch.max.

    ``max(a, b)`` with a Tensor ``b`` is the elementwise ``maximum``.
    """
    if isinstance(dim, Tensor):
        return maximum(a, dim)
    if dim is None:
        return _extreme(a, None, False, np.max, "MaxBackward1")
    return _extreme_dim(a, dim, keepdim, np.argmax, "MaxBackward0")


def min(a: Tensor, dim=None, keepdim: bool = False):
    """Without ``dim`` the smallest element; with ``dim`` a (values, indices) pair, as torch.min.

    ``min(a, b)`` with a Tensor ``b`` is the elementwise ``minimum``.
    """
    if isinstance(dim, Tensor):
        return minimum(a, dim)
    if dim is None:
        return _extreme(a, None, False, np.min, "MinBackward1")
    return _extreme_dim(a, dim, keepdim, np.argmin, "MinBackward0")


def _extreme_dim(a, dim, keepdim, argfn, name):
    A = a._data
    d = _normalize_dims(dim, A.ndim)[0] if A.ndim else None
    if d is None:
        idx = np.asarray(0)
        values = A.copy()
    else:
        idx = np.expand_dims(argfn(A, axis=d), d)
        values = np.take_along_axis(A, idx, axis=d)
        if not keepdim:
            values = values.squeeze(d)

    def backward(g):
        if d is None:
            return (g.copy(),)
        gg = g if keepdim else np.expand_dims(g, d)
        grad = np.zeros_like(A)
        np.put_along_axis(grad, idx, gg, axis=d)
        return (grad,)

    def graph(g):
        if d is None:
            return (g,)
        gg = g if keepdim else unsqueeze(g, d)
        hit = np.zeros(A.shape, dtype=g._data.dtype)
        np.put_along_axis(hit, idx, 1, axis=d)
        return (mul(gg, hit),)

    out_idx = idx if (keepdim or d is None) else idx.squeeze(d)
    result_type = return_types.max if name.startswith("Max") else return_types.min
    return result_type(_op(values, (a,), backward, name, graph=graph),
                       Tensor._wrap(out_idx.astype(int64)))


# ============================================================================ softmax family
def softmax(a: Tensor, dim: int) -> Tensor:
    """Numerically stable softmax along ``dim``."""
    _not_for(a, "softmax_lastdim_kernel_impl", "biu")
    A = a._data
    d = _normalize_dims(dim, A.ndim)[0] if A.ndim else None
    e = np.exp(A - A.max(axis=d, keepdims=True))
    out = e / e.sum(axis=d, keepdims=True)

    def backward(g):
        return (out * (g - (g * out).sum(axis=d, keepdims=True)),)

    def graph(g):
        s = softmax(a, dim)
        return (mul(s, sub(g, sum(mul(g, s), d, keepdim=True))),)

    return _op(out, (a,), backward, "SoftmaxBackward0", graph=graph)


def log_softmax(a: Tensor, dim: int) -> Tensor:
    """Numerically stable log-softmax along ``dim`` (log-sum-exp with the max subtracted)."""
    _not_for(a, "log_softmax_lastdim_kernel_impl", "biu")
    A = a._data
    d = _normalize_dims(dim, A.ndim)[0] if A.ndim else None
    shifted = A - A.max(axis=d, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=d, keepdims=True))

    def backward(g):
        return (g - np.exp(out) * g.sum(axis=d, keepdims=True),)

    def graph(g):
        return (sub(g, mul(exp(log_softmax(a, dim)), sum(g, d, keepdim=True))),)

    return _op(out, (a,), backward, "LogSoftmaxBackward0", graph=graph)


# ============================================================================ shape ops
def reshape(a: Tensor, shape) -> Tensor:
    A = a._data
    try:
        out = A.reshape(shape)
    except ValueError:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {A.size}") from None
    return _op(out, (a,), lambda g: (g.reshape(A.shape),), "ViewBackward0",
               graph=lambda g: (reshape(g, A.shape),))


def expand(a: Tensor, shape) -> Tensor:
    A = a._data
    shape = tuple(A.shape[i - (len(shape) - A.ndim)] if n == -1 else n for i, n in enumerate(shape))
    try:
        out = np.broadcast_to(A, shape)
    except ValueError:
        raise RuntimeError(
            f"The expanded size of the tensor must match the existing size: {A.shape} to {shape}"
        ) from None
    return _op(out, (a,), lambda g: (_unbroadcast(g, A.shape),), "ExpandBackward0",
               graph=lambda g: (_unbroadcast(g, A.shape),))


def transpose(a: Tensor, dim0: int, dim1: int) -> Tensor:
    A = a._data
    if A.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return _op(A, (a,), lambda g: (g,), "TransposeBackward0", graph=lambda g: (g,))
    d0, d1 = _normalize_dims((dim0, dim1), A.ndim)
    return _op(np.swapaxes(A, d0, d1), (a,), lambda g: (np.swapaxes(g, d0, d1),),
               "TransposeBackward0", graph=lambda g: (transpose(g, d0, d1),))


def permute(a: Tensor, dims) -> Tensor:
    A = a._data
    dims = _normalize_dims(tuple(dims), A.ndim) if A.ndim else ()
    if sorted(dims) != list(range(A.ndim)):
        raise RuntimeError(f"permute(): dims {dims} do not match a tensor of {A.ndim} dimensions")
    inverse = tuple(np.argsort(dims))
    return _op(np.transpose(A, dims), (a,), lambda g: (np.transpose(g, inverse),),
               "PermuteBackward0", graph=lambda g: (permute(g, inverse),))


def squeeze(a: Tensor, dim=None) -> Tensor:
    A = a._data
    if dim is None:
        out = A.squeeze()
    else:
        dims = tuple(d for d in _normalize_dims(dim, A.ndim) if A.ndim and A.shape[d] == 1)
        out = A.squeeze(dims) if dims else A
    return _op(out, (a,), lambda g: (g.reshape(A.shape),), "SqueezeBackward0",
               graph=lambda g: (reshape(g, A.shape),))


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    A = a._data
    d = _normalize_dims(dim, A.ndim + 1)[0]
    return _op(np.expand_dims(A, d), (a,), lambda g: (g.reshape(A.shape),), "UnsqueezeBackward0",
               graph=lambda g: (reshape(g, A.shape),))


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    A = a._data
    if A.ndim == 0:
        return reshape(a, (1,))
    s, e = _normalize_dims((start_dim, end_dim), A.ndim)
    shape = A.shape[:s] + (int(np.prod(A.shape[s : e + 1])),) + A.shape[e + 1 :]
    return reshape(a, shape)


def getitem(a: Tensor, key) -> Tensor:
    """Indexing and slicing; repeated advanced indices accumulate their gradients."""
    A = a._data
    key = _index_key(key)
    out = A[key]
    basic = _is_basic_index(key)

    def backward(g):
        grad = np.zeros_like(A)
        if basic:
            grad[key] = g
        else:
            np.add.at(grad, key, g)
        return (grad,)

    def graph(g):
        return (_index_add_zeros(A.shape, key, g),)

    if basic:
        out = out if isinstance(out, np.ndarray) else np.asarray(out)
    name = _basic_index_name(key, A.shape) if basic else "IndexBackward0"
    return _op(np.asarray(out), (a,), backward, name, graph=graph)


def _index_add_zeros(shape: tuple, key, g: Tensor) -> Tensor:
    """Zeros of ``shape`` plus ``g`` at ``key`` (repeats add): indexing's gradient, as an op."""
    basic = _is_basic_index(key)
    G = g._data
    out = np.zeros(shape, dtype=G.dtype)
    if basic:
        out[key] = G
    else:
        np.add.at(out, key, G)
    return _op(out, (g,), lambda gg: (gg[key],), "IndexPutBackward0",
               graph=lambda gg: (getitem(gg, key),))


def index_put(a: Tensor, key, value) -> Tensor:
    """Out-of-place ``a[key] = value``, differentiable in both ``a`` and ``value``."""
    a = _as_tensor(a)
    value = _as_tensor(value, a)
    if value._data.dtype != a._data.dtype:  # assignment keeps the target's dtype
        value = value.type(a._data.dtype)
    A, V = a._data, value._data
    out = A.copy()
    out[key] = V

    def backward(g):
        ga = gv = None
        if a._requires_grad:
            ga = g.copy()
            ga[key] = 0
        if value._requires_grad:
            gv = _unbroadcast(np.broadcast_to(g[key], np.shape(out[key])), V.shape)
        return ga, gv

    def graph(g):
        ga = index_put(g, key, 0) if a._requires_grad else None
        gv = _unbroadcast(getitem(g, key), V.shape) if value._requires_grad else None
        return ga, gv

    return _op(out, (a, value), backward, "IndexPutBackward0", graph=graph)


def _same_dtype(tensors: list) -> list:
    """Cast (differentiably) to the promoted dtype of all, as torch.cat and torch.stack do."""
    if not tensors:
        return tensors
    dtype = functools.reduce(_promote_types, (t._data.dtype for t in tensors))
    return [t if t._data.dtype == dtype else t.type(dtype) for t in tensors]


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate along an existing dimension."""
    tensors = _same_dtype([_as_tensor(t) for t in tensors])
    if not tensors:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    arrays = [t._data for t in tensors]
    d = _normalize_dims(dim, arrays[0].ndim)[0]
    try:
        out = np.concatenate(arrays, axis=d)
    except ValueError as exc:
        raise RuntimeError(f"torch.cat(): {exc}") from None
    bounds = np.cumsum([x.shape[d] for x in arrays])[:-1]

    def backward(g):
        return tuple(p if t._requires_grad else None
                     for p, t in zip(np.split(g, bounds, axis=d), tensors))

    def graph(g):
        starts = [0, *bounds]
        return tuple(getitem(g, (slice(None),) * d + (slice(lo, lo + x.shape[d]),))
                     if t._requires_grad else None
                     for lo, x, t in zip(starts, arrays, tensors))

    return _op(out, tuple(tensors), backward, "CatBackward0", graph=graph)


def stack(tensors, dim: int = 0) -> Tensor:
    """Join along a new dimension."""
    tensors = _same_dtype([_as_tensor(t) for t in tensors])
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    arrays = [t._data for t in tensors]
    d = _normalize_dims(dim, arrays[0].ndim + 1)[0]
    try:
        out = np.stack(arrays, axis=d)
    except ValueError as exc:
        raise RuntimeError(f"stack expects each tensor to be equal size: {exc}") from None

    def backward(g):
        return tuple(np.take(g, i, axis=d) if t._requires_grad else None
                     for i, t in enumerate(tensors))

    def graph(g):
        return tuple(getitem(g, (slice(None),) * d + (i,)) if t._requires_grad else None
                     for i, t in enumerate(tensors))

    return _op(out, tuple(tensors), backward, "StackBackward0", graph=graph)
