"""Samplers: the order in which a DataLoader visits a dataset, after torch.utils.data.sampler.

A random sampler draws one seed when it is built (from ``generator=``, see ``_random``) and
orders epoch ``e`` with ``dtrain.data.epoch_generator(seed, e)``: each pass is a new epoch, as
with PyTorch's samplers, and ``set_epoch`` replays any epoch exactly. The lengths, batching and
index sets are PyTorch's; the random streams are NumPy's, not PyTorch's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Generic, TypeVar

import numpy as np

from ...autograd.tensor import Tensor
from ...data import _non_negative_int, epoch_generator
from ._random import draw_seed


T_co = TypeVar("T_co", covariant=True)


def _positive_int(value, name: str) -> int:
    """``value`` if it is a positive int (bools excluded), else ValueError as in PyTorch."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} should be a positive integer value, but got {name}={value}")
    return int(value)


class Sampler(Generic[T_co]):
    """Base class of samplers: iterating yields dataset indices (or, batched, lists of them).

    Generic in the index type, as PyTorch's (``Sampler[int]``, ``Sampler[list[int]]``).
    """

    def __iter__(self) -> Iterator:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class _EpochSampler(Sampler):
    """A sampler whose passes are epochs 0, 1, 2, ... of a seeded order."""

    def __init__(self, generator):
        self.generator = generator
        self.seed = draw_seed(generator)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order for the next pass (later passes continue from epoch + 1)."""
        self.epoch = _non_negative_int(epoch, "epoch")

    def order(self, epoch: int) -> np.ndarray:
        """The indices of ``epoch`` in visiting order."""
        raise NotImplementedError

    def __iter__(self) -> Iterator:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return iter(self.order(epoch).tolist())


class SequentialSampler(Sampler):
    """Indices ``0, 1, ..., len(data_source) - 1``, in order, every pass."""

    def __init__(self, data_source: Sized):
        self.data_source = data_source

    def order(self, epoch: int = 0) -> np.ndarray:
        """The indices in visiting order (the same for every epoch)."""
        return np.arange(len(self.data_source), dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(_EpochSampler):
    """Shuffled indices: a permutation per pass, or ``num_samples`` draws.

    Without replacement, ``num_samples`` beyond the dataset's length continues with further
    permutations, as in PyTorch; the first permutation of epoch ``e`` is
    ``epoch_permutation(len(data_source), seed, e)``. With replacement, indices are drawn
    uniformly. ``generator`` is None (seed from dtrain's global generator), a seed, or a
    ``dtrain.Generator`` or ``numpy.random.Generator`` to draw the seed from.
    """

    def __init__(self, data_source: Sized, replacement: bool = False,
                 num_samples: int | None = None, generator=None):
        if not isinstance(replacement, bool):
            raise TypeError("replacement should be a boolean value, but got "
                            f"replacement={replacement}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        _positive_int(self.num_samples, "num_samples")
        super().__init__(generator)

    @property
    def num_samples(self) -> int:
        """Indices per pass: ``num_samples`` if given, else the dataset's length."""
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def order(self, epoch: int) -> np.ndarray:
        """The indices of ``epoch`` in visiting order (int64)."""
        n, count = len(self.data_source), self.num_samples
        rng = epoch_generator(self.seed, epoch)
        if self.replacement:
            return rng.integers(0, n, size=count, dtype=np.int64)
        perms = [rng.permutation(n) for _ in range(-(-count // n))]
        return np.concatenate(perms)[:count].astype(np.int64, copy=False)

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(_EpochSampler):
    """The given indices in a random order, a new one each pass (without replacement)."""

    def __init__(self, indices: Sequence[int], generator=None):
        self.indices = indices
        super().__init__(generator)

    def order(self, epoch: int) -> np.ndarray:
        """The indices of ``epoch`` in visiting order."""
        perm = epoch_generator(self.seed, epoch).permutation(len(self.indices))
        return np.array([self.indices[i] for i in perm.tolist()], dtype=np.int64)

    def __iter__(self) -> Iterator:
        epoch, self.epoch = self.epoch, self.epoch + 1
        perm = epoch_generator(self.seed, epoch).permutation(len(self.indices))
        return (self.indices[i] for i in perm.tolist())

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(_EpochSampler):
    """``num_samples`` indices drawn with probabilities proportional to ``weights``."""

    def __init__(self, weights: Sequence[float], num_samples: int, replacement: bool = True,
                 generator=None):
        _positive_int(num_samples, "num_samples")
        if not isinstance(replacement, bool):
            raise ValueError("replacement should be a boolean value, but got "
                             f"replacement={replacement}")
        weights = np.asarray(weights._data if isinstance(weights, Tensor) else weights,
                             dtype=np.float64)
        if weights.ndim != 1:
            raise ValueError("weights should be a 1d sequence but given weights have shape "
                             f"{weights.shape}")
        self.weights = weights
        self.num_samples = int(num_samples)
        self.replacement = replacement
        super().__init__(generator)

    def order(self, epoch: int) -> np.ndarray:
        """The indices of ``epoch`` (int64); RuntimeError for weights that are no distribution."""
        w = self.weights
        if (w < 0).any() or not np.isfinite(w).all():
            raise RuntimeError("invalid multinomial distribution (encountering probability "
                               "entry < 0, inf or nan)")
        if w.sum() <= 0:
            raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
        if not self.replacement and self.num_samples > np.count_nonzero(w):
            raise RuntimeError(f"cannot sample {self.num_samples} indices without replacement "
                               f"from {np.count_nonzero(w)} non-zero weights")
        rng = epoch_generator(self.seed, epoch)
        return rng.choice(len(w), size=self.num_samples, replace=self.replacement,
                          p=w / w.sum()).astype(np.int64, copy=False)

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the indices of ``sampler`` into lists of ``batch_size`` (the last may be short)."""

    def __init__(self, sampler: Sampler | Iterable[int], batch_size: int, drop_last: bool):
        _positive_int(batch_size, "batch_size")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list]:
        indices = iter(self.sampler)
        while batch := list(itertools.islice(indices, self.batch_size)):
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)
