"""More of torch's math that scripts type: elementwise functions (``sin``, ``floor``, ``log1p``,
...), ``prod`` and ``logsumexp``, ``bmm``/``outer``/``dot``/``einsum``, ``tril``/``triu``,
``flip`` and ``roll``.

Ops with their own kernel define the backward right below the forward; the rest are one-liners
over differentiable ops, as ``tensor.py`` does.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import tensor as _t
from .tensor import Tensor


def _unary(np_fn, derivative, name: str):
    """A differentiable float op: ``derivative(A, out)`` gives d out / d A elementwise."""

    @_t._ieee
    def op(input: Tensor) -> Tensor:
        a = _t._floating(input)
        A = a._data
        out = np_fn(A)
        return _t._op(out, (a,), lambda g: (g * derivative(A, out),), name)

    return op


sin = _unary(np.sin, lambda A, out: np.cos(A), "SinBackward0")
cos = _unary(np.cos, lambda A, out: -np.sin(A), "CosBackward0")
log1p = _unary(np.log1p, lambda A, out: 1 / (1 + A), "Log1PBackward0")
expm1 = _unary(np.expm1, lambda A, out: out + 1, "Expm1Backward0")
log2 = _unary(np.log2, lambda A, out: 1 / (A * math.log(2)), "Log2Backward0")
log10 = _unary(np.log10, lambda A, out: 1 / (A * math.log(10)), "Log10Backward0")


def _step(np_fn, name: str):
    """A piecewise-constant op (``floor``, ``round``, ...): its gradient is zero; ints pass."""

    def op(input: Tensor) -> Tensor:
        A = input._data
        if A.dtype.kind in "iub":
            return Tensor._wrap(A.copy())
        return _t._op(np_fn(A), (input,), lambda g: (np.zeros_like(g),), name)

    return op


floor = _step(np.floor, "FloorBackward0")
ceil = _step(np.ceil, "CeilBackward0")
trunc = _step(np.trunc, "TruncBackward0")
_round_half_even = _step(np.round, "RoundBackward0")


def round(input: Tensor, *, decimals: int = 0) -> Tensor:
    """Round half to even, as torch does; ``decimals`` as in ``torch.round``."""
    if decimals == 0:
        return _round_half_even(input)
    scale = 10.0 ** decimals
    return _round_half_even(input * scale) / scale


def square(input: Tensor) -> Tensor:
    return input * input


def reciprocal(input: Tensor) -> Tensor:
    return 1 / _t._floating(input)


def rsqrt(input: Tensor) -> Tensor:
    return 1 / _t.sqrt(input)


def prod(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """The product of the elements (over ``dim``); the gradient handles zeros exactly."""
    a = input if dtype is None else input.type(dtype)
    A = a._data
    axis = None if dim is None else _t._normalize_dims(dim, max(A.ndim, 1))[0]
    if A.ndim == 0:
        axis = None
    out = np.prod(A, axis=axis, keepdims=keepdim and axis is not None)
    if A.dtype.kind == "b":
        out = out.astype(np.int64)

    def backward(g):
        g_full = g if axis is None or keepdim else np.expand_dims(g, axis)
        moved = np.moveaxis(A, axis, -1) if axis is not None else A.reshape(-1)
        # product of the others: exclusive prefix times exclusive suffix products
        ones = np.ones(moved.shape[:-1] + (1,), A.dtype)
        before = np.cumprod(np.concatenate([ones, moved[..., :-1]], axis=-1), axis=-1)
        after = np.flip(np.cumprod(np.flip(np.concatenate([moved[..., 1:], ones], axis=-1),
                                           -1), axis=-1), -1)
        others = before * after
        others = np.moveaxis(others, -1, axis) if axis is not None else others.reshape(A.shape)
        return (g_full * others,)

    return _t._op(np.asarray(out), (a,), backward, "ProdBackward0",
                  differentiable=A.dtype.kind in "fc")


def logsumexp(input: Tensor, dim, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(input), dim))`` computed stably (the max is shifted out)."""
    a = _t._floating(input)
    shift = _t.amax(a, dim, keepdim=True).detach()
    shift = Tensor._wrap(np.where(np.isfinite(shift._data), shift._data, 0))
    out = _t.log(_t.sum(_t.exp(a - shift), dim, keepdim=True)) + shift
    return out if keepdim else out.squeeze(dim)


def bmm(input: Tensor, mat2: Tensor) -> Tensor:
    """Batched matrix product of two 3-D tensors (b, n, m) @ (b, m, p)."""
    if input.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError(f"batch1 must be a 3D tensor and batch2 must be a 3D tensor, got "
                           f"{input.ndim}D and {mat2.ndim}D")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"Expected size for first two dimensions of batch2 tensor to be: "
                           f"[{input.shape[0]}, {input.shape[2]}] but got: "
                           f"[{mat2.shape[0]}, {mat2.shape[1]}].")
    return _t.matmul(input, mat2)


def outer(input: Tensor, vec2: Tensor) -> Tensor:
    if input.ndim != 1 or vec2.ndim != 1:
        raise RuntimeError("outer: expected 1D tensors")
    return input.unsqueeze(1) * vec2.unsqueeze(0)


def dot(input: Tensor, tensor: Tensor) -> Tensor:
    if input.ndim != 1 or tensor.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input.ndim}D and {tensor.ndim}D "
                           f"tensors")
    if input.dtype != tensor.dtype:
        raise RuntimeError(f"dot : expected both vectors to have same dtype, but found "
                           f"{input.dtype} and {tensor.dtype}")
    return _t.matmul(input, tensor)


def einsum(equation: str, *operands) -> Tensor:
    """``torch.einsum`` for explicit or implicit equations without ``...`` or repeated indices
    inside one operand (the forms attention and bilinear code use)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    eq = equation.replace(" ", "")
    if "..." in eq:
        raise NotImplementedError("einsum: dtrain does not support '...' in the equation")
    inputs, _, output = eq.partition("->")
    subs = inputs.split(",")
    if len(subs) != len(operands):
        raise RuntimeError(f"einsum(): {len(subs)} operands in the equation but "
                           f"{len(operands)} given")
    if not _:
        letters = "".join(subs)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    for s in subs:
        if len(set(s)) != len(s):
            raise NotImplementedError(f"einsum: dtrain does not support a repeated index in one "
                                      f"operand ({s!r}: diagonals)")
    dtype = operands[0]._data.dtype
    for t in operands[1:]:
        if t._data.dtype != dtype:
            raise RuntimeError(f"einsum(): operands do not have the same dtype: {dtype} and "
                               f"{t._data.dtype}")
    arrays = [t._data for t in operands]
    sizes = {c: n for s, A in zip(subs, arrays) for c, n in zip(s, A.shape)}
    out = np.einsum(f"{','.join(subs)}->{output}", *arrays)

    def backward(g):
        grads = []
        for i, (s, t) in enumerate(zip(subs, operands)):
            if not t._requires_grad:
                grads.append(None)
                continue
            others = [(subs[j], arrays[j]) for j in range(len(arrays)) if j != i]
            known = set(output).union(*(set(o) for o, _ in others))
            # indices only this operand has (summed out) come back by broadcasting
            own = "".join(c for c in s if c not in known)
            ones = np.ones([sizes[c] for c in own], arrays[i].dtype)
            spec = ",".join([output, *(o for o, _ in others), own]) + "->" + s
            grads.append(np.einsum(spec, g, *(A for _, A in others), ones))
        return tuple(grads)

    return _t._op(out, tuple(operands), backward, "EinsumBackward0")


def _triangle(input: Tensor, diagonal: int, keep, name: str) -> Tensor:
    A = input._data
    if A.ndim < 2:
        raise RuntimeError(f"{name.lower()}: input tensor must have at least 2 dimensions")
    mask = keep(np.ones(A.shape[-2:], dtype=bool), diagonal)
    return _t._op(np.where(mask, A, np.zeros((), A.dtype)), (input,),
                  lambda g: (np.where(mask, g, 0),), f"{name}Backward0")


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    """The lower triangle (on and below ``diagonal``) of the last two dimensions; zeros above."""
    return _triangle(input, diagonal, np.tril, "Tril")


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    """The upper triangle (on and above ``diagonal``) of the last two dimensions; zeros below."""
    return _triangle(input, diagonal, np.triu, "Triu")


def flip(input: Tensor, dims) -> Tensor:
    """``input`` reversed along ``dims``."""
    dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
    axes = _t._normalize_dims(dims, input._data.ndim)
    return _t._op(np.flip(input._data, axes).copy(), (input,),
                  lambda g: (np.flip(g, axes),), "FlipBackward0")


def roll(input: Tensor, shifts, dims=None) -> Tensor:
    """``input`` shifted cyclically by ``shifts`` along ``dims`` (flattened when none)."""
    A = input._data
    if dims is None:
        if not isinstance(shifts, numbers.Integral):
            raise RuntimeError("roll: shifts must be one number when dims is not given")
        out = np.roll(A.reshape(-1), int(shifts)).reshape(A.shape)
        return _t._op(out, (input,),
                      lambda g: (np.roll(g.reshape(-1), -int(shifts)).reshape(A.shape),),
                      "RollBackward0")
    shifts = (shifts,) if isinstance(shifts, numbers.Integral) else tuple(shifts)
    dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims: "
                           f"{len(dims)}")
    axes = tuple(_t._normalize_dims(d, A.ndim)[0] for d in dims)
    return _t._op(np.roll(A, shifts, axes), (input,),
                  lambda g: (np.roll(g, tuple(-s for s in shifts), axes),), "RollBackward0")


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    """The ``length`` entries from ``start`` along ``dim`` (a view-like slice, differentiable)."""
    d = _t._normalize_dims(dim, input.ndim)[0]
    size = input.shape[d]
    start = int(start) + size if int(start) < 0 else int(start)
    if not 0 <= start <= size or length < 0 or start + length > size:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({size}).")
    return input[(slice(None),) * d + (slice(start, start + length),)]


def any(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return input.any(dim, keepdim)


def all(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return input.all(dim, keepdim)


def isclose(input: Tensor, other, rtol: float = 1e-5, atol: float = 1e-8,
            equal_nan: bool = False) -> Tensor:
    return Tensor._wrap(np.isclose(input._data, _t._data(other), rtol=rtol, atol=atol,
                                   equal_nan=equal_nan))


def _flip_method(self, *dims):
    return flip(self, dims[0] if len(dims) == 1 else dims)


# The method forms are the functions themselves (``x.sin()`` is ``sin(x)``), except flip's
# varargs (``x.flip(0, 1)``).
for _name in ("sin", "cos", "log1p", "expm1", "log2", "log10", "floor", "ceil", "trunc", "round",
              "square", "reciprocal", "rsqrt", "prod", "logsumexp", "bmm", "outer", "dot",
              "tril", "triu", "roll", "isclose", "narrow"):
    setattr(Tensor, _name, globals()[_name])
Tensor.flip = _flip_method
