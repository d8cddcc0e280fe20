"""The global random generator behind ``manual_seed``, init and dropout.

One ``numpy.random.Generator`` (PCG64) per process; its state is plain data (a dict of ints), so
checkpoints can carry it without pickle. Code that must not depend on the process, such as
dropout in distributed training, passes its own generator derived from (seed, step, sample).
"""

from __future__ import annotations

import operator

import numpy as np

_generator = [np.random.Generator(np.random.PCG64(0))]
_DEFAULT_SEED = 67280421310721  # a fresh torch.Generator's seed


class Generator:
    """A random generator object with ``torch.Generator``'s methods, on NumPy's PCG64.

    Pass it as ``generator=`` to ``rand``/``randn``/``randperm``, ``random_split``, samplers
    and loaders. Seeds follow PyTorch's rules (any int, taken modulo 2**64); the streams are
    NumPy's, so the numbers differ from PyTorch's for the same seed. ``get_state`` returns
    plain data (PyTorch returns a byte tensor).
    """

    def __init__(self, device: str = "cpu"):
        if str(device) != "cpu":
            raise RuntimeError(f"dtrain runs on the CPU: Generator(device={device!r}) is not "
                               "available")
        self.device = "cpu"
        self.manual_seed(_DEFAULT_SEED)

    def __getattr__(self, name: str):
        """NumPy's sampling methods (``integers``, ``permutation``, ...) on this stream, so code
        written for a ``numpy.random.Generator`` accepts a ``Generator`` too."""
        if name.startswith("_") or name == "generator":
            raise AttributeError(name)
        return getattr(self.generator, name)

    def manual_seed(self, seed: int) -> Generator:
        """Restart the stream from ``seed``; returns the generator, as PyTorch's does."""
        if isinstance(seed, bool):
            seed = int(seed)
        try:
            seed = operator.index(seed)
        except TypeError:
            raise RuntimeError(f"manual_seed expected an int, but got "
                               f"{type(seed).__name__}") from None
        self._seed = seed % 2**64
        self.generator = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def seed(self) -> int:
        """Reseed from fresh operating-system entropy; returns the new seed."""
        new = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        self.manual_seed(new)
        return new

    def initial_seed(self) -> int:
        """The seed the current stream started from."""
        return self._seed

    def get_state(self) -> dict:
        """The stream's position as plain data (for checkpoints)."""
        return {"seed": self._seed, "bit_generator": self.generator.bit_generator.state}

    def set_state(self, state: dict) -> Generator:
        """Return to a position saved by ``get_state``."""
        bits = np.random.PCG64()
        bits.state = state["bit_generator"]
        self._seed = int(state["seed"])
        self.generator = np.random.Generator(bits)
        return self


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the global generator so init, ``rand``/``randn`` and dropout repeat exactly."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    _generator[0] = np.random.Generator(np.random.PCG64(seed))
    _seed[0] = seed
    return _generator[0]


_seed = [0]  # the global generator's seed (it starts as PCG64(0))
_deterministic = [False, False]  # use_deterministic_algorithms: (mode, warn_only)


def reset_process_state() -> None:
    """Back to the state a new process starts with: a forked worker must not inherit what its
    launcher drew, nor NumPy's legacy global stream (a fresh process seeds it from entropy)."""
    manual_seed(0)
    np.random.seed()


def seed() -> int:
    """Reseed the global generator from the operating system's entropy; return the seed."""
    new = int(np.random.SeedSequence().entropy) % 2**63
    manual_seed(new)
    return new


def initial_seed() -> int:
    """The seed the global generator was last seeded with (0 until ``manual_seed``)."""
    return _seed[0]


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """Recorded for ``are_deterministic_algorithms_enabled``: every dtrain op is deterministic
    already (NumPy on the CPU, fixed reduction orders), so there is nothing to switch."""
    _deterministic[:] = [bool(mode), bool(warn_only)]


def are_deterministic_algorithms_enabled() -> bool:
    return _deterministic[0]


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    return _deterministic[1]


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
    if generator is None:
        return _generator[0]
    return generator.generator if isinstance(generator, Generator) else generator


def uniform(low, high, shape, generator=None) -> np.ndarray:
    """Samples from U[low, high) as float64 (callers cast)."""
    return _gen(generator).uniform(low, high, size=shape)


def normal(mean, std, shape, generator=None) -> np.ndarray:
    """Samples from N(mean, std^2) as float64 (callers cast)."""
    return _gen(generator).normal(mean, std, size=shape)
