"""Order ops: ``sort``, ``argsort``, ``topk`` (values with their indices, as torch's named tuples).

Sorting is stable (ties keep their order); the values' gradient goes back to the positions the
values came from.
"""

from __future__ import annotations

import numpy as np

from . import return_types
from . import tensor as _t
from .tensor import Tensor


def _order(A: np.ndarray, d: int, descending: bool) -> np.ndarray:
    """Stable sorting indices along ``d``; descending keeps ties in their original order."""
    if not descending:
        return np.argsort(A, axis=d, kind="stable")
    # reverse, sort ascending stably, reverse back: equal elements keep their original order
    flipped = np.flip(A, axis=d)
    order = np.flip(np.argsort(flipped, axis=d, kind="stable"), axis=d)
    return A.shape[d] - 1 - order


def _taken(a: Tensor, idx: np.ndarray, d: int, name: str) -> Tensor:
    """``a``'s values at ``idx`` along ``d``, differentiable back to their positions."""
    A = a._data

    def backward(g):
        grad = np.zeros_like(A)
        np.put_along_axis(grad, idx, g, axis=d)
        return (grad,)

    def graph(g):
        from .indexing import _full_index

        return (_t._index_add_zeros(A.shape, _full_index(idx, d), g),)

    return _t._op(np.take_along_axis(A, idx, axis=d), (a,), backward, name, graph=graph)


def _dim(a: Tensor, dim: int) -> int:
    return _t._normalize_dims(dim, a._data.ndim)[0] if a._data.ndim else 0


def sort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False):
    """``(values, indices)`` sorted along ``dim`` (stable whatever ``stable`` says)."""
    A = input._data
    if A.ndim == 0:
        return return_types.sort(input.clone(), Tensor._wrap(np.zeros((), np.int64)))
    d = _dim(input, dim)
    idx = _order(A, d, descending)
    return return_types.sort(_taken(input, idx, d, "SortBackward0"),
                             Tensor._wrap(idx.astype(np.int64)))


def argsort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False):
    """The indices that sort ``input`` along ``dim``."""
    if input._data.ndim == 0:
        return Tensor._wrap(np.zeros((), np.int64))
    return Tensor._wrap(_order(input._data, _dim(input, dim), descending).astype(np.int64))


def topk(input: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
    """The ``k`` largest (or smallest) values along ``dim`` with their indices, largest first."""
    A = input._data
    d = _dim(input, dim)
    size = A.shape[d] if A.ndim else 1
    if not 0 <= k <= size:
        raise RuntimeError(f"selected index k out of range: k={k} for dimension {d} of size "
                           f"{size}")
    if A.ndim == 0:
        return return_types.topk(input.clone(), Tensor._wrap(np.zeros((), np.int64)))
    idx = np.take(_order(A, d, descending=largest), np.arange(k), axis=d)
    return return_types.topk(_taken(input, idx, d, "TopkBackward0"),
                             Tensor._wrap(idx.astype(np.int64)))
