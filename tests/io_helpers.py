"""Helpers shared by the checkpoint tests: exact comparison of loaded objects."""

from __future__ import annotations

import math

import numpy as np

import dtrain


def assert_same(a, b, where="obj"):
    """Exact equality including types, dtypes, shapes, dict key types and key order."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        assert [type(k) for k in a] == [type(k) for k in b], f"{where}: key types differ"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dtrain.Tensor):
        assert a.requires_grad == b.requires_grad, f"{where}: requires_grad differs"
        assert_same(a._data, b._data, f"{where}._data")
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{where}: {a.dtype}{a.shape} != " \
                                                         f"{b.dtype}{b.shape}"
        assert a.tobytes() == np.ascontiguousarray(b).tobytes(), f"{where}: values differ"
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
        if isinstance(a, float):
            assert math.copysign(1, a) == math.copysign(1, b), f"{where}: sign of zero"
