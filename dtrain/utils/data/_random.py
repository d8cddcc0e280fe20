"""What ``generator=`` means in ``dtrain.utils.data``: a seed, or a NumPy generator to draw from.

PyTorch takes a ``torch.Generator``. dtrain takes ``None`` (its global generator, the one
``dtrain.manual_seed`` reseeds), a ``dtrain.Generator`` (drawn from, so its stream advances as
a ``torch.Generator``'s does), a ``numpy.random.Generator`` (likewise) or an ``int`` seed.
"""

from __future__ import annotations

import operator

import numpy as np

from ... import random as _random

_SEED_BOUND = 2**63 - 1


def as_numpy_generator(generator) -> np.random.Generator:
    """The NumPy generator that ``generator`` stands for (a seed gives a fresh PCG64)."""
    if generator is None:
        return _random.default_generator()
    if isinstance(generator, _random.Generator):
        return generator.generator
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.Generator(np.random.PCG64(_seed(generator)))


def draw_seed(generator) -> int:
    """A seed for (seed, epoch) orders: ``generator`` itself if it is an int, else one draw."""
    if generator is not None and not isinstance(generator, (np.random.Generator,
                                                            _random.Generator)):
        return _seed(generator)
    return int(as_numpy_generator(generator).integers(0, _SEED_BOUND))


def _seed(value) -> int:
    if isinstance(value, bool):
        value = None  # a bool is no seed
    try:
        seed = operator.index(value)
    except TypeError:
        raise TypeError("generator must be None, a dtrain.Generator, a numpy.random.Generator "
                        f"or an int seed, got {type(value).__name__}") from None
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return seed
