"""Datasets, collation, array files, and batch orders that depend only on (seed, epoch).

``epoch_permutation`` is the one source of shuffled orders: the DataLoader's samplers use it and
the distributed trainer calls it too, so every worker knows an epoch's order without being told.
Arrays are read with ``allow_pickle=False`` always; ``.npy`` files can be memory-mapped.
``dtrain.utils.data`` is PyTorch's import path for these names, the samplers and the
``DataLoader`` (which lives in ``dtrain.utils.data.dataloader`` and is reachable here too).
"""

from __future__ import annotations

import copy
import operator
import os
import zipfile
from collections.abc import Iterator, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from .autograd.tensor import Tensor, get_default_dtype

__all__ = ["DataLoader", "Dataset", "IterableDataset", "TensorDataset", "default_collate",
           "default_convert", "epoch_generator", "epoch_permutation", "load_arrays"]


T_co = TypeVar("T_co", covariant=True)


def _non_negative_int(value, name: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    """A fresh generator derived only from (seed, epoch): the randomness of one epoch."""
    seed = _non_negative_int(seed, "seed")
    epoch = _non_negative_int(epoch, "epoch")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of ``n`` samples in ``epoch``: a permutation derived only from (seed, epoch)."""
    n = _non_negative_int(n, "n")
    return epoch_generator(seed, epoch).permutation(n).astype(np.int64, copy=False)


class Dataset(Generic[T_co]):
    """Base class of map-style datasets: ``dataset[i]`` is sample ``i`` of ``len(dataset)``.

    Subclasses define ``__getitem__`` and, to be shuffled or batched by the default samplers,
    ``__len__``; as in PyTorch the base class has no length, so ``len()`` of a dataset that
    does not define one is a TypeError. Generic in the sample type, as PyTorch's
    (``class Pairs(Dataset[tuple[Tensor, int]])``).
    """

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other: Dataset):
        """``a + b`` is ``ConcatDataset([a, b])``, as in PyTorch."""
        from .utils.data.dataset import ConcatDataset

        return ConcatDataset([self, other])


class IterableDataset(Dataset[T_co]):
    """Base class of datasets read as a stream: ``iter(dataset)`` yields the samples."""

    def __iter__(self) -> Iterator:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")

    def __add__(self, other: Dataset):
        """``a + b`` is ``ChainDataset([a, b])``, as in PyTorch."""
        from .utils.data.dataset import ChainDataset

        return ChainDataset([self, other])


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
        if len(set(sizes)) != 1:  # AssertionError: PyTorch's type for this mistake
            raise AssertionError(f"Size mismatch between tensors: first dimensions are {sizes}, "
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


_COLLATE_ERROR = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or "
                  "lists; found {}")


def _numeric(array: np.ndarray) -> bool:
    """True for arrays that become Tensors (booleans and numbers; not strings or objects)."""
    return array.dtype.kind in "biufc"


def _stack(arrays: list[np.ndarray]) -> Tensor:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise RuntimeError("default_collate: stack expects each tensor to be equal size, but "
                           f"got shapes {sorted(shapes)[:4]}")
    return Tensor._wrap(np.stack(arrays))


def default_collate(batch: Sequence) -> Any:
    """Merge a list of samples into a batch, with PyTorch's rules and output types.

    Tensors and numeric arrays are stacked along a new first dimension; NumPy scalars become
    a Tensor of their dtype; Python floats float64, ints int64 and bools bool Tensors; strings
    and bytes stay as given (a field of a sequence sample gives a tuple, as in PyTorch).
    Mappings are collated key by key (keeping their type), named tuples field by field; other
    sequences field by field, where a tuple gives a list as in PyTorch.
    """
    first = batch[0]
    if isinstance(first, Tensor):
        return _stack([s._data for s in batch])
    if isinstance(first, np.ndarray):
        if not _numeric(first):
            raise TypeError(_COLLATE_ERROR.format(first.dtype))
        return _stack([np.asarray(s) for s in batch])
    if isinstance(first, (np.bool_, np.number)):
        return Tensor._wrap(np.array(batch))
    if isinstance(first, float):
        return Tensor._wrap(np.array(batch, dtype=np.float64))
    if isinstance(first, int):  # bools included: they give a bool tensor
        return _python_numbers(batch)
    if isinstance(first, (str, bytes)):
        return batch
    if isinstance(first, Mapping):
        return _rebuild_mapping(first, {key: default_collate([s[key] for s in batch])
                                        for key in first})
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(default_collate(field) for field in zip(*batch)))
    if isinstance(first, Sequence):
        if any(len(s) != len(first) for s in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(field) for field in zip(*batch)]  # tuples, as PyTorch's
        return fields if isinstance(first, tuple) else _rebuild_sequence(first, fields)
    raise TypeError(_COLLATE_ERROR.format(type(first)))


def _python_numbers(batch: list) -> Tensor:
    """Python ints (or bools) as ``torch.tensor`` types them: int64, bool, or the default float
    dtype when a float hides among them."""
    array = np.array(batch)
    if array.dtype.kind == "f":
        return Tensor._wrap(array.astype(get_default_dtype()))
    if array.dtype.kind not in "biu":
        raise TypeError(_COLLATE_ERROR.format(type(batch[0])))
    return Tensor._wrap(array if array.dtype.kind == "b" else array.astype(np.int64))


def default_convert(data: Any) -> Any:
    """Turn NumPy arrays and scalars in one sample into Tensors, without batching.

    The DataLoader's collate function when automatic batching is off (``batch_size=None``);
    containers are walked as ``default_collate`` walks them, everything else is returned as is.
    """
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        return Tensor._wrap(np.asarray(data)) if _numeric(data) else data
    if isinstance(data, (np.bool_, np.number)):
        return Tensor._wrap(np.asarray(data))
    if isinstance(data, Mapping):
        return _rebuild_mapping(data, {key: default_convert(data[key]) for key in data})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return _rebuild_sequence(data, [default_convert(d) for d in data])
    return data


def _rebuild_mapping(like: Mapping, values: dict):
    """``values`` in a mapping of ``like``'s type when that type allows it, else a dict."""
    try:
        if isinstance(like, MutableMapping):
            clone = copy.copy(like)
            clone.update(values)
            return clone
        return type(like)(values)
    except TypeError:
        return values


def _rebuild_sequence(like: Sequence, items: list):
    """``items`` in a sequence of ``like``'s type when that type allows it, else a list."""
    try:
        if isinstance(like, MutableSequence):
            clone = copy.copy(like)
            for i, item in enumerate(items):
                clone[i] = item
            return clone
        return type(like)(items)
    except TypeError:
        return items


def __getattr__(name: str):
    """``dtrain.data.DataLoader``: the loader of ``dtrain.utils.data``, imported on first use."""
    if name == "DataLoader":
        from .utils.data.dataloader import DataLoader

        return DataLoader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
