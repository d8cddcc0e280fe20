"""Datasets, a DataLoader, and batch orders that depend only on (seed, epoch).

``epoch_permutation`` is the one source of shuffled orders: the DataLoader uses it and the
distributed trainer calls it too, so every worker knows an epoch's order without being told.
Arrays are read with ``allow_pickle=False`` always; ``.npy`` files can be memory-mapped.
"""

from __future__ import annotations

import operator
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from . import random as _random
from .autograd.tensor import Tensor

__all__ = ["DataLoader", "Dataset", "TensorDataset", "default_collate", "epoch_permutation",
           "load_arrays"]


def _non_negative_int(value, name: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of ``n`` samples in ``epoch``: a permutation derived only from (seed, epoch)."""
    n = _non_negative_int(n, "n")
    seed = _non_negative_int(seed, "seed")
    epoch = _non_negative_int(epoch, "epoch")
    bits = np.random.PCG64(np.random.SeedSequence([seed, epoch]))
    return np.random.Generator(bits).permutation(n).astype(np.int64, copy=False)


class Dataset:
    """Base class of map-style datasets: ``dataset[i]`` is sample ``i`` of ``len(dataset)``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


class TensorDataset(Dataset):
    """Samples are rows: ``dataset[i]`` is a tuple of the i-th row of every tensor or array."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor or array")
        arrays = []
        for i, t in enumerate(tensors):
            array = t._data if isinstance(t, Tensor) else np.asarray(t)
            if array.ndim == 0:
                raise ValueError(f"TensorDataset: tensor {i} is 0-d; samples are taken along "
                                 "the first dimension")
            arrays.append(array)
        sizes = [a.shape[0] for a in arrays]
        if len(set(sizes)) != 1:
            raise ValueError(f"Size mismatch between tensors: first dimensions are {sizes}, "
                             "they must all be equal")
        self.arrays = tuple(arrays)
        self.tensors = tuple(t if isinstance(t, Tensor) else Tensor._wrap(a)
                             for t, a in zip(tensors, arrays))

    def __getitem__(self, index) -> tuple[Tensor, ...]:
        return tuple(Tensor._wrap(np.asarray(a[index])) for a in self.arrays)

    def __len__(self) -> int:
        return self.arrays[0].shape[0]

    def batch(self, indices: np.ndarray | slice) -> tuple[Tensor, ...]:
        """Rows ``indices`` of every array at once, as fresh (writable) Tensors."""
        return tuple(Tensor._wrap(np.array(a[indices])) for a in self.arrays)


def _stack(items: list, what: str) -> np.ndarray:
    try:
        return np.stack(items)
    except ValueError:
        shapes = sorted({np.shape(x) for x in items})
        raise ValueError(f"default_collate: cannot batch {what} of different shapes "
                         f"{shapes[:4]}") from None


def default_collate(samples: list):
    """Stack a list of samples into a batch, as torch's default_collate does.

    Tuples and lists are batched field by field (a tuple of samples gives a tuple of batches),
    dicts key by key; Tensors and arrays are stacked along a new first dimension; Python ints,
    bools and floats become int64, bool and float64 Tensors; strings stay a list.
    """
    first = samples[0]
    if isinstance(first, (tuple, list)):
        if any(len(s) != len(first) for s in samples):
            raise ValueError("default_collate: samples have different numbers of fields")
        fields = [default_collate([s[i] for s in samples]) for i in range(len(first))]
        if isinstance(first, list):
            return fields
        return type(first)(*fields) if hasattr(first, "_fields") else tuple(fields)
    if isinstance(first, Mapping):
        return {key: default_collate([s[key] for s in samples]) for key in first}
    if isinstance(first, Tensor):
        return Tensor._wrap(_stack([s._data for s in samples], "tensors"))
    if isinstance(first, (np.ndarray, np.generic)):
        return Tensor._wrap(_stack([np.asarray(s) for s in samples], "arrays"))
    if isinstance(first, float):
        return Tensor._wrap(np.array(samples, dtype=np.float64))
    if isinstance(first, int):  # bools included: they give a bool tensor
        return Tensor._wrap(np.array(samples))
    if isinstance(first, (str, bytes)):
        return list(samples)
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}")


class DataLoader:
    """Batches from a dataset in an order fixed by (seed, epoch), as tuples of Tensors.

    With ``shuffle`` the order of epoch ``e`` is ``epoch_permutation(len(dataset), seed, e)``;
    ``seed=None`` draws a seed from dtrain's global generator once, here. Each pass over the
    loader uses ``self.epoch`` and then advances it, so a plain loop reshuffles every epoch as
    torch's DataLoader does; ``set_epoch(e)`` fixes the epoch of the next pass, as with
    torch's DistributedSampler (for resuming, or for workers that must agree on the order).
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int | None = None,
                 collate: Callable[[list], object] | None = None):
        if isinstance(batch_size, bool) or _non_negative_int(batch_size, "batch_size") == 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"DataLoader needs a map-style dataset with __getitem__ and __len__, "
                            f"got {type(dataset).__name__}")
        if seed is None and shuffle:
            seed = int(_random.default_generator().integers(0, 2**63 - 1))
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = None if seed is None else _non_negative_int(seed, "seed")
        self.collate = collate
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order for the next pass (later passes continue from epoch + 1)."""
        self.epoch = _non_negative_int(epoch, "epoch")

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of ``epoch`` in visiting order (int64)."""
        n = len(self.dataset)
        if self.shuffle:
            return epoch_permutation(n, self.seed, epoch)
        return np.arange(n, dtype=np.int64)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(self.order(epoch))

    def _batches(self, order: np.ndarray) -> Iterator:
        size, count = self.batch_size, len(self)
        fast = isinstance(self.dataset, TensorDataset) and self.collate is None
        collate = self.collate or default_collate
        for b in range(count):
            start = b * size
            if fast:
                rows = order[start:start + size] if self.shuffle else slice(start, start + size)
                yield self.dataset.batch(rows)
            else:
                yield collate([self.dataset[int(i)] for i in order[start:start + size]])


# ----------------------------------------------------------------------------- array files
class NpzArrays(Mapping):
    """The arrays of an ``.npz`` file, each read on first access and then kept.

    NumPy cannot memory-map the members of a zip archive, so this is the lazy stand-in: opening
    is cheap, and only the arrays you index are read (whole, into memory).
    """

    def __init__(self, path: os.PathLike | str):
        self.path = os.fspath(path)
        with _open_npz(self.path) as archive:
            self._names = list(archive.files)
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name not in self._names:
                raise KeyError(f"{name!r} is not in {self.path} (it holds {self._names})")
            with _open_npz(self.path) as archive:
                self._cache[name] = _checked(archive.__getitem__, name, self.path)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"NpzArrays({self.path!r}, names={self._names})"


def _checked(read, arg, path: str):
    """Call a NumPy reader, naming the file in its errors."""
    try:
        return read(arg)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read arrays: {e}") from e


def _open_npz(path: str):
    return _checked(lambda p: np.load(p, allow_pickle=False), path, path)


def load_arrays(path: os.PathLike | str, mmap: bool = True) -> np.ndarray | Mapping:
    """Load a ``.npy`` array or the arrays of an ``.npz`` file, never unpickling.

    ``.npy`` with ``mmap=True`` is memory-mapped read-only (``mmap_mode='r'``), so huge datasets
    cost no memory until touched. ``.npz`` gives a mapping name -> array: lazy (``NpzArrays``,
    each array read on first access) when ``mmap=True``, a dict read now otherwise.
    """
    text = os.fspath(path)
    suffix = os.path.splitext(text)[1].lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"load_arrays reads .npy or .npz files, got {suffix or 'no suffix'!r} "
                         f"for {text}")
    if not os.path.isfile(text):
        raise FileNotFoundError(f"no such data file: {text}")
    if suffix == ".npy":
        return _checked(lambda p: np.load(p, mmap_mode="r" if mmap else None,
                                          allow_pickle=False), text, text)
    if mmap:
        return NpzArrays(text)
    with _open_npz(text) as archive:
        return {name: _checked(archive.__getitem__, name, text) for name in archive.files}
