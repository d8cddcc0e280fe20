"""``DistributedSampler``: each of ``num_replicas`` processes reads its own share of an epoch.

After torch.utils.data.distributed: the epoch's order (``epoch_permutation(n, seed, epoch)``
when shuffling, else ``0..n-1``) is padded by repeating its start, or cut with
``drop_last``, to a multiple of ``num_replicas``, and replica ``rank`` takes every
``num_replicas``-th index from position ``rank``. Shares are equally long and, unpadded,
disjoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import numpy as np

from ...data import _non_negative_int, epoch_permutation
from .sampler import Sampler


class DistributedSampler(Sampler):
    """The indices of one replica's share of each epoch; call ``set_epoch`` before each epoch.

    dtrain has no process group to ask, so ``num_replicas`` and ``rank`` must be given (PyTorch
    reads them from ``torch.distributed``; without it, it raises the same RuntimeError). As in
    PyTorch, iterating does not advance the epoch: ``set_epoch(e)`` does.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            raise RuntimeError("DistributedSampler needs num_replicas and rank: dtrain has no "
                               "torch.distributed process group to read them from")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last and n % num_replicas != 0:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = shuffle
        self.seed = _non_negative_int(seed, "seed")

    def order(self, epoch: int) -> np.ndarray:
        """This replica's indices in ``epoch`` (int64)."""
        n = len(self.dataset)
        indices = epoch_permutation(n, self.seed, epoch) if self.shuffle else \
            np.arange(n, dtype=np.int64)
        if self.drop_last:
            indices = indices[:self.total_size]
        elif self.total_size > n:
            indices = np.resize(indices, self.total_size)  # repeats from the start
        return indices[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch).tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order from the next pass on."""
        self.epoch = _non_negative_int(epoch, "epoch")
