"""Dropout whose masks can be keyed by (seed, step, sample) instead of by process.

By default masks come from the global generator, as in PyTorch. Inside ``keyed_dropout(seed,
step, sample_ids)`` every dropout call draws each sample's mask from a counter-based hash of
(seed, step, call number, sample id, element), so the mask a sample gets does not depend on which
worker computed it or on which other samples shared its batch: the rule that makes distributed
training bit-identical for any number of workers.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from .. import random as _random
from ..autograd import tensor as _t
from ..autograd.tensor import Tensor, _op
from .module import Module

_keys = threading.local()

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective avalanche on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def keyed_uniform(seed: int, step: int, call: int, sample_ids: np.ndarray,
                  row_shape: tuple) -> np.ndarray:
    """Uniform [0, 1) floats of shape (len(sample_ids),) + row_shape from a stateless hash."""
    ids = np.asarray(sample_ids, dtype=np.uint64).reshape(-1, 1)
    words = np.array([seed, step, call], dtype=np.uint64)  # arrays wrap silently; scalars warn
    key = _mix64(words[:1] + _GAMMA)
    key = _mix64(key ^ (words[1:2] * _GAMMA))
    key = _mix64(key ^ (words[2:3] * _MIX1))
    per_sample = _mix64(key + ids * _GAMMA)
    n = int(np.prod(row_shape, dtype=np.int64))
    elements = np.arange(n, dtype=np.uint64).reshape(1, -1) * _GAMMA
    bits = _mix64(per_sample + elements)
    return ((bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)).reshape(
        (len(ids),) + tuple(row_shape))


@contextmanager
def keyed_dropout(seed: int, step: int, sample_ids):
    """Within this block, dropout masks depend only on (seed, step, call order, sample id)."""
    previous = getattr(_keys, "state", None)
    _keys.state = [int(seed), int(step), np.asarray(sample_ids, dtype=np.int64), 0]
    try:
        yield
    finally:
        _keys.state = previous


def _keep_mask(shape: tuple, keep: float, generator) -> np.ndarray:
    state = getattr(_keys, "state", None)
    if state is None or generator is not None:
        return _random.uniform(0.0, 1.0, shape, generator) < keep
    seed, step, ids, call = state
    state[3] = call + 1
    if not shape or shape[0] != len(ids):
        raise RuntimeError(
            f"keyed dropout: input's first dimension {shape[0] if shape else None} does not match "
            f"the {len(ids)} sample ids of this batch"
        )
    return keyed_uniform(seed, step, call, ids, shape[1:]) < keep


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            generator=None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p), in training only."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    X = input._data
    if p == 1.0:
        return input * 0.0
    scale = 1.0 / (1.0 - p)
    mask = _keep_mask(X.shape, 1.0 - p, generator)
    factor = (mask * scale).astype(X.dtype)
    return _op(X * factor, (input,), lambda g: (g * factor,), "MulBackward0",
               graph=lambda g: (_t.mul(g, factor),))


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, H, W) or (C, H, W) with probability ``p``; scale the rest."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if input.ndim not in (3, 4):
        raise RuntimeError(f"dropout2d: expected a 3D or 4D input (channels, or a batch of "
                           f"them), got {input.ndim}D")
    if not training or p == 0.0:
        return input
    X = input._data
    if p == 1.0:
        return input * 0.0
    channels = X.shape[:-2]  # one draw per channel, shared by its H x W elements
    mask = _keep_mask(channels, 1.0 - p, None).reshape(channels + (1, 1))
    factor = (mask * (1.0 / (1.0 - p))).astype(X.dtype)
    return _op(X * factor, (input,), lambda g: (g * factor,), "MulBackward0")


class Dropout(Module):
    """Randomly zero activations with probability ``p`` during training (identity in eval)."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """Randomly zero whole channels with probability ``p`` during training (identity in eval)."""

    def forward(self, input: Tensor) -> Tensor:
        return dropout2d(input, self.p, self.training)


def keyed_randn(n: int, *row_shape: int, dtype=None) -> Tensor:
    """Standard normal noise of shape (n, *row_shape), one row per sample of the batch.

    Inside ``keyed_dropout`` the rows depend only on (seed, step, call order, sample id), so a
    GAN's latent noise is the same whichever worker draws it; elsewhere it comes from the
    global generator, like ``dtrain.randn``.
    """
    from ..autograd.tensor import get_default_dtype

    dtype = np.dtype(dtype) if dtype is not None else get_default_dtype()
    shape = (int(n),) + tuple(int(d) for d in row_shape)
    state = getattr(_keys, "state", None)
    if state is None:
        return Tensor._wrap(_random.normal(0.0, 1.0, shape).astype(dtype))
    seed, step, ids, call = state
    if n != len(ids):
        raise RuntimeError(f"keyed_randn: asked for {n} rows but the batch has {len(ids)} samples")
    state[3] = call + 2
    u1 = keyed_uniform(seed, step, call, ids, shape[1:])
    u2 = keyed_uniform(seed, step, call + 1, ids, shape[1:])
    z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)  # Box-Muller
    return Tensor._wrap(z.astype(dtype))
