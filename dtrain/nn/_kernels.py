"""Fused forward/backward kernels for the layers on the training hot path.

A fused op records one graph node instead of several, so a Linear layer or a cross-entropy loss
costs about what hand-written NumPy costs. Each backward is the closed-form gradient.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd.segments import active_segments, rows_matmul
from ..autograd.tensor import Tensor, _op, _unbroadcast

_REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")


# ------------------------------------------------------------------------------ linear
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias`` as one node (PyTorch's ``F.linear``)."""
    X, W = input._data, weight._data
    if X.shape[-1] != W.shape[-1]:
        lead = X.shape[:-1] if X.ndim > 1 else (1,)
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({int(np.prod(lead))}x{X.shape[-1]} and "
            f"{W.shape[-1]}x{W.shape[0]})"
        )
    seg = active_segments(X) if X.ndim == 2 else None
    out = rows_matmul(seg, X, W.T)
    if bias is not None:
        out += bias._data
        inputs = (input, weight, bias)
    else:
        inputs = (input, weight)

    def backward(g):
        if seg is not None:
            return _linear_backward_segments(seg, g, X, input, weight, bias)
        gx = g @ W if input._requires_grad else None
        gw = gb = None
        if weight._requires_grad:
            if X.ndim == 2:
                gw = g.T @ X
            elif X.ndim == 1:
                gw = np.outer(g, X)
            else:
                gw = g.reshape(-1, g.shape[-1]).T @ X.reshape(-1, X.shape[-1])
        if bias is not None and bias._requires_grad:
            gb = g.sum(axis=tuple(range(g.ndim - 1))) if g.ndim > 1 else g
        return (gx, gw, gb) if bias is not None else (gx, gw)

    return _op(out, inputs, backward, "AddmmBackward0" if bias is not None else "MmBackward0")


def _linear_backward_segments(seg, g, X, input, weight, bias) -> tuple:
    """Linear's backward over micro-shards: input rows per shard, weight and bias sums per shard.

    Each shard's gradient pieces are the same NumPy calls as a pass over that shard alone
    (``g.T @ X`` and ``g.sum(axis=0)`` on its rows), handed to the segments, not to autograd.
    """
    g = np.ascontiguousarray(g)
    gx = rows_matmul(seg, g, weight._data) if input._requires_grad else None
    gw = gb = None
    if weight._requires_grad:
        gw = seg.deliver_outer(weight, g, X)
    if bias is not None and bias._requires_grad:
        gb = seg.deliver(bias, seg.per_shard(lambda gs: gs.sum(axis=0), g))
    return (gx, gw, gb) if bias is not None else (gx, gw)


# ------------------------------------------------------------------------- activations
def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    X = input._data
    positive = X > 0
    out = np.where(positive, X, X * negative_slope)
    return _op(out, (input,), lambda g: (np.where(positive, g, g * negative_slope),),
               "LeakyReluBackward0")


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:  # exact but slower: the C library's erf element by element
        return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype)
    return erf(x)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian Error Linear Unit, exact (erf) or with PyTorch's tanh approximation."""
    X = input._data
    if approximate == "none":
        cdf = 0.5 * (1.0 + _erf(X / math.sqrt(2.0)))
        out = (X * cdf).astype(X.dtype, copy=False)

        def backward(g):
            pdf = np.exp(-0.5 * X * X) / math.sqrt(2.0 * math.pi)
            return ((g * (cdf + X * pdf)).astype(X.dtype, copy=False),)

    elif approximate == "tanh":
        k = math.sqrt(2.0 / math.pi)
        inner = k * (X + 0.044715 * X**3)
        t = np.tanh(inner)
        out = 0.5 * X * (1 + t)

        def backward(g):
            d_inner = k * (1 + 3 * 0.044715 * X * X)
            return (g * (0.5 * (1 + t) + 0.5 * X * (1 - t * t) * d_inner),)

    else:
        raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
    return _op(out, (input,), backward, "GeluBackward0")


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    X = input._data
    bx = beta * X
    linear_region = bx > threshold
    out = np.where(linear_region, X, np.log1p(np.exp(np.minimum(bx, threshold))) / beta)

    def backward(g):
        s = 1.0 / (1.0 + np.exp(-np.minimum(bx, threshold)))
        return (np.where(linear_region, g, g * s).astype(X.dtype, copy=False),)

    return _op(out.astype(X.dtype, copy=False), (input,), backward, "SoftplusBackward0")


def elu(input: Tensor, alpha: float = 1.0) -> Tensor:
    X = input._data
    positive = X > 0
    neg = alpha * np.expm1(np.minimum(X, 0))
    out = np.where(positive, X, neg)
    return _op(out, (input,), lambda g: (np.where(positive, g, g * (neg + alpha)),),
               "EluBackward0")


# ------------------------------------------------------------------------------ losses
def _class_last(x: np.ndarray) -> np.ndarray:
    """(N, C, d1, ...) → (N*d1*..., C); (N, C) and (C,) pass through as 2-D."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim == 2:
        return x
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _class_first(grad2d: np.ndarray, shape: tuple) -> np.ndarray:
    """Inverse of ``_class_last`` for gradients."""
    if len(shape) == 1:
        return grad2d[0]
    if len(shape) == 2:
        return grad2d
    moved = (shape[0],) + shape[2:] + (shape[1],)
    return np.moveaxis(grad2d.reshape(moved), -1, 1)


def _check_targets(X: np.ndarray, T: np.ndarray, name: str) -> None:
    if T.dtype.kind not in "iu":
        raise RuntimeError(
            f"{name}: expected target of integer dtype (class indices), got {T.dtype}"
        )
    expected = X.shape[:1] + X.shape[2:] if X.ndim > 1 else ()
    if T.shape != expected:
        raise ValueError(
            f"{name}: expected target of shape {expected} for input of shape {X.shape}, "
            f"got {T.shape}"
        )


def _weighted_class_loss(logp: np.ndarray, T: np.ndarray, weight, ignore_index, reduction,
                         label_smoothing, out_shape, name):
    """Loss and row-wise target weights q for log-probabilities ``logp`` (2-D) and indices ``T``.

    Each row's loss is ``-sum_c q[c] * logp[c]``; the gradient w.r.t. ``logp`` is ``-q`` times
    the reduction coefficient, which the callers turn into their own input gradient.
    """
    n, c = logp.shape
    t = T.reshape(-1).astype(np.int64, copy=False)
    valid = t != ignore_index
    if not valid.all():
        t = np.where(valid, t, 0)
    if t.size and (t.min() < 0 or t.max() >= c):
        bad = t[(t < 0) | (t >= c)][0]
        raise IndexError(f"{name}: target {bad} is out of bounds for {c} classes")
    rows = np.arange(n)
    w_t = weight[t] if weight is not None else None
    q = np.zeros_like(logp)
    row_w = (1.0 - label_smoothing) if w_t is None else (1.0 - label_smoothing) * w_t
    q[rows, t] = row_w
    if label_smoothing:
        q += (label_smoothing / c) * (weight if weight is not None else 1.0)
    if not valid.all():
        q[~valid] = 0
    per_row = -(q * logp).sum(axis=1) if label_smoothing or weight is not None else -logp[rows, t] * valid
    if reduction == "none":
        return per_row.reshape(out_shape), q, None
    if reduction == "sum":
        return np.asarray(per_row.sum()), q, 1.0
    denom = (w_t * valid).sum() if w_t is not None else valid.sum()
    return np.asarray(per_row.sum() / denom), q, 1.0 / denom


def _coefficient(g, coef, n, shape):
    """The per-row factor multiplying -q in the gradient."""
    if coef is None:  # reduction='none'
        return g.reshape(n, 1)
    return g * coef


def cross_entropy(input: Tensor, target, weight: Tensor | None = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Log-softmax plus negative log-likelihood as one node, as ``F.cross_entropy``.

    ``target`` holds class indices (shape of input without the class dim) or class
    probabilities (the input's shape).
    """
    check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    X = input._data
    T = target._data if isinstance(target, Tensor) else np.asarray(target)
    W = None if weight is None else (weight._data if isinstance(weight, Tensor) else np.asarray(weight))
    X2 = _class_last(X)
    shifted = X2 - X2.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    sums = exps.sum(axis=1, keepdims=True)
    logp = shifted - np.log(sums)
    n, c = X2.shape
    if T.dtype.kind == "f":
        if T.shape != X.shape:
            raise ValueError(
                f"cross_entropy: probability targets must match the input shape {X.shape}, "
                f"got {T.shape}"
            )
        q = _class_last(T).astype(X.dtype, copy=False)
        if label_smoothing:
            q = q * (1.0 - label_smoothing) + label_smoothing / c
        if W is not None:
            q = q * W
        per_row = -(q * logp).sum(axis=1)
        out_shape = X.shape[:1] + X.shape[2:] if X.ndim > 1 else ()
        if reduction == "none":
            loss, coef = per_row.reshape(out_shape), None
        else:
            total = per_row.sum()
            coef = 1.0 if reduction == "sum" else 1.0 / (n if X.ndim > 1 else 1)
            loss = np.asarray(total * coef)
    else:
        _check_targets(X, T, "cross_entropy")
        out_shape = T.shape
        loss, q, coef = _weighted_class_loss(logp, T, W, ignore_index, reduction,
                                             label_smoothing, out_shape, "cross_entropy")
    loss = loss.astype(X.dtype, copy=False)

    def backward(g):
        probs = exps / sums
        if coef is None:
            row = g.reshape(n, 1)
        else:
            row = g * coef
        grad = (probs * q.sum(axis=1, keepdims=True) - q) * row
        return (_class_first(grad, X.shape).astype(X.dtype, copy=False),)

    return _op(loss, (input,), backward, "NllLossBackward0")


def nll_loss(input: Tensor, target, weight: Tensor | None = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices given log-probabilities, as ``F.nll_loss``."""
    check_reduction(reduction)
    X = input._data
    T = target._data if isinstance(target, Tensor) else np.asarray(target)
    W = None if weight is None else (weight._data if isinstance(weight, Tensor) else np.asarray(weight))
    _check_targets(X, T, "nll_loss")
    logp = _class_last(X)
    n = logp.shape[0]
    loss, q, coef = _weighted_class_loss(logp, T, W, ignore_index, reduction, 0.0, T.shape,
                                         "nll_loss")

    def backward(g):
        row = g.reshape(n, 1) if coef is None else g * coef
        return (_class_first(-q * row, X.shape).astype(X.dtype, copy=False),)

    return _op(loss.astype(X.dtype, copy=False), (input,), backward, "NllLossBackward0")


def _reduce(per_elem: np.ndarray, reduction: str):
    if reduction == "none":
        return per_elem, None
    if reduction == "sum":
        return np.asarray(per_elem.sum()), 1.0
    return np.asarray(per_elem.mean()), 1.0 / max(per_elem.size, 1)


def _scale(g, coef, shape):
    return g if coef is None else np.broadcast_to(g * coef, shape)


def _pair(input, target, name):
    X = input._data
    T = target._data if isinstance(target, Tensor) else np.asarray(target, dtype=X.dtype)
    if X.shape != T.shape:
        try:
            shape = np.broadcast_shapes(X.shape, T.shape)
        except ValueError:
            raise RuntimeError(
                f"{name}: input shape {X.shape} and target shape {T.shape} cannot be broadcast"
            ) from None
        import warnings

        warnings.warn(
            f"Using a target size ({T.shape}) that is different to the input size ({X.shape}). "
            "This will likely lead to incorrect results due to broadcasting. Please ensure they "
            "have the same size.",
            UserWarning,
            stacklevel=3,
        )
        return X, T, shape
    return X, T, X.shape


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean squared error, as ``F.mse_loss``."""
    check_reduction(reduction)
    X, T, shape = _pair(input, target, "mse_loss")
    diff = X - T
    loss, coef = _reduce(diff * diff, reduction)
    tgt = target if isinstance(target, Tensor) else Tensor._wrap(T)

    def backward(g):
        gd = 2 * diff * _scale(g, coef, shape)
        return (_unbroadcast(gd, X.shape) if input._requires_grad else None,
                _unbroadcast(-gd, T.shape) if tgt._requires_grad else None)

    return _op(loss.astype(X.dtype, copy=False), (input, tgt), backward, "MseLossBackward0")


def l1_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean absolute error, as ``F.l1_loss``."""
    check_reduction(reduction)
    X, T, shape = _pair(input, target, "l1_loss")
    diff = X - T
    loss, coef = _reduce(np.abs(diff), reduction)
    tgt = target if isinstance(target, Tensor) else Tensor._wrap(T)

    def backward(g):
        gd = np.sign(diff) * _scale(g, coef, shape)
        return (_unbroadcast(gd, X.shape) if input._requires_grad else None,
                _unbroadcast(-gd, T.shape) if tgt._requires_grad else None)

    return _op(loss.astype(X.dtype, copy=False), (input, tgt), backward, "L1LossBackward0")


def binary_cross_entropy(input: Tensor, target, weight=None, reduction: str = "mean") -> Tensor:
    """BCE on probabilities; logs are clamped at -100 as in PyTorch."""
    check_reduction(reduction)
    X, T, _ = _pair(input, target, "binary_cross_entropy")
    if X.size and (X.min() < 0 or X.max() > 1):
        raise RuntimeError("all elements of input should be between 0 and 1")
    W = None if weight is None else (weight._data if isinstance(weight, Tensor) else np.asarray(weight))
    with np.errstate(divide="ignore"):
        log_x = np.maximum(np.log(X), -100)
        log_1mx = np.maximum(np.log1p(-X), -100)
    per = -(T * log_x + (1 - T) * log_1mx)
    if W is not None:
        per = per * W
    loss, coef = _reduce(per, reduction)

    def backward(g):
        eps = 1e-12
        grad = (X - T) / np.maximum((1 - X) * X, eps) * _scale(g, coef, per.shape)
        if W is not None:
            grad = grad * W
        return (_unbroadcast(grad, X.shape).astype(X.dtype, copy=False),)

    return _op(loss.astype(X.dtype, copy=False), (input,), backward, "BinaryCrossEntropyBackward0")


def binary_cross_entropy_with_logits(input: Tensor, target, weight=None, reduction: str = "mean",
                                     pos_weight=None) -> Tensor:
    """Sigmoid plus BCE in one stable node, as ``F.binary_cross_entropy_with_logits``."""
    check_reduction(reduction)
    X, T, _ = _pair(input, target, "binary_cross_entropy_with_logits")
    W = None if weight is None else (weight._data if isinstance(weight, Tensor) else np.asarray(weight))
    P = None if pos_weight is None else (
        pos_weight._data if isinstance(pos_weight, Tensor) else np.asarray(pos_weight))
    # log(sigmoid(x)) = -softplus(-x), log(1 - sigmoid(x)) = -softplus(x), both computed stably
    sp_neg = np.logaddexp(0, -X)
    sp_pos = np.logaddexp(0, X)
    if P is None:
        per = T * sp_neg + (1 - T) * sp_pos
    else:
        per = P * T * sp_neg + (1 - T) * sp_pos
    if W is not None:
        per = per * W
    loss, coef = _reduce(per, reduction)

    def backward(g):
        sig = np.exp(-sp_neg)
        if P is None:
            grad = sig - T
        else:
            grad = (P * T + 1 - T) * sig - P * T
        if W is not None:
            grad = grad * W
        grad = grad * _scale(g, coef, per.shape)
        return (_unbroadcast(grad, X.shape).astype(X.dtype, copy=False),)

    return _op(loss.astype(X.dtype, copy=False), (input,), backward,
               "BinaryCrossEntropyWithLogitsBackward0")


# --------------------------------------------------------------- smooth activations
def silu(input: Tensor) -> Tensor:
    """x * sigmoid(x) (PyTorch's ``F.silu``, a.k.a. swish)."""
    X = input._data
    s = np.exp(-np.logaddexp(0, -X)).astype(X.dtype, copy=False)
    return _op(X * s, (input,), lambda g: (g * (s * (1 + X * (1 - s))),), "SiluBackward0")


def mish(input: Tensor) -> Tensor:
    """x * tanh(softplus(x)) (PyTorch's ``F.mish``)."""
    X = input._data
    t = np.tanh(np.logaddexp(0, X)).astype(X.dtype, copy=False)

    def backward(g):
        s = np.exp(-np.logaddexp(0, -X))
        return ((g * (t + X * s * (1 - t * t))).astype(X.dtype, copy=False),)

    return _op(X * t, (input,), backward, "MishBackward0")


def hardswish(input: Tensor) -> Tensor:
    """x * relu6(x + 3) / 6 (PyTorch's ``F.hardswish``)."""
    X = input._data
    out = X * np.clip(X + 3, 0, 6) / 6

    def backward(g):
        slope = np.where(X <= -3, 0, np.where(X >= 3, 1, X / 3 + 0.5)).astype(X.dtype)
        return (g * slope,)

    return _op(out.astype(X.dtype, copy=False), (input,), backward, "HardswishBackward0")
