"""Batch and layer normalization: fused kernels with closed-form backward, and the layers.

BatchNorm keeps PyTorch's buffers (``running_mean``, ``running_var``, ``num_batches_tracked``)
and update rule. For distributed training the running-stat update is split from the forward:
inside ``collect_batch_stats()`` a training forward records its batch statistics instead of
updating the buffers, and ``BatchNorm.apply_batch_stats`` performs the update later. A plain
forward calls the same method right away, so both paths give bit-identical buffers whichever
process computed the statistics.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ..autograd import tensor as _t
from ..autograd.device import check_device
from ..autograd.graph_engine import vjp_via
from ..autograd.pieces import norm as norm_
from ..autograd.segments import active_segments
from ..autograd.tensor import Tensor, _op, get_default_dtype
from . import init
from .module import Module
from .parameter import Parameter

_collectors = threading.local()


@contextmanager
def collect_batch_stats() -> Iterator[list]:
    """Record BatchNorm batch statistics instead of updating running stats (this thread only).

    Yields a list that every training-mode BatchNorm forward inside the block appends
    ``(module, batch_mean, batch_var_unbiased, n)`` to, in call order; the buffers stay
    untouched until ``module.apply_batch_stats(batch_mean, batch_var_unbiased)`` is called.
    """
    stack = _collectors.__dict__.setdefault("stack", [])
    records: list = []
    stack.append(records)
    try:
        yield records
    finally:
        stack.pop()


def _active_collector() -> list | None:
    stack = _collectors.__dict__.get("stack")
    return stack[-1] if stack else None


def _data(t) -> np.ndarray | None:
    return None if t is None else (t._data if isinstance(t, Tensor) else np.asarray(t))


def _check_dtypes(name: str, x: np.ndarray, **others) -> None:
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating input, got dtype {x.dtype}")
    for label, arr in others.items():
        if arr is not None and arr.dtype != x.dtype:
            raise RuntimeError(f"{name}: {label} dtype {arr.dtype} differs from input dtype "
                               f"{x.dtype}")


# ------------------------------------------------------------------ batch norm kernels
def _channel_view(X: np.ndarray) -> np.ndarray:
    """(N, C, *) as (N, C, L)."""
    return X.reshape(X.shape[0], X.shape[1], -1)


def _bn_normalize(X3: np.ndarray, W, B, eps: float) -> tuple:
    """Batch-norm forward of (N, C, L) data: (output, centered input, invstd, mean, biased var).

    The centered input, not the normalized one, is kept for backward: the output is then one
    multiply by invstd * W (and one add), a pass over the data fewer than normalizing first.
    """
    n = X3.shape[0] * X3.shape[2]
    mean = X3.mean(axis=(0, 2))
    centered = X3 - mean[:, None]
    out = np.square(centered)
    var = out.sum(axis=(0, 2)) / n
    invstd = 1.0 / np.sqrt(var + eps)
    np.multiply(centered, (invstd if W is None else invstd * W)[:, None], out=out)
    if B is not None:
        out += B[:, None]
    return out, centered, invstd, mean, var


def _bn_grads(G: np.ndarray, centered: np.ndarray, invstd: np.ndarray, W,
              need_x: bool) -> tuple:
    """Batch-norm backward of (N, C, L) gradients: (input gradient or None, sum g*xhat, sum g),
    xhat being ``centered * invstd``; the input gradient reuses the one temporary."""
    n = G.shape[0] * G.shape[2]
    sum_g = G.sum(axis=(0, 2))
    gx = G * centered
    sum_gx = gx.sum(axis=(0, 2)) * invstd
    if not need_x:
        return None, sum_gx, sum_g
    scale = invstd if W is None else invstd * W
    np.multiply(centered, (-sum_gx / n * invstd)[:, None], out=gx)  # -xhat * sum_gx / n
    gx += G
    gx -= (sum_g / n)[:, None]
    gx *= scale[:, None]
    return gx, sum_gx, sum_g


def _check_batch(X: np.ndarray, n: int) -> None:
    if n <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                         f"got input of shape {tuple(X.shape)}")


def _batch_norm_train(input: Tensor, weight, bias, eps: float):
    """Normalize with batch statistics; returns (output, batch mean, biased batch var, n).

    Inside ``row_segments`` each micro-shard is normalized with its own statistics and the
    mean, var and n returned are per shard (stacked on axis 0, n a tuple).
    """
    X = input._data
    W, B = _data(weight), _data(bias)
    X3 = _channel_view(X)
    seg = active_segments(X)
    if seg is not None:
        return _batch_norm_train_segments(seg, input, weight, bias, eps)
    n = X3.shape[0] * X3.shape[2]
    _check_batch(X, n)
    out, centered, invstd, mean, var = _bn_normalize(X3, W, B, eps)

    def backward(grad):
        gx, sum_gx, sum_g = _bn_grads(_channel_view(grad), centered, invstd, W,
                                      input._requires_grad)
        return _affine_grads(None if gx is None else gx.reshape(X.shape), weight, bias, sum_gx,
                             sum_g)

    def decomposition(x, *affine):
        x3 = _t.reshape(x, X3.shape)
        centered = _t.sub(x3, _t.mean(x3, (0, 2), keepdim=True))
        var_t = _t.mean(_t.mul(centered, centered), (0, 2), keepdim=True)
        xhat_t = _t.div(centered, _t.sqrt(_t.add(var_t, eps)))
        return _t.reshape(_affine_ops(xhat_t, weight, bias, affine, (-1, 1)), X.shape)

    out = _bn_op(out.reshape(X.shape), input, weight, bias, backward, decomposition)
    return out, mean, var, n


def _batch_norm_train_segments(seg, input: Tensor, weight, bias, eps: float):
    """Batch norm over micro-shards: each shard normalized by, and reduced over, itself alone."""
    X = input._data
    W, B = _data(weight), _data(bias)
    X3 = _channel_view(X)
    out = np.empty_like(X3)
    saved, means, variances, counts = [], [], [], []
    for lo, hi in seg.bounds:
        part = X3[lo:hi]
        counts.append(part.shape[0] * part.shape[2])
        _check_batch(X, counts[-1])
        out[lo:hi], centered, invstd, mean, var = _bn_normalize(part, W, B, eps)
        saved.append((centered, invstd))
        means.append(mean)
        variances.append(var)

    def backward(grad):
        G = _channel_view(grad)
        gx = np.empty_like(G) if input._requires_grad else None
        sums_gx, sums_g = [], []
        for (lo, hi), (centered, invstd) in zip(seg.bounds, saved):
            part, sum_gx, sum_g = _bn_grads(G[lo:hi], centered, invstd, W, gx is not None)
            if gx is not None:
                gx[lo:hi] = part
            sums_gx.append(sum_gx)
            sums_g.append(sum_g)
        gw = gb = None
        if weight is not None and weight._requires_grad:
            gw = seg.deliver(weight, np.stack(sums_gx))
        if bias is not None and bias._requires_grad:
            gb = seg.deliver(bias, np.stack(sums_g))
        return _affine_grads(None if gx is None else gx.reshape(X.shape), weight, bias, gw, gb)

    # no graph= here: a segmented pass reduces per shard, which the double backward's
    # whole-batch decomposition would not (create_graph=True then raises, naming the op)
    return (_bn_op(out.reshape(X.shape), input, weight, bias, backward, None), np.stack(means),
            np.stack(variances), tuple(counts))


def _batch_norm_eval(input: Tensor, weight, bias, running_mean: np.ndarray,
                     running_var: np.ndarray, eps: float) -> Tensor:
    """Normalize with the running statistics (an affine map per channel)."""
    X = input._data
    W, B = _data(weight), _data(bias)
    X3 = _channel_view(X)
    invstd = 1.0 / np.sqrt(running_var + eps)
    scale = invstd if W is None else invstd * W
    shift = -running_mean * scale if B is None else B - running_mean * scale
    out = X3 * scale[:, None]
    out += shift[:, None]

    def backward(grad):
        G = _channel_view(grad)
        gx = (G * scale[:, None]).reshape(X.shape) if input._requires_grad else None
        sum_gx = None
        if weight is not None and weight._requires_grad:
            sum_gx = (G * ((X3 - running_mean[:, None]) * invstd[:, None])).sum(axis=(0, 2))
        return _affine_grads(gx, weight, bias, sum_gx, G.sum(axis=(0, 2)))

    def decomposition(x, *affine):
        x3 = _t.reshape(x, X3.shape)
        xhat_t = _t.mul(_t.sub(x3, running_mean[:, None]), invstd[:, None].astype(X.dtype))
        return _t.reshape(_affine_ops(xhat_t, weight, bias, affine, (-1, 1)), X.shape)

    return _bn_op(out.reshape(X.shape), input, weight, bias, backward, decomposition)


def _affine_grads(gx, weight, bias, gw, gb) -> tuple:
    grads = [gx]
    if weight is not None:
        grads.append(gw if weight._requires_grad else None)
    if bias is not None:
        grads.append(gb if bias._requires_grad else None)
    return tuple(grads)


def _affine_ops(xhat: Tensor, weight, bias, affine: tuple, shape: tuple) -> Tensor:
    """``xhat * weight + bias`` in differentiable ops; ``affine`` holds the (aliased) weight and
    bias that are not None, in that order, each reshaped to ``shape`` to broadcast."""
    affine = list(affine)
    if weight is not None:
        xhat = _t.mul(xhat, _t.reshape(affine.pop(0), shape))
    if bias is not None:
        xhat = _t.add(xhat, _t.reshape(affine.pop(0), shape))
    return xhat


def _bn_op(out, input, weight, bias, backward, decomposition) -> Tensor:
    inputs = (input,) + tuple(t for t in (weight, bias) if t is not None)
    graph = None if decomposition is None else (lambda g: vjp_via(decomposition, inputs, g))
    return _op(out, inputs, backward, "NativeBatchNormBackward0", graph=graph)


def _per_shard(mean, var, n) -> list:
    """(mean, var, n) of each micro-shard: n is a tuple when a segmented pass stacked them."""
    if isinstance(n, tuple):
        return list(zip(mean, var, n))
    return [(mean, var, n)]


def _unbiased(var: np.ndarray, n: int) -> np.ndarray:
    return var * (n / (n - 1))


def _update_running(running_mean: np.ndarray, running_var: np.ndarray, mean, var_unbiased,
                    factor: float) -> None:
    """running = (1 - factor) * running + factor * batch, in place."""
    running_mean *= 1.0 - factor
    running_mean += factor * np.asarray(mean, dtype=running_mean.dtype)
    running_var *= 1.0 - factor
    running_var += factor * np.asarray(var_unbiased, dtype=running_var.dtype)


def _check_channels(name: str, X: np.ndarray, num: int, what: str) -> None:
    if X.ndim < 2 or X.shape[1] != num:
        raise RuntimeError(f"{name}: {what} has {num} elements but the input of shape "
                           f"{tuple(X.shape)} has {X.shape[1] if X.ndim > 1 else 'no'} channels "
                           "(dim 1)")


def batch_norm(input: Tensor, running_mean, running_var, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization over dim 1, as ``F.batch_norm``.

    In training the batch statistics normalize and, when given, ``running_mean``/``running_var``
    are updated in place with ``momentum`` (unbiased variance); otherwise the running stats
    normalize.
    """
    X = input._data
    rm, rv = _data(running_mean), _data(running_var)
    _check_dtypes("batch_norm", X, weight=_data(weight), bias=_data(bias))
    for label, t in (("running_mean", rm), ("running_var", rv), ("weight", _data(weight)),
                     ("bias", _data(bias))):
        if t is not None:
            _check_channels("batch_norm", X, t.shape[0] if t.ndim else -1, label)
    if training:
        out, mean, var, n = _batch_norm_train(input, weight, bias, eps)
        if rm is not None and rv is not None:
            for m, v, k in _per_shard(mean, var, n):
                _update_running(rm, rv, m, _unbiased(v, k), momentum)
        return out
    if rm is None or rv is None:
        raise RuntimeError("batch_norm: running_mean and running_var must be given when "
                           "training=False")
    return _batch_norm_eval(input, weight, bias, rm, rv, eps)


def _add_affine(module, shape, affine: bool, bias: bool, dtype, filled: bool = True) -> None:
    """Gives ``module`` a weight of ones and a bias of zeros of ``shape`` (or ``None``s);
    ``filled=False`` leaves them unwritten for a ``reset_parameters`` that follows, so their
    memory is only touched after registration (where a loading file's memory budget is
    enforced)."""
    dtype = np.dtype(dtype) if dtype is not None else get_default_dtype()
    ones, zeros = (np.ones, np.zeros) if filled else (np.empty, np.empty)
    if affine:
        module.weight = Parameter(ones(shape, dtype=dtype))
        if bias:
            module.bias = Parameter(zeros(shape, dtype=dtype))
        else:
            module.register_parameter("bias", None)
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def _reset_affine(module) -> None:
    """Sets the module's weight (if any) to 1 and its bias (if any) to 0."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


# ----------------------------------------------------------------------- batch norm
class _BatchNorm(Module):
    """Shared body of BatchNorm1d/2d: parameters, buffers, the forward and the stats update."""

    _ranks: tuple = ()
    _shape_text = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, bias: bool = True):
        super().__init__()
        check_device(device)
        if not isinstance(num_features, numbers.Integral) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = np.dtype(dtype) if dtype is not None else get_default_dtype()
        shape = (self.num_features,)
        _add_affine(self, shape, affine, bias, dtype, filled=False)  # reset_parameters fills
        if track_running_stats:
            self.register_buffer("running_mean", Tensor._wrap(np.zeros(shape, dtype=dtype)))
            self.register_buffer("running_var", Tensor._wrap(np.ones(shape, dtype=dtype)))
            self.register_buffer("num_batches_tracked",
                                 Tensor._wrap(np.zeros((), dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Zero mean, unit variance, no batches seen."""
        if self.track_running_stats:
            self.running_mean._data[...] = 0
            self.running_var._data[...] = 1
            self.num_batches_tracked._data[...] = 0

    def reset_parameters(self) -> None:
        """Reset the running stats, and the affine parameters to weight 1, bias 0."""
        self.reset_running_stats()
        _reset_affine(self)

    def _check_input(self, input: Tensor) -> None:
        name = type(self).__name__
        if input.ndim not in self._ranks:
            raise ValueError(f"{name}: expected {self._shape_text} input, got shape "
                             f"{tuple(input.shape)}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{name}({self.num_features}): expected {self.num_features} "
                             f"channels in dim 1, got input of shape {tuple(input.shape)}")
        _check_dtypes(name, input._data, weight=_data(self.weight), bias=_data(self.bias),
                      running_mean=_data(self.running_mean))

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input)
        has_stats = self.running_mean is not None and self.running_var is not None
        if self.training or not has_stats:
            out, mean, var, n = _batch_norm_train(input, self.weight, self.bias, self.eps)
            if self.training and self.track_running_stats and has_stats:
                seg, records = active_segments(input._data), _active_collector()
                for shard, (m, v, k) in enumerate(_per_shard(mean, var, n)):
                    if records is not None and seg is not None:
                        records = seg.bn_records[shard]  # the computer files them per shard
                    if records is None:
                        self.apply_batch_stats(m, _unbiased(v, k))
                    else:
                        records.append((self, m, _unbiased(v, k), k))
            return out
        return _batch_norm_eval(input, self.weight, self.bias, self.running_mean._data,
                                self.running_var._data, self.eps)

    def apply_batch_stats(self, mean, var_unbiased) -> None:
        """The running-stat update of one training forward, from its batch mean and unbiased var.

        Increments ``num_batches_tracked``; momentum=None gives the cumulative average.
        """
        if self.running_mean is None or self.running_var is None:
            raise RuntimeError(f"{type(self).__name__}: apply_batch_stats needs running stats "
                               "(track_running_stats=True)")
        for label, value in (("mean", mean), ("var_unbiased", var_unbiased)):
            shape = np.shape(value._data if isinstance(value, Tensor) else value)
            if shape != (self.num_features,):
                raise ValueError(f"{type(self).__name__}.apply_batch_stats: {label} must have "
                                 f"shape ({self.num_features},), got {shape}")
        factor = self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked._data += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked._data)
        elif factor is None:
            factor = 0.0
        _update_running(self.running_mean._data, self.running_var._data, _data(mean),
                        _data(var_unbiased), factor)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) input over all but the channel dim."""

    _ranks = (2, 3)
    _shape_text = "a 2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) input over all but the channel dim."""

    _ranks = (4,)
    _shape_text = "a 4-D (N, C, H, W)"


# ----------------------------------------------------------------------- layer norm
def _normalized_shape(normalized_shape) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(d) for d in normalized_shape)


def layer_norm(input: Tensor, normalized_shape, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` dims, as ``F.layer_norm``."""
    shape = _normalized_shape(normalized_shape)
    X = input._data
    W, B = _data(weight), _data(bias)
    _check_dtypes("layer_norm", X, weight=W, bias=B)
    if not shape or X.shape[X.ndim - len(shape):] != shape or X.ndim < len(shape):
        raise RuntimeError(f"layer_norm: normalized_shape {shape} expects input of shape "
                           f"(*, {', '.join(map(str, shape))}), got {tuple(X.shape)}")
    for label, t in (("weight", W), ("bias", B)):
        if t is not None and t.shape != shape:
            raise RuntimeError(f"layer_norm: {label} of shape {tuple(t.shape)} does not match "
                               f"normalized_shape {shape}")
    d = int(np.prod(shape))
    X2 = X.reshape(-1, d)
    w, b = (None if W is None else W.reshape(-1)), (None if B is None else B.reshape(-1))
    mean_vec = np.full(d, 1.0 / d, dtype=X.dtype)  # row means as one BLAS matrix-vector product
    xhat = X2 - (X2 @ mean_vec)[:, None]
    invstd = 1.0 / np.sqrt(np.einsum("nd,nd->n", xhat, xhat) / d + eps)
    xhat *= invstd[:, None]
    out = xhat * w if w is not None else xhat.copy()
    if b is not None:
        out += b

    def backward(grad):
        G = grad.reshape(-1, d)
        gx = None
        if input._requires_grad:
            gxhat = G * w if w is not None else G
            # (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)) * invstd, row by row
            gx = xhat * (-np.einsum("nd,nd->n", gxhat, xhat) / d)[:, None]
            gx += gxhat
            gx -= (gxhat @ mean_vec)[:, None]
            gx *= invstd[:, None]
            gx = gx.reshape(X.shape)
        gw = np.einsum("nd,nd->d", G, xhat).reshape(shape) if W is not None else None
        gb = G.sum(axis=0).reshape(shape) if B is not None else None
        return _affine_grads(gx, weight, bias, gw, gb)

    def decomposition(x, *affine):
        x2 = _t.reshape(x, (-1, d))
        centered = _t.sub(x2, _t.mean(x2, 1, keepdim=True))
        var_t = _t.mean(_t.mul(centered, centered), 1, keepdim=True)
        xhat_t = _t.div(centered, _t.sqrt(_t.add(var_t, eps)))
        return _t.reshape(_affine_ops(xhat_t, weight, bias, affine, (d,)), X.shape)

    inputs = (input,) + tuple(t for t in (weight, bias) if t is not None)
    return _op(out.reshape(X.shape), inputs, backward, "NativeLayerNormBackward0",
               graph=lambda g: vjp_via(decomposition, inputs, g))


class LayerNorm(Module):
    """Layer normalization over the trailing dims, with optional elementwise affine."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        check_device(device)
        self.normalized_shape = _normalized_shape(normalized_shape)
        if any(d < 1 for d in self.normalized_shape):
            raise ValueError(f"normalized_shape must be positive, got {self.normalized_shape}")
        self.eps, self.elementwise_affine = eps, elementwise_affine
        _add_affine(self, self.normalized_shape, elementwise_affine, bias, dtype)

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


# ------------------------------------------------------------------------ group norm
def group_norm(input: Tensor, num_groups: int, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Normalize (N, C, *) input over each group of C/num_groups channels, as ``F.group_norm``."""
    X = input._data
    W, B = _data(weight), _data(bias)
    _check_dtypes("group_norm", X, weight=W, bias=B)
    if X.ndim < 2:
        raise RuntimeError(f"group_norm: expected an input of shape (N, C, *), got "
                           f"{tuple(X.shape)}")
    n, c = X.shape[:2]
    if not isinstance(num_groups, numbers.Integral) or num_groups < 1 or c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, "
                           f"but got input of shape {list(X.shape)} and num_groups={num_groups}")
    for label, t in (("weight", W), ("bias", B)):
        if t is not None and t.shape != (c,):
            raise RuntimeError(f"group_norm: {label} of shape {tuple(t.shape)} does not match "
                               f"the {c} channels of input of shape {tuple(X.shape)}")
    g = int(num_groups)
    X3 = X.reshape(n, g, -1)
    d = X3.shape[2]
    xhat = X3 - X3.mean(axis=2, keepdims=True)
    invstd = 1.0 / np.sqrt(np.einsum("ngd,ngd->ng", xhat, xhat) / max(d, 1) + eps)
    xhat *= invstd[:, :, None]
    xc = xhat.reshape(n, c, -1)  # per channel, for the affine part
    out = xc * W[:, None] if W is not None else xc.copy()
    if B is not None:
        out += B[:, None]

    def backward(grad):
        G = grad.reshape(n, c, -1)
        gx = None
        if input._requires_grad:
            gxhat = (G * W[:, None] if W is not None else G).reshape(n, g, d)
            gx = xhat * (-np.einsum("ngd,ngd->ng", gxhat, xhat) / d)[:, :, None]
            gx += gxhat
            gx -= gxhat.mean(axis=2, keepdims=True)
            gx *= invstd[:, :, None]
            gx = gx.reshape(X.shape)
        gw = np.einsum("ncl,ncl->c", G, xc) if W is not None else None
        gb = G.sum(axis=(0, 2)) if B is not None else None
        return _affine_grads(gx, weight, bias, gw, gb)

    def decomposition(x, *affine):
        x3 = _t.reshape(x, (n, g, -1))
        centered = _t.sub(x3, _t.mean(x3, 2, keepdim=True))
        var_t = _t.div(_t.sum(_t.mul(centered, centered), 2, keepdim=True), max(d, 1))
        xhat_t = _t.reshape(_t.div(centered, _t.sqrt(_t.add(var_t, eps))), (n, c, -1))
        return _t.reshape(_affine_ops(xhat_t, weight, bias, affine, (c, 1)), X.shape)

    inputs = (input,) + tuple(t for t in (weight, bias) if t is not None)
    return _op(out.reshape(X.shape), inputs, backward, "NativeGroupNormBackward0",
               graph=lambda g: vjp_via(decomposition, inputs, g))


class GroupNorm(Module):
    """Group normalization of (N, C, *) input, with per-channel affine parameters."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, dtype=None, *, bias: bool = True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps, self.affine = eps, affine
        _add_affine(self, num_channels, affine, bias, dtype)

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim < 2 or input.shape[1] != self.num_channels:
            raise RuntimeError(f"GroupNorm: expected input of shape (N, {self.num_channels}, *), "
                               f"got {tuple(input.shape)}")
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


# ------------------------------------------------------------------------- normalize
def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim``, as ``F.normalize``."""
    X = input._data
    _check_dtypes("normalize", X)
    if X.ndim == 0 or not -X.ndim <= dim < X.ndim:
        raise IndexError(f"Dimension out of range (expected to be in range of "
                         f"[{-max(X.ndim, 1)}, {max(X.ndim, 1) - 1}], but got {dim})")
    p = float(p)
    if not p > 0:
        raise ValueError(f"normalize: p must be positive, got {p}")
    ax = np.abs(X)
    if p == math.inf:
        norm = ax.max(axis=dim, keepdims=True)
    elif p == 2:
        norm = np.sqrt((X * X).sum(axis=dim, keepdims=True))
    else:
        norm = (ax ** p).sum(axis=dim, keepdims=True) ** (1 / p)
    denom = np.maximum(norm, eps).astype(X.dtype)

    def backward(g):
        gx = g / denom
        through = norm >= eps  # where the clamp passes the norm's gradient
        with np.errstate(divide="ignore", invalid="ignore"):
            if p == math.inf:
                top = ax == norm
                dnorm = np.sign(X) * top / top.sum(axis=dim, keepdims=True)
            elif p == 2:
                dnorm = X / norm
            else:
                dnorm = np.sign(X) * (ax / norm) ** (p - 1)
            coef = (g * X).sum(axis=dim, keepdims=True) / (denom * denom)
            gx -= np.where(through & (norm > 0), coef * dnorm, 0)
        return (gx.astype(X.dtype, copy=False),)

    def decomposition(x):
        return _t.div(x, _t.clamp(norm_(x, p, dim, keepdim=True), min=eps))

    return _op(X / denom, (input,), backward, "DivBackward0",
               graph=lambda g: vjp_via(decomposition, (input,), g))
