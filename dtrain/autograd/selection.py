"""Ops whose result size depends on the values: ``nonzero``/``argwhere``, ``masked_select``,
``unique``, ``bincount``; and ``diag`` (a vector to a diagonal matrix and back)."""

from __future__ import annotations

import numpy as np

from . import tensor as _t
from .tensor import Tensor


def nonzero(input: Tensor, *, as_tuple: bool = False):
    """Indices of the non-zero elements: an (n, ndim) int64 tensor, or one tensor per dim."""
    A = input._data
    if as_tuple:
        return tuple(Tensor._wrap(i.astype(np.int64)) for i in np.nonzero(np.atleast_1d(A)))
    return Tensor._wrap(np.argwhere(A).astype(np.int64))


def argwhere(input: Tensor) -> Tensor:
    return nonzero(input)


def masked_select(input: Tensor, mask) -> Tensor:
    """The elements of ``input`` where the boolean ``mask`` (broadcast) is True, as a 1-D tensor."""
    M = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if M.dtype != np.bool_:
        raise RuntimeError(f"masked_select: expected BoolTensor for mask, got {M.dtype}")
    A = input._data
    shape = np.broadcast_shapes(A.shape, M.shape)
    full_mask = np.broadcast_to(M, shape)

    def backward(g):
        grad = np.zeros(shape, A.dtype)
        grad[full_mask] = g
        return (_t._unbroadcast(grad, A.shape),)

    return _t._op(np.broadcast_to(A, shape)[full_mask], (input,), backward,
                  "MaskedSelectBackward0")


def unique(input: Tensor, sorted: bool = True, return_inverse: bool = False,
           return_counts: bool = False, dim=None):
    """The distinct values (sorted), with the inverse indices and counts when asked."""
    A = input._data
    axis = None if dim is None else _t._normalize_dims(dim, A.ndim)[0]
    values, inverse, counts = np.unique(A, return_inverse=True, return_counts=True, axis=axis)
    out = [Tensor._wrap(values)]
    if return_inverse:
        shape = A.shape if axis is None else (A.shape[axis],)
        out.append(Tensor._wrap(inverse.reshape(shape).astype(np.int64)))
    if return_counts:
        out.append(Tensor._wrap(counts.astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)


def bincount(input: Tensor, weights=None, minlength: int = 0) -> Tensor:
    """Counts of each value of a 1-D non-negative integer tensor (or sums of ``weights``)."""
    A = input._data
    if A.ndim != 1 or A.dtype.kind not in "iu":
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    W = None if weights is None else _t._data(weights)
    out = np.bincount(A, weights=W, minlength=minlength)
    if W is None:
        return Tensor._wrap(out.astype(np.int64))
    dtype = W.dtype if W.dtype.kind == "f" else np.float64
    return Tensor._wrap(out.astype(dtype))


def diag(input: Tensor, diagonal: int = 0) -> Tensor:
    """A 1-D tensor becomes a square matrix with it on ``diagonal``; a 2-D tensor gives back
    that diagonal."""
    A = input._data
    if A.ndim == 1:
        out = np.diag(A, diagonal)
        return _t._op(out, (input,), lambda g: (np.diag(g, diagonal).copy(),), "DiagEmbedBackward0")
    if A.ndim == 2:
        out = np.diag(A, diagonal).copy()

        def backward(g):
            grad = np.zeros_like(A)
            steps = np.arange(len(g))
            grad[steps + max(-diagonal, 0), steps + max(diagonal, 0)] = g
            return (grad,)

        return _t._op(out, (input,), backward, "DiagonalBackward0")
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {A.ndim}D")


for _name in ("nonzero", "argwhere", "masked_select", "unique", "bincount", "diag"):
    setattr(Tensor, _name, globals()[_name])
