"""Datasets shipped with dtrain: the 8x8 handwritten digits, with a fixed train/test split.

The data is scikit-learn's bundled copy of the UCI optical digits (1797 images of 8x8 pixels
valued 0..16), stored in ``dtrain/datasets_data/digits.npz`` by ``tools/make_digits.py``, so
dtrain needs no scikit-learn and no download. The split is stratified and seeded: 1347 train,
450 test.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from .data import load_arrays

__all__ = ["digits_path", "load_digits"]

_SPLITS = ("train", "test", "all")


def digits_path() -> pathlib.Path:
    """Path of the digits ``.npz`` (uint8 ``images`` (1797, 64), ``target``, split indices)."""
    return pathlib.Path(__file__).resolve().parent / "datasets_data" / "digits.npz"


@functools.lru_cache(maxsize=1)
def _digits_raw() -> dict[str, np.ndarray]:
    arrays = load_arrays(digits_path(), mmap=False)
    for array in arrays.values():
        array.flags.writeable = False  # shared by every call; callers get converted copies
    return arrays


def load_digits(split: str = "train", dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, 64) scaled to [0, 1] in ``dtype`` and int64 labels 0..9 of one split.

    ``split`` is ``'train'`` (1347 samples), ``'test'`` (450) or ``'all'`` (1797, in the
    original order). Returns fresh NumPy arrays; wrap them in ``dtrain.data.TensorDataset``.
    """
    if split not in _SPLITS:
        raise ValueError(f"load_digits: split must be one of {_SPLITS}, got {split!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"load_digits: dtype must be a floating dtype, got {dtype}")
    raw = _digits_raw()
    images, target = raw["images"], raw["target"]
    if split != "all":
        index = raw[f"{split}_index"]
        images, target = images[index], target[index]
    return images.astype(dtype) / dtype.type(16), target.astype(np.int64)
