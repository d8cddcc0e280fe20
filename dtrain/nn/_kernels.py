"""Fused forward/backward kernels for the layers on the training hot path.

A fused op records one graph node instead of several, so a Linear layer or a cross-entropy loss
costs about what hand-written NumPy costs. Each backward is the closed-form gradient.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import tensor as _t
from ..autograd.graph_engine import vjp_via
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

    def graph(g):
        g2 = _t.reshape(g, (-1, W.shape[0]))
        gx = _t.matmul(g, weight) if input._requires_grad else None
        gw = gb = None
        if weight._requires_grad:
            gw = _t.matmul(_t.transpose(g2, 0, 1), _t.reshape(input, (-1, W.shape[1])))
        if bias is not None and bias._requires_grad:
            gb = _t.sum(g2, 0)
        return (gx, gw, gb) if bias is not None else (gx, gw)

    return _op(out, inputs, backward, "AddmmBackward0" if bias is not None else "MmBackward0",
               graph=graph)


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
        gb = seg.deliver(bias, seg.row_sums(g))
    return (gx, gw, gb) if bias is not None else (gx, gw)


# ------------------------------------------------------------------------- activations
def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    X = input._data
    positive = X > 0
    out = np.where(positive, X, X * negative_slope)
    slope = np.where(positive, 1, negative_slope).astype(X.dtype)
    return _op(out, (input,), lambda g: (np.where(positive, g, g * negative_slope),),
               "LeakyReluBackward0", graph=lambda g: (_t.mul(g, slope),))


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

    def graph(g):
        return (_t.mul(g, _gelu_slope(input, approximate)),)

    return _op(out, (input,), backward, "GeluBackward0", graph=graph)


def _gelu_slope(input: Tensor, approximate: str) -> Tensor:
    """GELU's derivative as an op (its own derivative closed-form): gelu's double backward."""
    X = input._data
    pdf = np.exp(-0.5 * X * X) / math.sqrt(2.0 * math.pi)
    if approximate == "none":
        slope = 0.5 * (1.0 + _erf(X / math.sqrt(2.0))) + X * pdf
        curve = pdf * (2 - X * X)
    else:
        k = math.sqrt(2.0 / math.pi)
        t = np.tanh(k * (X + 0.044715 * X**3))
        d_inner = k * (1 + 3 * 0.044715 * X * X)
        slope = 0.5 * (1 + t) + 0.5 * X * (1 - t * t) * d_inner
        curve = (1 - t * t) * (d_inner - X * t * d_inner * d_inner + X * k * 3 * 0.044715 * X)
    slope, curve = slope.astype(X.dtype, copy=False), curve.astype(X.dtype, copy=False)
    return _op(slope, (input,), lambda g: (g * curve,), "GeluBackwardBackward0",
               graph=lambda g: (_t.mul(g, _gelu_curve(input, approximate)),))


def _gelu_curve(x: Tensor, approximate: str) -> Tensor:
    """GELU's second derivative in differentiable ops (third and higher derivatives)."""
    square = _t.mul(x, x)
    if approximate == "none":
        pdf = _t.mul(_t.exp(_t.mul(square, -0.5)), 1 / math.sqrt(2.0 * math.pi))
        return _t.mul(pdf, _t.sub(2, square))
    k, c = math.sqrt(2.0 / math.pi), 0.044715
    t = _t.tanh(_t.mul(_t.add(x, _t.mul(_t.mul(square, x), c)), k))
    d_inner = _t.mul(_t.add(_t.mul(square, 3 * c), 1), k)
    inner = _t.sub(d_inner, _t.mul(_t.mul(x, t), _t.mul(d_inner, d_inner)))
    return _t.mul(_t.sub(1, _t.mul(t, t)), _t.add(inner, _t.mul(square, 3 * k * c)))


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    X = input._data
    bx = beta * X
    linear_region = bx > threshold
    out = np.where(linear_region, X, np.log1p(np.exp(np.minimum(bx, threshold))) / beta)

    def backward(g):
        s = 1.0 / (1.0 + np.exp(-np.minimum(bx, threshold)))
        return (np.where(linear_region, g, g * s).astype(X.dtype, copy=False),)

    def graph(g):
        return vjp_via(lambda x: _softplus_ops(x, beta, threshold), (input,), g)

    return _op(out.astype(X.dtype, copy=False), (input,), backward, "SoftplusBackward0",
               graph=graph)


def _softplus_ops(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """softplus in differentiable ops (double backward of softplus and mish)."""
    bx = _t.mul(x, beta)
    soft = _t.div(_t.log(_t.add(_t.exp(_t.clamp(bx, max=threshold)), 1)), beta)
    return _t.where(bx._data > threshold, x, soft)


def elu(input: Tensor, alpha: float = 1.0) -> Tensor:
    X = input._data
    positive = X > 0
    neg = alpha * np.expm1(np.minimum(X, 0))
    out = np.where(positive, X, neg)
    def decomposition(x):
        return _t.where(positive, x, _t.mul(_t.sub(_t.exp(_t.clamp(x, max=0)), 1), alpha))

    return _op(out, (input,), lambda g: (np.where(positive, g, g * (neg + alpha)),),
               "EluBackward0", graph=lambda g: vjp_via(decomposition, (input,), g))


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
        t = _plain_targets(T, c, X.ndim, W, ignore_index, reduction, label_smoothing)
        if t is not None:
            return _plain_cross_entropy(input, shifted, exps, sums, logp, t, reduction)
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

    def decomposition(x):
        return _weighted_sum(_t.log_softmax(_class_last_tensor(x), 1), q, coef, out_shape)

    return _op(loss, (input,), backward, "NllLossBackward0",
               graph=lambda g: vjp_via(decomposition, (input,), g))


def _plain_targets(T, c, ndim, W, ignore_index, reduction, label_smoothing):
    """Class indices as int64 when the loss is the plain mean (or sum) over (N, C) logits with
    every target a class (none ignored); None sends the call down the general path."""
    if ndim != 2 or W is not None or label_smoothing or reduction == "none" or not T.size:
        return None
    t = T.astype(np.int64, copy=False)
    if t.min() < 0 or t.max() >= c or 0 <= ignore_index < c:
        return None  # out-of-range targets raise, and ignored ones are weighted, there
    return t


def _plain_cross_entropy(input, shifted, exps, sums, logp, t, reduction):
    """``cross_entropy`` of (N, C) logits and in-range class indices, nothing weighted or
    ignored: the general path's arithmetic without its one-hot target matrix (same bits)."""
    n, c = logp.shape
    rows = np.arange(n)
    total = -logp[rows, t]
    total = total.sum()
    if reduction == "mean":  # a NumPy int64 count, as the general path's: the same promotion
        count = np.int64(n)
        loss, coef = np.asarray(total / count), 1.0 / count
    else:
        loss, coef = np.asarray(total), 1.0
    dtype = input._data.dtype

    def backward(g):
        grad = exps / sums
        grad[rows, t] -= 1  # probs - one_hot: its row sums are exactly 1
        return ((grad * (g * coef)).astype(dtype, copy=False),)

    def decomposition(x):
        q = np.zeros_like(logp)
        q[rows, t] = 1.0
        return _weighted_sum(_t.log_softmax(x, 1), q, coef, (n,))

    return _op(loss.astype(dtype, copy=False), (input,), backward, "NllLossBackward0",
               graph=lambda g: vjp_via(decomposition, (input,), g))


def _class_last_tensor(x: Tensor) -> Tensor:
    """``_class_last`` in differentiable ops."""
    if x.ndim == 1:
        return _t.unsqueeze(x, 0)
    if x.ndim == 2:
        return x
    moved = _t.permute(x, (0, *range(2, x.ndim), 1))
    return _t.reshape(moved, (-1, x.shape[1]))


def _weighted_sum(logp: Tensor, q: np.ndarray, coef, out_shape) -> Tensor:
    """The loss ``-sum_c q * logp`` per row, reduced with ``coef`` (None: no reduction)."""
    per_row = _t.neg(_t.sum(_t.mul(logp, q), 1))
    if coef is None:
        return _t.reshape(per_row, out_shape)
    return _t.mul(_t.sum(per_row), coef)


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

    def decomposition(x):
        return _weighted_sum(_class_last_tensor(x), q, coef, T.shape)

    return _op(loss.astype(X.dtype, copy=False), (input,), backward, "NllLossBackward0",
               graph=lambda g: vjp_via(decomposition, (input,), g))


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

    def decomposition(x, t):
        d = _t.sub(x, t)
        return _reduce_tensor(_t.mul(d, d), reduction)

    return _op(loss.astype(X.dtype, copy=False), (input, tgt), backward, "MseLossBackward0",
               graph=lambda g: vjp_via(decomposition, (input, tgt), g))


def _reduce_tensor(per_elem: Tensor, reduction: str) -> Tensor:
    """``_reduce`` in differentiable ops."""
    if reduction == "none":
        return per_elem
    return _t.sum(per_elem) if reduction == "sum" else _t.mean(per_elem)


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

    def decomposition(x, t):
        return _reduce_tensor(_t.abs(_t.sub(x, t)), reduction)

    return _op(loss.astype(X.dtype, copy=False), (input, tgt), backward, "L1LossBackward0",
               graph=lambda g: vjp_via(decomposition, (input, tgt), g))


def _piecewise_loss(input, target, reduction, name, width, scale, grad_name):
    """Quadratic inside ``|d| < width``, linear outside: smooth L1 (scale 1/width) and Huber
    (scale 1); ``width`` 0 is the L1 loss."""
    check_reduction(reduction)
    X, T, shape = _pair(input, target, name)
    diff = X - T
    size = np.abs(diff)
    inside = size < width
    quadratic = 0.5 * diff * diff * scale
    linear = (size - 0.5 * width) * (width * scale)
    loss, coef = _reduce(np.where(inside, quadratic, linear), reduction)
    tgt = target if isinstance(target, Tensor) else Tensor._wrap(T)

    def backward(g):
        slope = np.where(inside, diff * scale, np.sign(diff) * (width * scale))
        gd = slope * _scale(g, coef, shape)
        return (_unbroadcast(gd, X.shape) if input._requires_grad else None,
                _unbroadcast(-gd, T.shape) if tgt._requires_grad else None)

    return _op(loss.astype(X.dtype, copy=False), (input, tgt), backward, grad_name)


def smooth_l1_loss(input: Tensor, target, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - beta / 2`` (``F.smooth_l1_loss``)."""
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    if beta == 0:
        return l1_loss(input, target, reduction)
    return _piecewise_loss(input, target, reduction, "smooth_l1_loss", beta, 1.0 / beta,
                           "SmoothL1LossBackward0")


def huber_loss(input: Tensor, target, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - delta / 2)`` (``F.huber_loss``)."""
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    return _piecewise_loss(input, target, reduction, "huber_loss", delta, 1.0,
                           "HuberLossBackward0")


def kl_div(input: Tensor, target, reduction: str = "mean", log_target: bool = False) -> Tensor:
    """KL divergence of ``target`` from the log-probabilities ``input`` (``F.kl_div``):
    ``target * (log(target) - input)`` pointwise, 0 where the target is 0."""
    if reduction not in _REDUCTIONS + ("batchmean",):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if reduction == "mean":
        import warnings

        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size.'batchmean' divides only by the batch size, and aligns with "
                      "the KL div math definition.'mean' will be changed to behave the same as "
                      "'batchmean' in the next major release.", UserWarning, stacklevel=2)
    X, T, shape = _pair(input, target, "kl_div")
    with np.errstate(divide="ignore", invalid="ignore"):
        if log_target:
            P = np.exp(T)
            pointwise = P * (T - X)
        else:
            P = T
            pointwise = np.where(T > 0, T * np.log(np.where(T > 0, T, 1)), 0) - T * X
    if reduction == "batchmean":
        loss = np.asarray(pointwise.sum() / (X.shape[0] if X.ndim else 1))
        coef = 1.0 / (X.shape[0] if X.ndim else 1)
    else:
        loss, coef = _reduce(pointwise, reduction)
    tgt = target if isinstance(target, Tensor) else Tensor._wrap(T)

    def backward(g):
        gs = _scale(g, coef, shape)
        gx = -P * gs
        gt = None
        if tgt._requires_grad:
            with np.errstate(divide="ignore", invalid="ignore"):  # nan at zero targets, as torch
                gt = (P * (T - X + 1) if log_target else
                      np.where(T > 0, np.log(T) + 1 - X, np.nan)) * gs
            gt = _unbroadcast(gt, T.shape)
        return (_unbroadcast(gx, X.shape) if input._requires_grad else None, gt)

    return _op(loss.astype(X.dtype, copy=False), (input, tgt), backward, "KlDivBackward0")


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

    def decomposition(x):
        log_x = _t.clamp(_t.log(x), min=-100)
        log_1mx = _t.clamp(_t.log(_t.sub(1, x)), min=-100)
        per_t = _t.neg(_t.add(_t.mul(log_x, T), _t.mul(log_1mx, 1 - T)))
        return _reduce_tensor(per_t if W is None else _t.mul(per_t, W), reduction)

    return _op(loss.astype(X.dtype, copy=False), (input,), backward, "BinaryCrossEntropyBackward0",
               graph=lambda g: vjp_via(decomposition, (input,), g))


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

    def decomposition(x):
        neg_part = _softplus_ops(_t.neg(x))
        pos_part = _softplus_ops(x)
        per_t = _t.add(_t.mul(neg_part, T if P is None else P * T), _t.mul(pos_part, 1 - T))
        return _reduce_tensor(per_t if W is None else _t.mul(per_t, W), reduction)

    return _op(loss.astype(X.dtype, copy=False), (input,), backward,
               "BinaryCrossEntropyWithLogitsBackward0",
               graph=lambda g: vjp_via(decomposition, (input,), g))


# --------------------------------------------------------------- smooth activations
def _floating(input: Tensor, name: str) -> np.ndarray:
    """The input's array; integer inputs are refused as PyTorch refuses them."""
    X = input._data
    if X.dtype.kind != "f":
        raise NotImplementedError(f"{name} is not implemented for dtype {X.dtype} (input of "
                                  f"shape {tuple(X.shape)}); use a floating tensor")
    return X


def _sigmoid(X: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) as (1 + tanh(x / 2)) / 2: no overflow, and tanh is a fast ufunc."""
    s = np.multiply(X, 0.5, dtype=X.dtype)
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    return s


def silu(input: Tensor) -> Tensor:
    """x * sigmoid(x) (PyTorch's ``F.silu``, a.k.a. swish)."""
    X = _floating(input, "silu")
    s = _sigmoid(X)

    def backward(g):
        d = 1 - s
        d *= X
        d += 1
        d *= s
        d *= g
        return (d,)

    return _op(X * s, (input,), backward, "SiluBackward0",
               graph=lambda g: vjp_via(lambda x: _t.mul(x, _t.sigmoid(x)), (input,), g))


def mish(input: Tensor) -> Tensor:
    """x * tanh(softplus(x)) (PyTorch's ``F.mish``)."""
    X = _floating(input, "mish")
    # tanh(log(1 + e^x)) = w / (w + 2) with w = e^x (e^x + 2); e^x capped where t is 1 anyway
    n = np.exp(np.minimum(X, 20, dtype=X.dtype))
    w = n * (n + 2)
    t = w / (w + 2)

    def backward(g):
        s = n / (1 + n)
        d = 1 - t * t
        d *= s
        d *= X
        d += t
        d *= g
        return (d,)

    def decomposition(x):
        return _t.mul(x, _t.tanh(_softplus_ops(x)))

    return _op(X * t, (input,), backward, "MishBackward0",
               graph=lambda g: vjp_via(decomposition, (input,), g))


def hardswish(input: Tensor) -> Tensor:
    """x * relu6(x + 3) / 6 (PyTorch's ``F.hardswish``)."""
    X = _floating(input, "hardswish")
    out = np.add(X, 3, dtype=X.dtype)
    np.clip(out, 0, 6, out=out)
    out *= X
    out /= 6

    def backward(g):
        slope = np.divide(X, 3, dtype=X.dtype)
        slope += 0.5
        np.putmask(slope, X <= -3, 0)
        np.putmask(slope, X >= 3, 1)
        slope *= g
        return (slope,)

    def decomposition(x):
        return _t.div(_t.mul(x, _t.clamp(_t.add(x, 3), 0, 6)), 6)

    return _op(out, (input,), backward, "HardswishBackward0",
               graph=lambda g: vjp_via(decomposition, (input,), g))
