"""``Embedding``: a lookup table of vectors indexed by integer ids, as ``torch.nn.Embedding``.

The gradient of the table is dense: output-gradient rows are grouped by id and summed, so
repeated ids add up (in index order, which is deterministic), and the ``padding_idx`` row never
receives any.
"""

from __future__ import annotations

import numpy as np

from ..autograd import tensor as _t
from ..autograd.device import check_device
from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor, _op, get_default_dtype
from . import init
from .module import Module
from .parameter import Parameter


def _indices(input, num_embeddings: int) -> np.ndarray:
    idx = input._data if isinstance(input, Tensor) else np.asarray(input)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be an integer tensor (int64 or int32), got "
                        f"dtype {idx.dtype}")
    if idx.size:
        bad = (idx < 0) | (idx >= num_embeddings)
        if bad.any():
            value = idx[bad].flat[0]
            raise IndexError(f"embedding: index {value} is out of range for num_embeddings="
                             f"{num_embeddings} (valid indices are 0 to {num_embeddings - 1})")
    return idx


def _padding_index(padding_idx, num_embeddings: int) -> int | None:
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"padding_idx {padding_idx} must be within num_embeddings "
                         f"({num_embeddings})")
    return padding_idx % num_embeddings


def _renorm_(weight: np.ndarray, idx: np.ndarray, max_norm: float, norm_type: float) -> None:
    """Scale the referenced rows whose norm exceeds ``max_norm`` down to it, in place."""
    rows = np.unique(idx)
    norms = np.linalg.norm(weight[rows], ord=norm_type, axis=1)
    over = norms > max_norm
    if over.any():
        scale = (max_norm / (norms[over] + 1e-7)).astype(weight.dtype)
        weight[rows[over]] *= scale[:, None]


def embedding(input, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` picked by integer ``input``: output shape input.shape + (dim,)."""
    if sparse:
        raise ValueError("embedding: sparse gradients are not supported; use sparse=False")
    W = weight._data
    if W.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got "
                         f"shape {tuple(W.shape)}")
    num, dim = W.shape
    idx = _indices(input, num)
    pad = _padding_index(padding_idx, num)
    if max_norm is not None:
        with no_grad():
            _renorm_(W, idx, max_norm, norm_type)
    out = W[idx]

    def backward(grad):
        flat = idx.reshape(-1)
        rows = grad.reshape(-1, dim)
        if scale_grad_by_freq:
            counts = np.bincount(flat, minlength=num)
            rows = rows / counts[flat][:, None].astype(rows.dtype)
        gw = np.zeros(W.shape, dtype=W.dtype)
        if flat.size:  # rows grouped by id (stable sort), each group summed in order
            order = np.argsort(flat, kind="stable")
            ids = flat[order]
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            gw[ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
        if pad is not None:
            gw[pad] = 0
        return (gw,)

    def graph(grad):
        rows = _t.reshape(grad, (-1, dim))
        flat = idx.reshape(-1)
        if scale_grad_by_freq:
            counts = np.bincount(flat, minlength=num)
            rows = _t.div(rows, counts[flat][:, None].astype(W.dtype))
        if pad is not None:
            rows = _t.mul(rows, (flat != pad)[:, None].astype(W.dtype))
        return (_t._index_add_zeros(W.shape, flat, rows),)

    return _op(out, (weight,), backward, "EmbeddingBackward0", graph=graph)


class Embedding(Module):
    """A (num_embeddings, embedding_dim) table initialised N(0, 1), padding row zero."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0,
                 scale_grad_by_freq: bool = False, sparse: bool = False, _weight=None,
                 _freeze: bool = False, device=None, dtype=None):
        super().__init__()
        check_device(device)
        if sparse:
            raise ValueError("Embedding: sparse gradients are not supported; use sparse=False")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = _padding_index(padding_idx, num_embeddings)
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            dtype = np.dtype(dtype) if dtype is not None else get_default_dtype()
            self.weight = Parameter(np.empty((num_embeddings, embedding_dim), dtype=dtype),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        else:
            array = _weight._data if isinstance(_weight, Tensor) else np.asarray(_weight)
            if array.shape != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight of shape {tuple(array.shape)} does not "
                                 f"match ({num_embeddings}, {embedding_dim})")
            self.weight = Parameter(array, requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        """N(0, 1) from the global generator, then the padding row zeroed."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight._data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, padding_idx: int | None = None,
                        max_norm: float | None = None, norm_type: float = 2.0,
                        scale_grad_by_freq: bool = False, sparse: bool = False) -> Embedding:
        """An Embedding around an existing 2-D table (frozen by default)."""
        array = embeddings._data if isinstance(embeddings, Tensor) else np.asarray(embeddings)
        if array.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape "
                             f"{tuple(array.shape)}")
        return cls(array.shape[0], array.shape[1], padding_idx, max_norm, norm_type,
                   scale_grad_by_freq, sparse, _weight=array, _freeze=freeze)

    def forward(self, input) -> Tensor:
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += ", scale_grad_by_freq=True"
        if self.sparse:
            s += ", sparse=True"
        return s
