"""Tensor factories with PyTorch's names and dtype defaults (float32 unless told otherwise)."""

from __future__ import annotations

import numpy as np

from .. import random as _random
from .device import check_device
from .tensor import Tensor, get_default_dtype


def _shape(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(int(n) for n in size)


def _float_dtype(dtype):
    return np.dtype(dtype) if dtype is not None else get_default_dtype()


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data``."""
    check_device(device)
    if isinstance(data, Tensor):
        data = data._data
    arr = np.array(data, copy=True) if isinstance(data, np.ndarray) else data
    return Tensor._make(arr, dtype=dtype, requires_grad=requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """A tensor sharing memory with ``data`` where possible."""
    check_device(device)
    if isinstance(data, Tensor) and (dtype is None or np.dtype(dtype) == data.dtype):
        return data
    return Tensor._make(data, dtype=dtype)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``array`` (its dtype kept)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    return Tensor._wrap(array)


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros (the default float dtype unless ``dtype`` is given)."""
    check_device(device)
    return Tensor._make(np.zeros(_shape(size), _float_dtype(dtype)), requires_grad=requires_grad)


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of ones (the default float dtype unless ``dtype`` is given)."""
    check_device(device)
    return Tensor._make(np.ones(_shape(size), _float_dtype(dtype)), requires_grad=requires_grad)


def empty(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of the given shape, zero-filled (torch leaves it uninitialised): repeatable runs."""
    check_device(device)
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor filled with ``fill_value``; its dtype follows the value (bool, int64 or float)."""
    check_device(device)
    if dtype is None:
        dtype = (np.dtype(bool) if isinstance(fill_value, bool)
                 else np.dtype(np.int64) if isinstance(fill_value, int) else get_default_dtype())
    return Tensor._make(np.full(tuple(size), fill_value, dtype), requires_grad=requires_grad)


def zeros_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Zeros in ``t``'s shape (and dtype unless ``dtype`` is given)."""
    check_device(device)
    return Tensor._make(np.zeros(t.shape, dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Ones in ``t``'s shape (and dtype unless ``dtype`` is given)."""
    check_device(device)
    return Tensor._make(np.ones(t.shape, dtype or t.dtype), requires_grad=requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, device=None,
              requires_grad: bool = False) -> Tensor:
    """``fill_value`` in ``t``'s shape (and dtype unless ``dtype`` is given)."""
    check_device(device)
    return Tensor._make(np.full(t.shape, fill_value, dtype or t.dtype), requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Values from ``start`` to ``end`` (exclusive); integer arguments give int64, as in PyTorch."""
    check_device(device)
    if end is None:
        start, end = 0, start
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if ints else get_default_dtype()
    return Tensor._make(np.arange(start, end, step, dtype=dtype), requires_grad=requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    check_device(device)
    return Tensor._make(np.linspace(start, end, steps, dtype=_float_dtype(dtype)),
                  requires_grad=requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """The identity matrix (n x m)."""
    check_device(device)
    return Tensor._make(np.eye(n, m, dtype=_float_dtype(dtype)), requires_grad=requires_grad)


def rand(*size, dtype=None, generator=None, device=None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1) from the global (or given) generator."""
    check_device(device)
    data = _random.uniform(0.0, 1.0, _shape(size), generator).astype(_float_dtype(dtype))
    return Tensor._make(data, requires_grad=requires_grad)


def randn(*size, dtype=None, generator=None, device=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the global (or given) generator."""
    check_device(device)
    data = _random.normal(0.0, 1.0, _shape(size), generator).astype(_float_dtype(dtype))
    return Tensor._make(data, requires_grad=requires_grad)


def randint(low, high=None, size=(), dtype=None, generator=None, device=None) -> Tensor:
    """Integers uniform in [low, high); ``randint(high, size)`` starts at 0, as torch's."""
    check_device(device)
    if isinstance(high, (tuple, list)):
        low, high, size = 0, low, high
    elif high is None:
        low, high = 0, low
    gen = generator or _random.default_generator()
    return Tensor._make(gen.integers(low, high, size=tuple(size)).astype(dtype or np.int64))


def randperm(n, generator=None, device=None) -> Tensor:
    """A random permutation of 0..n-1 (int64) from the global (or given) generator."""
    check_device(device)
    gen = generator or _random.default_generator()
    return Tensor._make(gen.permutation(n).astype(np.int64))


def empty_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of ``t``'s shape (and dtype unless given); zero-filled, so runs are repeatable."""
    return zeros_like(t, dtype=dtype, device=device, requires_grad=requires_grad)


def rand_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False,
              generator=None) -> Tensor:
    """Uniform [0, 1) samples in ``t``'s shape and (floating) dtype, from the global generator."""
    dtype = _like_float_dtype(t, dtype, "rand_like")
    return rand(*t.shape, dtype=dtype, generator=generator, device=device,
                requires_grad=requires_grad)


def randn_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False,
               generator=None) -> Tensor:
    """Standard normal samples in ``t``'s shape and (floating) dtype, from the global generator."""
    dtype = _like_float_dtype(t, dtype, "randn_like")
    return randn(*t.shape, dtype=dtype, generator=generator, device=device,
                 requires_grad=requires_grad)


def _like_float_dtype(t: Tensor, dtype, name: str) -> np.dtype:
    dtype = np.dtype(dtype if dtype is not None else t._data.dtype)
    if dtype.kind not in "fc":
        raise NotImplementedError(f'"{name}" not implemented for integer or bool dtype '
                                  f"'{dtype.name}': give a floating dtype=")
    return dtype
