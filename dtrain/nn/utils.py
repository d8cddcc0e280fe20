"""Gradient clipping utilities with PyTorch's semantics (in place, returning the total norm)."""

from __future__ import annotations

import numpy as np

from ..autograd.tensor import Tensor
from . import global_sums


def _grads(parameters) -> list:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so their joint ``norm_type`` norm is at most ``max_norm``.

    The norm is PyTorch's (the norm of the per-tensor norms) unless a trainer has installed
    its range-wise sums (``dtrain.nn.global_sums``), which fix the bits for any worker count.
    """
    with_grad = [p for p in ([parameters] if isinstance(parameters, Tensor) else parameters)
                 if p.grad is not None]
    grads = [p.grad for p in with_grad]
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not grads:
        return Tensor._make(0.0)
    dtype = grads[0].dtype
    total = global_sums.current().grad_norm([g._data for g in grads], with_grad, norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
            "so it cannot be clipped. To disable this error and scale the gradients by the "
            "non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    coef = clip_coefficient(total, max_norm, dtype)
    for g in grads:
        g._data *= coef
    return Tensor._wrap(total)


def clip_coefficient(total: np.ndarray, max_norm: float, dtype) -> np.ndarray:
    """The factor ``clip_grad_norm_`` scales every gradient by, PyTorch's
    ``min(max_norm / (total + 1e-6), 1)`` in the gradients' dtype (``total``: a 0-d array of
    it). One function, so the sharded reduction's coordinator computes the same bits."""
    coef = np.asarray(max_norm / (total + 1e-6), dtype=dtype)
    return np.minimum(coef, np.asarray(1.0, dtype=dtype))


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clip every gradient element into [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        np.clip(g._data, -clip_value, clip_value, out=g._data)


def parameters_to_vector(parameters) -> Tensor:
    """Concatenate the parameters into one flat tensor (a copy)."""
    return Tensor._wrap(np.concatenate([p._data.ravel() for p in parameters]))


def vector_to_parameters(vec: Tensor, parameters) -> None:
    """Copy slices of a flat vector back into the parameters, in order."""
    data = vec._data if isinstance(vec, Tensor) else np.asarray(vec)
    offset = 0
    for p in parameters:
        n = p._data.size
        p._data[...] = data[offset:offset + n].reshape(p.shape)
        offset += n
    if offset != data.size:
        raise ValueError(f"vector has {data.size} elements but the parameters hold {offset}")
