"""``DataLoader``: batches from a dataset in PyTorch's order and types, loaded in this process.

After torch.utils.data.dataloader: a sampler orders the indices, a batch sampler groups them,
the dataset is read (``__getitems__`` when it has one) and ``collate_fn`` merges the samples.
The options that configure PyTorch's worker processes are accepted and validated as PyTorch
validates them, but loading always happens in the calling process (see ``DataLoader``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Generic

import numpy as np

from ...data import (
    IterableDataset,
    T_co,
    TensorDataset,
    _non_negative_int,
    default_collate,
    default_convert,
)
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler


def get_worker_info() -> None:
    """None: dtrain loads data in the calling process, as PyTorch does with ``num_workers=0``."""
    return None


class DataLoader(Generic[T_co]):
    """Iterate over ``dataset`` in batches, with PyTorch's options and results.

    ``batch_size``/``drop_last`` batch the indices of ``sampler`` (default: in order, or a
    ``RandomSampler`` with ``shuffle=True``); ``batch_sampler`` gives whole batches instead;
    ``batch_size=None`` turns batching off (each sample goes through ``default_convert``).
    ``collate_fn`` (alias ``collate``, dtrain's earlier name) merges a list of samples; by
    default ``default_collate``, so a dataset of ``(x, y)`` tuples gives ``[xb, yb]`` lists.

    Order: with ``shuffle=True`` the order of epoch ``e`` is
    ``epoch_permutation(len(dataset), seed, e)``. The seed is ``seed``, else drawn once, here,
    from ``generator`` (None: dtrain's global generator; a ``dtrain.Generator`` or
    ``numpy.random.Generator``; an int is the seed itself).
    Each pass uses ``self.epoch`` and then advances it, so a plain loop reshuffles every epoch
    as PyTorch's does; ``set_epoch(e)`` fixes the epoch of the next pass (for resuming, or for
    workers that must agree on the order, as with PyTorch's DistributedSampler).

    Processes: data is always loaded in the calling process, one batch when it is asked for.
    ``num_workers``, ``timeout``, ``prefetch_factor``, ``persistent_workers``,
    ``multiprocessing_context`` and ``in_order`` are validated as PyTorch validates them (a
    ``timeout`` without workers fails at iteration, as there) and otherwise have no effect;
    ``worker_init_fn`` is never called (there are no workers, and ``get_worker_info()`` is
    None, as in PyTorch's ``num_workers=0``). ``pin_memory`` and
    ``pin_memory_device`` concern page-locked memory for GPU copies and mean nothing on the CPU.
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Sampler | Iterable | None = None,
                 batch_sampler: Sampler | Iterable | None = None, num_workers: int = 0,
                 collate_fn: Callable | None = None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Callable | None = None, multiprocessing_context=None,
                 generator=None, *, prefetch_factor: int | None = None,
                 persistent_workers: bool = False, pin_memory_device: str = "",
                 in_order: bool = True, seed: int | None = None,
                 collate: Callable | None = None):
        _check_process_options(num_workers, timeout, prefetch_factor, persistent_workers,
                               multiprocessing_context)
        if collate is not None:
            if collate_fn is not None:
                raise ValueError("collate is dtrain's old name for collate_fn: give one of them")
            collate_fn = collate
        if seed is not None and generator is not None:
            raise ValueError("give the shuffling seed as seed= or as generator=, not both")
        iterable = isinstance(dataset, IterableDataset)
        if iterable:
            _check_iterable_options(shuffle, sampler, batch_sampler)
        elif not hasattr(dataset, "__getitem__"):
            raise TypeError("DataLoader needs a map-style dataset with __getitem__ and __len__ "
                            f"or an IterableDataset, got {type(dataset).__name__}")
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually "
                             "exclusive with drop_last")
        self._own_sampler = sampler is None and not iterable
        if self._own_sampler:
            if not hasattr(dataset, "__len__"):
                raise TypeError("DataLoader needs a map-style dataset with __getitem__ and "
                                f"__len__, got {type(dataset).__name__}")
            sampler = (RandomSampler(dataset, generator=seed if seed is not None else generator)
                       if shuffle else SequentialSampler(dataset))
        self._own_batches = batch_size is not None and batch_sampler is None
        if self._own_batches and not iterable:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        elif iterable and batch_size is not None:
            _check_batch_size(batch_size, drop_last)
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.shuffle, self.sampler, self.batch_sampler = shuffle, sampler, batch_sampler
        self.generator = generator
        self.seed = sampler.seed if self._own_sampler and shuffle else None
        auto_collation = batch_size is not None or batch_sampler is not None
        self.collate_fn = collate_fn or (default_collate if auto_collation else default_convert)
        # PyTorch's process options, kept as its attributes (loading stays in this process)
        self.num_workers = num_workers
        self.pin_memory, self.pin_memory_device = pin_memory, pin_memory_device
        self.timeout, self.worker_init_fn = timeout, worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.prefetch_factor = 2 if num_workers > 0 and prefetch_factor is None else prefetch_factor
        self.persistent_workers, self.in_order = persistent_workers, in_order
        self.epoch = 0

    @property
    def collate(self) -> Callable:
        """dtrain's earlier name of ``collate_fn``."""
        return self.collate_fn

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order for the next pass (later passes continue from epoch + 1)."""
        self.epoch = _non_negative_int(epoch, "epoch")

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of ``epoch`` in visiting order (int64)."""
        if not hasattr(self.sampler, "order"):
            raise TypeError(f"order() needs a sampler with an order(epoch) method, such as "
                            f"RandomSampler; this loader's is {type(self.sampler).__name__}")
        return self.sampler.order(epoch)

    def __len__(self) -> int:
        if isinstance(self.dataset, IterableDataset):
            n = len(self.dataset)
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return len(self.sampler)

    def __iter__(self) -> Iterator:
        if self.timeout > 0 and self.num_workers == 0:  # PyTorch's single-process check
            raise AssertionError("timeout applies to worker processes: with num_workers=0 it "
                                 "must be 0")
        epoch, self.epoch = self.epoch, self.epoch + 1
        if isinstance(self.dataset, IterableDataset):
            return self._stream()
        if self._own_sampler and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if (self._own_sampler and self._own_batches and self.collate_fn is default_collate
                and isinstance(self.dataset, TensorDataset)):
            return self._tensor_batches(epoch)
        if self.batch_sampler is None:
            return (self.collate_fn(self.dataset[i]) for i in self.sampler)
        return (self.collate_fn(self._fetch(indices)) for indices in self.batch_sampler)

    def _fetch(self, indices: list) -> list:
        getitems = getattr(self.dataset, "__getitems__", None)
        if callable(getitems):
            return getitems(indices)
        return [self.dataset[i] for i in indices]

    def _tensor_batches(self, epoch: int) -> Iterator[list]:
        """``default_collate`` of TensorDataset rows, read with one fancy index per array."""
        order = self.sampler.order(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch + 1)  # as a pass over the sampler would have left it
        size, contiguous = self.batch_size, isinstance(self.sampler, SequentialSampler)
        for b in range(len(self.batch_sampler)):
            start = b * size
            rows = slice(start, start + size) if contiguous else order[start:start + size]
            yield list(self.dataset.batch(rows))

    def _stream(self) -> Iterator:
        samples = iter(self.dataset)
        if self.batch_size is None:
            yield from (self.collate_fn(sample) for sample in samples)
            return
        while batch := list(itertools.islice(samples, self.batch_size)):
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield self.collate_fn(batch)


def _check_process_options(num_workers, timeout, prefetch_factor, persistent_workers,
                           multiprocessing_context) -> None:
    """PyTorch's checks of the worker-process options (which change nothing here)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)):
        raise TypeError(f"num_workers must be an int, got {type(num_workers).__name__}")
    if num_workers < 0:
        raise ValueError("num_workers option should be non-negative; use num_workers=0 to "
                         "disable multiprocessing.")
    if timeout < 0:
        raise ValueError("timeout option should be non-negative")
    if num_workers == 0 and prefetch_factor is not None:
        raise ValueError("prefetch_factor option could only be specified in multiprocessing. "
                         "let num_workers > 0 to enable multiprocessing, otherwise set "
                         "prefetch_factor to None.")
    if prefetch_factor is not None and prefetch_factor < 0:
        raise ValueError("prefetch_factor option should be non-negative")
    if persistent_workers and num_workers == 0:
        raise ValueError("persistent_workers option needs num_workers > 0")
    if multiprocessing_context is not None and num_workers == 0:
        raise ValueError("multiprocessing_context can only be used with multi-process loading "
                         f"(num_workers > 0), but got num_workers={num_workers}")


def _check_iterable_options(shuffle, sampler, batch_sampler) -> None:
    """An IterableDataset sets its own order: no shuffle, sampler or batch_sampler."""
    if shuffle not in (False, None):
        raise ValueError("DataLoader with IterableDataset: expected unspecified shuffle option, "
                         f"but got shuffle={shuffle}")
    if sampler is not None:
        raise ValueError("DataLoader with IterableDataset: expected unspecified sampler option, "
                         f"but got sampler={sampler}")
    if batch_sampler is not None:
        raise ValueError("DataLoader with IterableDataset: expected unspecified batch_sampler "
                         f"option, but got batch_sampler={batch_sampler}")


def _check_batch_size(batch_size, drop_last) -> None:
    """The BatchSampler's checks, for an IterableDataset (which batches without one)."""
    BatchSampler([], batch_size, drop_last)
