"""Ops that cut, tile or accumulate along a dimension: ``split``, ``chunk``, ``unbind``,
``repeat``, ``cumsum``, and the vector ``norm``."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import tensor as _t
from .tensor import Tensor


def split(input: Tensor, split_size_or_sections, dim: int = 0) -> tuple:
    """Pieces of ``split_size`` along ``dim`` (the last may be shorter), or of the given sizes.

    Each piece is a differentiable view of ``input`` (it shares memory, as torch's).
    """
    d = _t._normalize_dims(dim, input._data.ndim)[0]
    n = input._data.shape[d]
    if isinstance(split_size_or_sections, numbers.Integral):
        size = int(split_size_or_sections)
        if size <= 0 and n:
            raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got "
                               f"dimension size of {n}")
        sizes = [min(size, n - start) for start in range(0, n, size)] if n else [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} "
                               f"(input tensor's size at dimension {d}), but got "
                               f"split_sizes={sizes}")
    name = "SplitBackward0" if isinstance(split_size_or_sections, numbers.Integral) \
        else "SplitWithSizesBackward0"
    pieces, start = [], 0
    for size in sizes:
        pieces.append(_piece(input, (slice(None),) * d + (slice(start, start + size),), name))
        start += size
    return tuple(pieces)


def _piece(input: Tensor, key: tuple, name: str) -> Tensor:
    """The view ``input[key]``; its gradient lands in that slice of zeros."""
    A = input._data

    def backward(g):
        grad = np.zeros_like(A)
        grad[key] = g
        return (grad,)

    return _t._op(A[key], (input,), backward, name,
                  graph=lambda g: (_t._index_add_zeros(A.shape, key, g),))


def unbind(input: Tensor, dim: int = 0) -> tuple:
    """The slices along ``dim``, that dimension removed (views of ``input``)."""
    A = input._data
    if A.ndim == 0:
        raise IndexError("Dimension specified as 0 but tensor has no dimensions")
    d = _t._normalize_dims(dim, A.ndim)[0]
    return tuple(_piece(input, (slice(None),) * d + (i,), "UnbindBackward0")
                 for i in range(A.shape[d]))


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple:
    """Up to ``chunks`` pieces of equal size along ``dim`` (ceil(n / chunks); the last shorter)."""
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    n = input._data.shape[_t._normalize_dims(dim, input._data.ndim)[0]]
    return split(input, max(math.ceil(n / chunks), 1), dim)


def repeat(input: Tensor, sizes) -> Tensor:
    """``input`` tiled ``sizes[i]`` times along each dimension (new leading ones when longer)."""
    sizes = tuple(int(s) for s in sizes)
    A = input._data
    if len(sizes) < A.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number "
                           "of dimensions of tensor")
    base = (1,) * (len(sizes) - A.ndim) + A.shape
    out = np.tile(A.reshape(base), sizes)

    def backward(g):
        # (r0, s0, r1, s1, ...): sum over every repeat axis
        paired = g.reshape(tuple(v for pair in zip(sizes, base) for v in pair))
        return (paired.sum(axis=tuple(range(0, 2 * len(sizes), 2))).reshape(A.shape),)

    def graph(g):
        paired = _t.reshape(g, tuple(v for pair in zip(sizes, base) for v in pair))
        return (_t.reshape(_t.sum(paired, tuple(range(0, 2 * len(sizes), 2))), A.shape),)

    return _t._op(out, (input,), backward, "RepeatBackward0", graph=graph)


def cumsum(input: Tensor, dim: int, *, dtype=None) -> Tensor:
    """Running sums along ``dim``; integer and bool inputs sum in int64, as torch."""
    A = input._data
    if dtype is not None:
        input = input.type(dtype)
        A = input._data
    elif A.dtype.kind in "biu":
        A = A.astype(np.int64)
    d = _t._normalize_dims(dim, A.ndim)[0] if A.ndim else None
    out = np.cumsum(A, axis=d).reshape(A.shape)

    def backward(g):
        if d is None:
            return (g,)
        return (np.flip(np.cumsum(np.flip(g, d), axis=d), d),)

    def graph(g):
        if d is None:
            return (g,)
        # the sum over j >= i of g_j, as total - running sum + g_i
        return (_t.add(_t.sub(_t.sum(g, d, keepdim=True), cumsum(g, d)), g),)

    return _t._op(out, (input,), backward, "CumsumBackward0", graph=graph)


def norm(input: Tensor, p="fro", dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """The vector p-norm over ``dim`` (all elements by default); 'fro' is the 2-norm.

    p may be any positive number, 0 (count of non-zeros), inf or -inf. Where the norm is 0 the
    gradient is 0, as torch's.
    """
    if dtype is not None:
        input = input.type(dtype)
    A = input._data
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex tensor as "
                           f"input. Got {_t._torch_name(A.dtype)}")
    if p == "fro" or p is None:
        p = 2
    if isinstance(p, str) or not isinstance(p, numbers.Real):
        raise TypeError(f"norm(): p must be a number, inf or 'fro', got {p!r}")
    dims = _t._normalize_dims(dim, A.ndim) if A.ndim and dim is not None else None
    absA = np.abs(A)
    with np.errstate(all="ignore"):
        if p == math.inf:
            out = absA.max(axis=dims, keepdims=True)
        elif p == -math.inf:
            out = absA.min(axis=dims, keepdims=True)
        elif p == 0:
            out = (A != 0).sum(axis=dims, keepdims=True).astype(A.dtype)
        else:
            out = (absA ** p).sum(axis=dims, keepdims=True) ** (1.0 / p)
    out = out.astype(A.dtype, copy=False)
    result = out if keepdim else (out.reshape(()) if dims is None else out.squeeze(dims))

    def backward(g):
        gk = g if keepdim else (np.reshape(g, out.shape))
        with np.errstate(all="ignore"):
            if p in (math.inf, -math.inf):
                hit = absA == out
                grad = np.sign(A) * hit * gk / hit.sum(axis=dims, keepdims=True)
            elif p == 0:
                grad = np.zeros_like(A)
            else:
                grad = np.sign(A) * absA ** (p - 1) * gk / out ** (p - 1)
        return (np.where(out == 0, 0, grad).astype(A.dtype, copy=False),)

    def graph(g):
        gk = _t.reshape(g, out.shape)
        if p == 0:
            return (_t._zeros_like(input),)
        if p in (math.inf, -math.inf):
            hit = absA == out
            share = (np.sign(A) * hit / hit.sum(axis=dims, keepdims=True)).astype(A.dtype)
            return (_t.mul(gk, share),)
        kept = norm(input, p, dims, keepdim=True)
        if p == 2:
            grad = _t.div(_t.mul(input, gk), kept)
        else:
            sign = np.sign(A).astype(A.dtype)
            grad = _t.div(_t.mul(_t.mul(_t.pow(_t.abs(input), p - 1), sign), gk),
                          _t.pow(kept, p - 1))
        return (_t.where(out == 0, 0, grad),)

    return _t._op(np.asarray(result), (input,), backward, "LinalgVectorNormBackward0",
                  graph=graph)
