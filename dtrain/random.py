"""The global random generator behind ``manual_seed``, init and dropout.

One ``numpy.random.Generator`` (PCG64) per process; its state is plain data (a dict of ints), so
checkpoints can carry it without pickle. Code that must not depend on the process, such as
dropout in distributed training, passes its own generator derived from (seed, step, sample).
"""

from __future__ import annotations

import numpy as np

_generator = [np.random.Generator(np.random.PCG64(0))]


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the global generator so init, ``rand``/``randn`` and dropout repeat exactly."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    _generator[0] = np.random.Generator(np.random.PCG64(seed))
    return _generator[0]


def default_generator() -> np.random.Generator:
    """The generator used when no ``generator=`` is given."""
    return _generator[0]


def get_rng_state() -> dict:
    """The global generator's state as plain data (for checkpoints)."""
    return _generator[0].bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state returned by ``get_rng_state``."""
    bit_generator = np.random.PCG64()
    bit_generator.state = state
    _generator[0] = np.random.Generator(bit_generator)


def _gen(generator) -> np.random.Generator:
    return _generator[0] if generator is None else generator


def uniform(low, high, shape, generator=None) -> np.ndarray:
    """Samples from U[low, high) as float64 (callers cast)."""
    return _gen(generator).uniform(low, high, size=shape)


def normal(mean, std, shape, generator=None) -> np.ndarray:
    """Samples from N(mean, std^2) as float64 (callers cast)."""
    return _gen(generator).normal(mean, std, size=shape)
