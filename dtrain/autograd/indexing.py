"""Index-driven ops: ``gather``, ``index_select``, ``scatter`` (and ``scatter_add``),
``masked_fill``.

Each computes its result with NumPy and defines its backward right below, as ``tensor.py``'s ops
do; the in-place forms (``scatter_``, ``masked_fill_``) go through ``Tensor._inplace`` so the
graph stays right when they are recorded.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import tensor as _t
from .tensor import Tensor


def _index_array(index, name: str) -> np.ndarray:
    arr = index._data if isinstance(index, Tensor) else np.asarray(index)
    if arr.dtype.kind not in "iu":
        raise RuntimeError(f"{name}(): Expected dtype int64 for index, got {arr.dtype}")
    return arr


def _full_index(index: np.ndarray, dim: int) -> tuple:
    """NumPy fancy-index tuple addressing ``[..., index[i, j, ...], ...]`` along ``dim``."""
    grids = list(np.indices(index.shape, sparse=True))
    grids[dim] = index
    return tuple(grids)


def _as_vector(index: np.ndarray, data: np.ndarray) -> np.ndarray:
    """A 0-d index on a 1-d input is one element, as in torch (``zeros(10).scatter_(0, tensor(3),
    value=1)``, the one-hot idiom of the tutorials)."""
    return index.reshape(1) if index.ndim == 0 and data.ndim == 1 else index


def _check_index(name: str, data: np.ndarray, index: np.ndarray, dim: int) -> None:
    if data.ndim == 0:
        raise RuntimeError(f"{name}(): dtrain needs an input with at least one dimension")
    if index.ndim != data.ndim:
        raise RuntimeError(f"Index tensor must have the same number of dimensions as input "
                           f"tensor (index has {index.ndim}, input has {data.ndim})")
    for d in range(data.ndim):
        if d != dim and index.shape[d] > data.shape[d]:
            raise RuntimeError(f"{name}(): Size does not match at dimension {d}: index has "
                               f"{index.shape[d]}, input has {data.shape[d]}")
    size = data.shape[dim]
    if index.size and (index.min() < 0 or index.max() >= size):
        bad = index.max() if index.max() >= size else index.min()
        raise RuntimeError(f"index {bad} is out of bounds for dimension {dim} with size {size}")


def gather(input: Tensor, dim: int, index) -> Tensor:
    """``out[i][j] = input[index[i][j]][j]`` along ``dim`` (index may be smaller elsewhere)."""
    A = input._data
    given = _index_array(index, "gather")
    idx = _as_vector(given, A)
    d = _t._normalize_dims(dim, max(A.ndim, 1))[0]
    _check_index("gather", A, idx, d)
    key = _full_index(idx, d)

    def backward(g):
        grad = np.zeros_like(A)
        np.add.at(grad, key, g)  # repeated indices accumulate
        return (grad,)

    return _t._op(A[key].reshape(given.shape), (input,), lambda g: backward(g.reshape(idx.shape)),
                  "GatherBackward0",
                  graph=lambda g: (_t._index_add_zeros(A.shape, key, g.reshape(idx.shape)),))


def index_select(input: Tensor, dim: int, index) -> Tensor:
    """The entries of ``input`` at the 1-D ``index`` along ``dim`` (repeats allowed)."""
    A = input._data
    idx = _index_array(index, "index_select")
    if idx.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    idx = idx.reshape(-1)
    d = _t._normalize_dims(dim, max(A.ndim, 1))[0]
    size = A.shape[d] if A.ndim else 1
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        bad = idx.max() if idx.max() >= size else idx.min()
        raise RuntimeError(f"index_select(): index {bad} is out of bounds for dimension {d} "
                           f"with size {size}")
    if A.ndim == 0:
        return _t._op(A.copy(), (input,), lambda g: (g,), "IndexSelectBackward0",
                      graph=lambda g: (g,))

    def backward(g):
        grad = np.zeros_like(A)
        np.add.at(grad, (slice(None),) * d + (idx,), g)  # repeated indices accumulate
        return (grad,)

    def graph(g):
        return (_t._index_add_zeros(A.shape, (slice(None),) * d + (idx,), g),)

    return _t._op(np.take(A, idx, axis=d), (input,), backward, "IndexSelectBackward0",
                  graph=graph)


def scatter(input: Tensor, dim: int, index, src=None, *, value=None, reduce=None) -> Tensor:
    """A copy of ``input`` with ``out[index[i][j]][j] = src[i][j]`` (or ``value``) along ``dim``.

    With ``reduce='add'`` or ``'multiply'`` the values are combined instead of written.
    """
    if src is None and value is None:
        raise TypeError("scatter() needs src (a Tensor) or value (a number)")
    if reduce not in (None, "add", "multiply"):
        raise RuntimeError(f"reduce argument must be either add or multiply, got {reduce!r}")
    if src is not None and not isinstance(src, Tensor):
        src, value = None, src  # scatter(dim, index, 2.5): torch's value overload
    A = input._data
    idx = _as_vector(_index_array(index, "scatter"), A)
    d = _t._normalize_dims(dim, max(A.ndim, 1))[0]
    _check_index("scatter", A, idx, d)
    src_data = _as_vector(src._data, A) if src is not None else None
    if src is not None and any(i > n for i, n in zip(idx.shape, src_data.shape)):
        raise RuntimeError(f"scatter(): Expected index {tuple(idx.shape)} to be smaller than "
                           f"src {tuple(src._data.shape)} in every dimension")
    key = _full_index(idx, d)
    if src is not None:
        S = src_data[tuple(slice(0, n) for n in idx.shape)].astype(A.dtype, copy=False)
    else:
        S = np.full(idx.shape, _t._data(value), dtype=A.dtype)
    out = A.copy()
    if reduce is None:
        out[key] = S
    elif reduce == "add":
        np.add.at(out, key, S)
    else:
        np.multiply.at(out, key, S)
    if reduce == "multiply" and (input._requires_grad or src is not None and src._requires_grad):
        raise NotImplementedError("scatter(reduce='multiply') is not differentiable in dtrain")

    def backward(g):
        ga = gs = None
        if input._requires_grad:
            ga = g.copy()
            if reduce is None:
                ga[key] = 0
        if src is not None and src._requires_grad:
            gs = np.zeros_like(src_data)
            gs[tuple(slice(0, n) for n in idx.shape)] = g[key]
            gs = gs.reshape(src._data.shape)
        return ga, gs

    def graph(g):
        ga = gs = None
        if input._requires_grad:
            ga = g if reduce is not None else _t.index_put(g, key, 0)
        if src is not None and src._requires_grad:
            window = tuple(slice(0, n) for n in idx.shape)
            gs = _t._index_add_zeros(src._data.shape, window, _t.getitem(g, key))
        return (ga, gs)[: len(inputs)]

    inputs = (input,) if src is None else (input, src)
    name = ("ScatterAddBackward0" if reduce == "add" else
            "ScatterBackward0" if src is not None else "ScatterBackward1")
    return _t._op(out, inputs, lambda g: backward(g)[: len(inputs)], name, graph=graph)


def scatter_add(input: Tensor, dim: int, index, src: Tensor) -> Tensor:
    """``scatter`` that adds ``src`` into the indexed places (repeats accumulate)."""
    return scatter(input, dim, index, src, reduce="add")


def masked_fill(input: Tensor, mask, value) -> Tensor:
    """``input`` with ``value`` where the boolean ``mask`` (broadcast) is True; dtype kept."""
    M = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if M.dtype != np.bool_:
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype "
                           f"{M.dtype}")
    if isinstance(value, Tensor) and value.ndim != 0:
        raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but got "
                           f"tensor with {value.ndim} dimension(s).")
    if not isinstance(value, (Tensor, numbers.Number)):
        raise TypeError(f"masked_fill(): value must be a number or a 0-d Tensor, got "
                        f"{type(value).__name__}")
    A = input._data
    try:
        shape = np.broadcast_shapes(A.shape, M.shape)
    except ValueError:
        raise RuntimeError(f"The size of the mask {tuple(M.shape)} must match the size of the "
                           f"input {tuple(A.shape)}") from None
    if shape != A.shape:
        raise RuntimeError(f"masked_fill: the mask {tuple(M.shape)} must broadcast to the input "
                           f"{tuple(A.shape)} without growing it")
    V = np.asarray(_t._data(value)).astype(A.dtype)
    out = np.where(M, V, A)
    value_t = value if isinstance(value, Tensor) else None

    def backward(g):
        ga = np.where(M, 0, g).astype(g.dtype, copy=False) if input._requires_grad else None
        if value_t is not None and value_t._requires_grad:
            gv = np.asarray(np.where(M, g, 0).sum(), dtype=value_t._data.dtype)
            return ga, gv
        return (ga,) if value_t is None else (ga, None)

    def graph(g):
        ga = _t.where(M, 0, g) if input._requires_grad else None
        if value_t is not None and value_t._requires_grad:
            gv = _t.sum(_t.where(M, g, 0))
            return ga, gv if gv._data.dtype == value_t._data.dtype else gv.type(value_t.dtype)
        return (ga,) if value_t is None else (ga, None)

    inputs = (input,) if value_t is None else (input, value_t)
    return _t._op(out, inputs, backward, "MaskedFillBackward0", graph=graph)
