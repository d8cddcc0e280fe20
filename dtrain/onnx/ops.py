"""Converters for tensor ops: arithmetic, reductions, softmax, shape ops, indexing, casts.

Each takes the tracer, the op's result (for its shape and dtype) and the op's arguments by
their names in dtrain's signature, appends nodes, and returns the result's value name(s).
"""

from __future__ import annotations

import numbers

import numpy as np

from .graph import ExportError
from .registry import converts
from .tracing import onnx_dtype

T = "dtrain.autograd.tensor"
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


def axes_of(dim, ndim: int):
    """dtrain's dims as a sorted tuple of non-negative axes (None: all)."""
    if dim is None or ndim == 0:
        return None
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    return tuple(sorted(int(d) % ndim for d in dims))


def reduce(tr, op_type: str, x: str, axes, keepdim: bool) -> str:
    """A Reduce* node; the axes are an input from opset 18 (ReduceSum: 13), an attribute before."""
    keep = int(bool(keepdim))
    if axes is None:
        return tr.g.op(op_type, [x], keepdims=keep)
    if op_type == "ReduceSum" or tr.opset >= 18:
        return tr.g.op(op_type, [x, tr.g.ints(axes)], keepdims=keep)
    return tr.g.op(op_type, [x], axes=list(axes), keepdims=keep)


# ------------------------------------------------------------------------- elementwise
def _binary(op_type: str):
    def convert(tr, out, a, b):
        return tr.g.op(op_type, [tr.name(a, out.dtype), tr.name(b, out.dtype)])

    return convert


for _name, _op_type in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div"),
                        ("maximum", "Max"), ("minimum", "Min"), ("matmul", "MatMul")):
    converts(T, _name)(_binary(_op_type))


@converts(T, "pow")
def _pow(tr, out, a, b):
    return tr.g.op("Pow", [tr.name(a, out.dtype), tr.name(b, out.dtype)])


def _unary(op_type: str):
    def convert(tr, out, a):
        return tr.g.op(op_type, [tr.name(a, out.dtype)])

    return convert


for _name, _op_type in (("neg", "Neg"), ("exp", "Exp"), ("log", "Log"), ("sqrt", "Sqrt"),
                        ("abs", "Abs"), ("tanh", "Tanh"), ("sigmoid", "Sigmoid"),
                        ("relu", "Relu")):
    converts(T, _name)(_unary(_op_type))


@converts(T, "clamp")
def _clamp(tr, out, a, min=None, max=None):
    x = tr.name(a, out.dtype)
    if all(v is None or isinstance(v, numbers.Number) for v in (min, max)):
        lo = "" if min is None else tr.name(min, out.dtype)
        hi = "" if max is None else tr.name(max, out.dtype)
        return tr.g.op("Clip", [x, lo, hi] if hi else [x, lo])
    if min is not None:
        x = tr.g.op("Max", [x, tr.name(min, out.dtype)])
    if max is not None:
        x = tr.g.op("Min", [x, tr.name(max, out.dtype)])
    return x


# -------------------------------------------------------------------------- reductions
@converts(T, "sum")
def _sum(tr, out, a, dim=None, keepdim=False):
    return reduce(tr, "ReduceSum", tr.name(a, out.dtype), axes_of(dim, a.ndim), keepdim)


@converts(T, "mean")
def _mean(tr, out, a, dim=None, keepdim=False):
    return reduce(tr, "ReduceMean", tr.name(a), axes_of(dim, a.ndim), keepdim)


@converts(T, "amax")
def _amax(tr, out, a, dim=None, keepdim=False):
    return reduce(tr, "ReduceMax", tr.name(a), axes_of(dim, a.ndim), keepdim)


@converts(T, "amin")
def _amin(tr, out, a, dim=None, keepdim=False):
    return reduce(tr, "ReduceMin", tr.name(a), axes_of(dim, a.ndim), keepdim)


def _extreme(op_type: str, arg_type: str):
    def convert(tr, out, a, dim=None, keepdim=False):
        x = tr.name(a)
        if dim is None:
            return reduce(tr, op_type, x, None, False)
        if a.ndim == 0:
            return x, tr.g.const(np.asarray(0, dtype=np.int64))
        axis = axes_of(dim, a.ndim)[0]
        values = reduce(tr, op_type, x, (axis,), keepdim)
        return values, tr.g.op(arg_type, [x], axis=axis, keepdims=int(bool(keepdim)))

    return convert


converts(T, "max")(_extreme("ReduceMax", "ArgMax"))
converts(T, "min")(_extreme("ReduceMin", "ArgMin"))


@converts(T, "var")
def _var(tr, out, a, dim=None, unbiased=None, keepdim=False, correction=None):
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    axes = axes_of(dim, a.ndim)
    x = tr.name(a)
    mean = reduce(tr, "ReduceMean", x, axes, True)
    centered = tr.g.op("Sub", [x, mean])
    total = reduce(tr, "ReduceSum", tr.g.op("Mul", [centered, centered]), axes, keepdim)
    # the count comes from the runtime shape, so a variance over the batch stays right
    count = tr.g.op("Div", [tr.g.op("Size", [x]), tr.g.op("Size", [mean])])
    count = tr.g.op("Cast", [count], to=onnx_dtype(out.dtype))
    denominator = tr.g.op("Sub", [count, tr.name(correction, out.dtype)])
    return tr.g.op("Div", [total, denominator])


@converts(T, "std")
def _std(tr, out, a, dim=None, unbiased=None, keepdim=False, correction=None):
    variance = _var(tr, out, a, dim, unbiased, keepdim, correction)
    return tr.g.op("Sqrt", [variance])


def _argreduce(op_type: str):
    def convert(tr, out, self, dim=None, keepdim=False):
        x = tr.name(self)
        if dim is None:
            flat = tr.g.op("Reshape", [x, tr.g.ints([-1])])
            return tr.g.op(op_type, [flat], axis=0, keepdims=0)
        axis = axes_of(dim, self.ndim)[0] if self.ndim else 0
        return tr.g.op(op_type, [x], axis=axis, keepdims=int(bool(keepdim)))

    return convert


converts("Tensor", "argmax")(_argreduce("ArgMax"))
converts("Tensor", "argmin")(_argreduce("ArgMin"))


# ----------------------------------------------------------------------------- softmax
def _softmax_like(op_type: str):
    def convert(tr, out, a, dim):
        if a.ndim == 0:
            raise ExportError(f"ONNX export: {op_type} of a 0-d tensor")
        return tr.g.op(op_type, [tr.name(a)], axis=axes_of(dim, a.ndim)[0])

    return convert


converts(T, "softmax")(_softmax_like("Softmax"))
converts(T, "log_softmax")(_softmax_like("LogSoftmax"))


# -------------------------------------------------------------------------- shape ops
def reshape_to(tr, a, shape) -> str:
    """Reshape ``a`` to ``shape``, keeping a batch dim 0 symbolic (ONNX's 0 copies it)."""
    target = [int(n) for n in shape]
    if target and tr.batched(a) and target[0] == a.shape[0]:
        target[0] = 0
    return tr.g.op("Reshape", [tr.name(a), tr.g.ints(target)])


@converts(T, "reshape")
def _reshape(tr, out, a, shape):
    return reshape_to(tr, a, shape)


@converts(T, "flatten")
def _flatten(tr, out, a, start_dim=0, end_dim=-1):
    return flatten(tr, a, start_dim, end_dim)


def flatten(tr, a, start_dim: int, end_dim: int) -> str:
    """Merge dims ``start_dim..end_dim`` without fixing any other dim's size."""
    if a.ndim == 0:
        return tr.g.op("Reshape", [tr.name(a), tr.g.ints([1])])
    s, e = start_dim % a.ndim, end_dim % a.ndim
    if s == e:
        return tr.name(a)
    if s == 1 and e == a.ndim - 1:
        return tr.g.op("Flatten", [tr.name(a)], axis=1)
    target = [0] * s + [-1] + [int(n) for n in a.shape[e + 1:]]
    return tr.g.op("Reshape", [tr.name(a), tr.g.ints(target)])


@converts(T, "expand")
def _expand(tr, out, a, shape):
    # Expand broadcasts, so every dim the input already has can be given as 1
    target = list(out.shape)
    offset = len(target) - a.ndim
    for i, n in enumerate(a.shape):
        if target[offset + i] == n:
            target[offset + i] = 1
    return tr.g.op("Expand", [tr.name(a), tr.g.ints(target)])


@converts(T, "transpose")
def _transpose(tr, out, a, dim0, dim1):
    if a.ndim < 2:
        return tr.name(a)
    perm = list(range(a.ndim))
    d0, d1 = dim0 % a.ndim, dim1 % a.ndim
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return tr.g.op("Transpose", [tr.name(a)], perm=perm)


@converts(T, "permute")
def _permute(tr, out, a, dims):
    return tr.g.op("Transpose", [tr.name(a)], perm=[int(d) % a.ndim for d in dims])


@converts(T, "squeeze")
def _squeeze(tr, out, a, dim=None):
    if dim is None:
        axes = [i for i, n in enumerate(a.shape) if n == 1 and not (i == 0 and tr.batched(a))]
    else:
        axes = [d for d in axes_of(dim, a.ndim) or () if a.shape[d] == 1]
    if not axes:
        return tr.name(a)
    return tr.g.op("Squeeze", [tr.name(a), tr.g.ints(axes)])


@converts(T, "unsqueeze")
def _unsqueeze(tr, out, a, dim):
    return tr.g.op("Unsqueeze", [tr.name(a), tr.g.ints([dim % (a.ndim + 1)])])


@converts(T, "cat")
def _cat(tr, out, tensors, dim=0):
    axis = dim % out.ndim
    return tr.g.op("Concat", [tr.name(x, out.dtype) for x in tensors], axis=axis)


@converts(T, "stack")
def _stack(tr, out, tensors, dim=0):
    axes = tr.g.ints([dim % out.ndim])
    parts = [tr.g.op("Unsqueeze", [tr.name(x, out.dtype), axes]) for x in tensors]
    return tr.g.op("Concat", parts, axis=dim % out.ndim)


@converts(T, "getitem")
def _getitem(tr, out, a, key):
    """Basic indexing (ints, slices, None, ...) as Slice, Gather and Unsqueeze."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(isinstance(p, bool) or not isinstance(p, (numbers.Integral, slice, type(None),
                                                       type(Ellipsis))) for p in parts):
        raise ExportError("ONNX export: no converter for op 'getitem' with a tensor, list or "
                          "bool index (only ints, slices, None and ... are supported)")
    used = sum(1 for p in parts if p is not None and p is not Ellipsis)
    fill = [slice(None)] * (a.ndim - used)
    if any(p is Ellipsis for p in parts):
        at = next(i for i, p in enumerate(parts) if p is Ellipsis)
        expanded = [*parts[:at], *fill, *(p for p in parts[at + 1:] if p is not Ellipsis)]
    else:
        expanded = [*parts, *fill]
    slices, picks, new_axes = [], [], []
    axis = position = 0
    for p in expanded:
        if p is None:
            new_axes.append(position)
            position += 1
        elif isinstance(p, numbers.Integral):
            picks.append((axis, int(p)))
            axis += 1
        else:
            if p != slice(None):
                slices.append((axis, p))
            axis += 1
            position += 1
    x = tr.name(a)
    if slices:
        starts, ends, steps = [], [], []
        for _, s in slices:
            step = 1 if s.step is None else int(s.step)
            starts.append(s.start if s.start is not None else (0 if step > 0 else _INT64_MAX))
            ends.append(s.stop if s.stop is not None else (_INT64_MAX if step > 0
                                                            else _INT64_MIN))
            steps.append(step)
        x = tr.g.op("Slice", [x, tr.g.ints(starts), tr.g.ints(ends),
                             tr.g.ints([ax for ax, _ in slices]), tr.g.ints(steps)])
    for ax, index in sorted(picks, reverse=True):  # from the last, so earlier axes keep places
        x = tr.g.op("Gather", [x, tr.g.const(np.asarray(index, dtype=np.int64))], axis=ax)
    if new_axes:
        x = tr.g.op("Unsqueeze", [x, tr.g.ints(new_axes)])
    return x


# ------------------------------------------------------------------------ casts, copies
@converts("Tensor", "type")
def _type(tr, out, self, dtype):
    return tr.g.op("Cast", [tr.name(self)], to=onnx_dtype(out.dtype))


@converts("Tensor", "clone")
def _clone(tr, out, self):
    return tr.g.op("Identity", [tr.name(self)])


@converts("Tensor", "detach")
def _detach(tr, out, self):
    return tr.name(self)


@converts("dtrain.autograd.creation", "tensor", "as_tensor")
def _tensor(tr, out, data, dtype=None, device=None, requires_grad=False):
    return tr.g.op("Identity", [tr.name(data, out.dtype)])


def _constant_of_shape(tr, out, like, value) -> str:
    from onnx import numpy_helper

    fill = numpy_helper.from_array(np.asarray([value], dtype=out.dtype))
    return tr.g.op("ConstantOfShape", [tr.g.op("Shape", [tr.name(like)])], value=fill)


@converts("dtrain.autograd.creation", "zeros_like")
def _zeros_like(tr, out, t, dtype=None, device=None, requires_grad=False):
    return _constant_of_shape(tr, out, t, 0)


@converts("dtrain.autograd.creation", "ones_like")
def _ones_like(tr, out, t, dtype=None, device=None, requires_grad=False):
    return _constant_of_shape(tr, out, t, 1)


@converts("dtrain.autograd.creation", "full_like")
def _full_like(tr, out, t, fill_value, dtype=None, device=None, requires_grad=False):
    return _constant_of_shape(tr, out, t, fill_value)
