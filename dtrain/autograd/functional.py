"""torch's function forms: ``dtrain.add(a, b, alpha=2, out=o)``, ``div(..., rounding_mode=)``.

The ops themselves live in ``tensor.py``; these wrappers add torch's keyword arguments. They call
the ops through the module (``_t.add``), so whatever wraps the module's ops (the ONNX tracer)
sees every call.

This module is also ``torch.autograd.functional``'s place: ``jacobian``, ``hessian``, ``vjp``,
``jvp``, ``hvp`` and ``vhp`` (defined in ``derivatives.py``) are re-exported here, so
``import dtrain.autograd.functional as AF; AF.jacobian(...)`` works as in torch.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from . import tensor as _t
from .derivatives import hessian, hvp, jacobian, jvp, vhp, vjp  # noqa: F401  (see docstring)
from .tensor import Tensor

_ROUNDING = (None, "trunc", "floor")


def _write_out(name: str, result: Tensor, out: Tensor | None) -> Tensor:
    """Store ``result`` in ``out`` with torch's rules (cast, resize, no autograd); returns out."""
    if out is None:
        return result
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(): argument 'out' must be Tensor, not {type(out).__name__}")
    if result._requires_grad:  # a differentiable op with an input that requires grad
        raise RuntimeError(f"{name}(): functions with out=... arguments don't support automatic "
                           "differentiation, but one of the arguments requires grad.")
    src, dst = result._data, out._data
    if _t._promote_types(src.dtype, dst.dtype) != dst.dtype:
        raise RuntimeError(f"result type {_t._torch_name(src.dtype)} can't be cast to the desired "
                           f"output type {_t._torch_name(dst.dtype)}")
    if dst.shape != src.shape:
        if dst.size:
            warnings.warn(f"An output with one or more elements was resized since it had shape "
                          f"{list(dst.shape)}, which does not match the required output shape "
                          f"{list(src.shape)}.", UserWarning, stacklevel=3)
        out._data = src.astype(dst.dtype, copy=True)
    else:
        np.copyto(dst, src, casting="unsafe")
    return out


def _scaled(other, alpha, like):
    """``other * alpha`` for add/sub's ``alpha``, refusing a float alpha with integer tensors."""
    if alpha == 1:
        return other
    integral = all(isinstance(x, Tensor) and x._data.dtype.kind in "biu" or
                   isinstance(x, numbers.Integral) for x in (like, other))
    if integral and not isinstance(alpha, numbers.Integral):
        raise RuntimeError("For integral input tensors, argument alpha must not be a floating "
                           "point number.")
    return _t.mul(other, alpha)


def add(input, other, *, alpha=1, out: Tensor | None = None) -> Tensor:
    """``input + alpha * other``."""
    return _write_out("add", _t.add(input, _scaled(other, alpha, input)), out)


def sub(input, other, *, alpha=1, out: Tensor | None = None) -> Tensor:
    """``input - alpha * other``."""
    return _write_out("sub", _t.sub(input, _scaled(other, alpha, input)), out)


subtract = sub


def mul(input, other, *, out: Tensor | None = None) -> Tensor:
    """``input * other``."""
    return _write_out("mul", _t.mul(input, other), out)


multiply = mul


def div(input, other, *, rounding_mode: str | None = None, out: Tensor | None = None) -> Tensor:
    """``input / other``: true division, or rounded toward zero ('trunc') or down ('floor').

    The rounded forms keep integer dtypes and pass a zero gradient, as torch's.
    """
    if rounding_mode not in _ROUNDING:
        raise RuntimeError("div expected rounding_mode to be one of None, 'trunc', or 'floor' but "
                           f"found '{rounding_mode}'")
    if rounding_mode is None:
        result = _t.div(input, other)
    else:
        result = _rounded_div(input, other, rounding_mode)
    return _write_out("div", result, out)


divide = div
true_divide = _t.div


def _rounded_div(a, b, mode: str) -> Tensor:
    a, b = _t._binary_operands(a, b)
    A, B = a._data, b._data
    _t._integer_divisor_check(B)
    with np.errstate(all="ignore"):
        if mode == "floor":
            value = np.floor_divide(A, B)
        elif A.dtype.kind in "biu":
            # integer division rounded toward zero: the floor, moved up where signs differ
            q, r = np.divmod(A, B)
            value = q + ((r != 0) & ((A < 0) != (B < 0)))
        else:
            value = np.trunc(A / B)
    value = value.astype(A.dtype, copy=False)
    def graph(g):
        return (_t._zeros_like(a) if a._requires_grad else None,
                _t._zeros_like(b) if b._requires_grad else None)

    return _t._op(value, (a, b), lambda g: (np.zeros(A.shape, g.dtype) if a._requires_grad
                                            else None,
                                            np.zeros(B.shape, g.dtype) if b._requires_grad
                                            else None), "DivBackward2", graph=graph)


def _unary(name: str):
    def op(input, *, out: Tensor | None = None) -> Tensor:
        return _write_out(name, getattr(_t, name)(input), out)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"Elementwise ``{name}`` (torch.{name}), with ``out=``."
    return op


exp, log, sqrt, tanh, sigmoid, abs, neg, relu = (
    _unary(n) for n in ("exp", "log", "sqrt", "tanh", "sigmoid", "abs", "neg", "relu"))
negative = neg


def pow(input, exponent, *, out: Tensor | None = None) -> Tensor:
    """``input ** exponent``."""
    return _write_out("pow", _t.pow(input, exponent), out)


def matmul(input, other, *, out: Tensor | None = None) -> Tensor:
    """Matrix product with broadcasting (torch.matmul)."""
    return _write_out("matmul", _t.matmul(input, other), out)


mm = matmul


def clamp(input, min=None, max=None, *, out: Tensor | None = None) -> Tensor:
    """Clip to [min, max]."""
    return _write_out("clamp", _t.clamp(input, min, max), out)


clip = clamp


def maximum(input, other, *, out: Tensor | None = None) -> Tensor:
    """Elementwise maximum."""
    return _write_out("maximum", _t.maximum(input, other), out)


def minimum(input, other, *, out: Tensor | None = None) -> Tensor:
    """Elementwise minimum."""
    return _write_out("minimum", _t.minimum(input, other), out)


def floor_divide(input, other, *, out: Tensor | None = None) -> Tensor:
    """``input // other``."""
    return _write_out("floor_divide", _t.floor_divide(input, other), out)


def remainder(input, other, *, out: Tensor | None = None) -> Tensor:
    """``input % other`` (the divisor's sign)."""
    return _write_out("remainder", _t.remainder(input, other), out)


def where(condition, input=None, other=None, *, out: Tensor | None = None):
    """Pick from ``input`` where ``condition`` holds, else ``other``; alone, the nonzero indices."""
    if input is None and other is None:
        return tuple(Tensor._wrap(i.astype(np.int64)) for i in np.nonzero(_t._data(condition)))
    return _write_out("where", _t.where(condition, input, other), out)


def sum(input, dim=None, keepdim: bool = False, *, dtype=None, out: Tensor | None = None):
    """Sum over ``dim`` (all elements by default), optionally in ``dtype``."""
    x = input if dtype is None else input.type(dtype)
    return _write_out("sum", _t.sum(x, dim, keepdim), out)


def mean(input, dim=None, keepdim: bool = False, *, dtype=None, out: Tensor | None = None):
    """Mean over ``dim`` (all elements by default), optionally in ``dtype``."""
    x = input if dtype is None else input.type(dtype)
    return _write_out("mean", _t.mean(x, dim, keepdim), out)


def cat(tensors, dim: int = 0, *, out: Tensor | None = None) -> Tensor:
    """Concatenate along an existing dimension."""
    return _write_out("cat", _t.cat(tensors, dim), out)


concat = concatenate = cat


def stack(tensors, dim: int = 0, *, out: Tensor | None = None) -> Tensor:
    """Join along a new dimension."""
    return _write_out("stack", _t.stack(tensors, dim), out)


def addcmul(input, tensor1, tensor2, *, value=1, out: Tensor | None = None) -> Tensor:
    """``input + value * tensor1 * tensor2``."""
    return _write_out("addcmul", input.addcmul(tensor1, tensor2, value=value), out)


def addcdiv(input, tensor1, tensor2, *, value=1, out: Tensor | None = None) -> Tensor:
    """``input + value * tensor1 / tensor2``."""
    return _write_out("addcdiv", input.addcdiv(tensor1, tensor2, value=value), out)


def _compare(name: str, method: str):
    def compare(input, other) -> Tensor:
        return getattr(_t._as_tensor(input), method)(other)

    compare.__name__ = compare.__qualname__ = name
    compare.__doc__ = f"Elementwise ``input {method}`` comparison as a bool tensor (torch.{name})."
    return compare


eq, ne, lt, le, gt, ge = (_compare(n, f"__{n}__") for n in ("eq", "ne", "lt", "le", "gt", "ge"))
greater, less, greater_equal, less_equal, not_equal = gt, lt, ge, le, ne


def isnan(input: Tensor) -> Tensor:
    """Where ``input`` is NaN."""
    return input.isnan()


def isfinite(input: Tensor) -> Tensor:
    """Where ``input`` is neither infinite nor NaN."""
    return input.isfinite()


def sign(input: Tensor) -> Tensor:
    """-1, 0 or 1 by the sign of each element (no gradient, as torch's is zero)."""
    return input.sign()


def logical_not(input) -> Tensor:
    """Elementwise NOT of the truth values (bool result)."""
    return Tensor._wrap(np.logical_not(_t._data(input)))


def logical_and(input, other) -> Tensor:
    """Elementwise AND of the truth values (bool result)."""
    return Tensor._wrap(np.logical_and(_t._data(input), _t._data(other)))


def logical_or(input, other) -> Tensor:
    """Elementwise OR of the truth values (bool result)."""
    return Tensor._wrap(np.logical_or(_t._data(input), _t._data(other)))


def t(input: Tensor) -> Tensor:
    """The transpose of a tensor of at most 2 dimensions."""
    return input.t()
