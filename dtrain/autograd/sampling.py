"""Random sampling from given probabilities: ``multinomial``, ``bernoulli``, ``normal``.

Draws come from the global generator (or ``generator=``), like ``rand``; the streams are NumPy's,
so the numbers differ from torch's for the same seed. Samples carry no gradient, as in torch.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import random as _random
from . import tensor as _t
from .tensor import Tensor


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *,
                generator=None) -> Tensor:
    """Indices drawn from each row's (unnormalized, non-negative) weights; int64."""
    W = np.asarray(input._data, dtype=np.float64)
    if W.ndim not in (1, 2):
        raise RuntimeError(f"prob_dist must be 1 or 2 dim, got {W.ndim}")
    if not np.isfinite(W).all() or (W < 0).any():
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    rows = W.reshape(-1, W.shape[-1])
    if (rows.sum(axis=1) <= 0).any():
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    if not replacement and num_samples > rows.shape[1]:
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without "
                           "replacement")
    gen = _random._gen(generator)
    if replacement:
        out = np.stack([gen.choice(len(p), size=num_samples, p=p / p.sum()) for p in rows])
    else:  # torch's way: the largest weight / Exp(1) keys (zero weights come last)
        keys = rows / gen.exponential(size=rows.shape)
        out = np.argsort(-keys, axis=1, kind="stable")[:, :num_samples]
    return Tensor._wrap(out.reshape(W.shape[:-1] + (num_samples,)).astype(np.int64))


def bernoulli(input: Tensor, p=None, *, generator=None) -> Tensor:
    """1 with probability ``input`` (or ``p``) per element, else 0; the input's float dtype."""
    A = input._data
    if A.dtype.kind != "f":
        raise RuntimeError(f"bernoulli: expected a floating point tensor, got {input.dtype}")
    prob = A if p is None else np.broadcast_to(np.asarray(_t._data(p), np.float64), A.shape)
    if ((prob < 0) | (prob > 1)).any():
        raise RuntimeError("Expected p_in >= 0 && p_in <= 1 to be true, but got false.")
    draws = _random.uniform(0.0, 1.0, A.shape, generator) < prob
    return Tensor._wrap(draws.astype(A.dtype))


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, requires_grad=False):
    """Samples from N(mean, std^2): tensors ``mean``/``std`` broadcast, or numbers and ``size``."""
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        m, s = _t._data(mean), _t._data(std)
        kind = next(t for t in (mean, std) if isinstance(t, Tensor))._data.dtype
        shape = np.broadcast_shapes(np.shape(m), np.shape(s))
        data = m + s * _random.normal(0.0, 1.0, shape, generator)
        return Tensor._wrap(np.asarray(data, dtype=kind))
    if size is None:
        raise TypeError("normal() with numbers for mean and std needs size=")
    if not isinstance(mean, numbers.Real) or not isinstance(std, numbers.Real):
        raise TypeError("normal(): mean and std must be numbers or tensors")
    shape = (int(size),) if isinstance(size, numbers.Integral) else tuple(size)
    data = _random.normal(mean, std, shape, generator).astype(dtype or _t.get_default_dtype())
    return Tensor._make(data, requires_grad=requires_grad)


Tensor.multinomial = multinomial
Tensor.bernoulli = bernoulli
