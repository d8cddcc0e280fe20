"""The PyTorch API scripts actually type: ``.data``, dtype promotion, state dicts, devices,
printing, factories and Tensor methods, each against torch (where installed) and against a
closed form that needs no torch.

Reference cases build the same program for both libraries with ``m`` standing for the module
(``dtrain`` or ``torch``), as ``helpers.check`` does.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check

import dtrain


def as_numpy(t) -> np.ndarray:
    """Values of a dtrain or torch tensor as a NumPy array."""
    return t._data if isinstance(t, dtrain.Tensor) else t.detach().numpy()


def dtype_name(t) -> str:
    """'float32', 'int64', ... for a dtrain or torch tensor."""
    return str(t.dtype).split(".")[-1]


# ====================================================================== 1. Tensor.data
SCORES = [[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]]


def test_data_is_a_tensor_so_old_accuracy_code_counts_right():
    out = dtrain.tensor(SCORES)
    predicted = out.data.max(1)[1]
    assert isinstance(predicted, dtrain.Tensor)
    np.testing.assert_array_equal(predicted._data, [1, 0, 2])
    target = dtrain.tensor([1, 0, 1])
    assert predicted.eq(target.data).sum().item() == 2


def test_data_vs_torch():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        out = m.tensor(SCORES, requires_grad=True) * 1
        d = out.data
        assert not d.requires_grad and d.grad_fn is None and d.is_leaf
        assert out.data.max(1)[1].tolist() == [1, 0, 2]
        assert (out.data.max(1)[1] == m.tensor([1, 0, 1])).sum().item() == 2
        assert out.data.size(0) == 3 and out.data.cpu().shape == (3, 3)


def test_data_shares_storage_and_is_not_recorded():
    p = dtrain.nn.Parameter(dtrain.zeros(3))
    p.data.add_(dtrain.ones(3), alpha=2)
    np.testing.assert_array_equal(p._data, [2.0, 2.0, 2.0])
    p.data.clamp_(max=1.5)
    p.data.mul_(2)
    p.data[0] = -1.0
    np.testing.assert_array_equal(p._data, [-1.0, 3.0, 3.0])
    p.data.copy_(dtrain.tensor([4.0, 5.0, 6.0]))
    np.testing.assert_array_equal(p._data, [4.0, 5.0, 6.0])
    dtrain.manual_seed(0)
    p.data.normal_(0, 0.01)
    assert np.abs(p._data).max() < 0.1
    assert p.grad_fn is None and p.requires_grad and p.is_leaf
    (p * p).sum().backward()
    np.testing.assert_allclose(p.grad._data, 2 * p._data)
    p.grad.data.zero_()
    np.testing.assert_array_equal(p.grad._data, 0.0)


def test_data_inplace_on_leaf_vs_torch():
    torch = pytest.importorskip("torch")
    results = {}
    for m in (dtrain, torch):
        m.manual_seed(0)
        w = m.nn.Parameter(m.tensor([1.0, -2.0, 3.0]))
        (w * m.tensor([1.0, 2.0, 3.0])).sum().backward()
        w.data.add_(w.grad.data, alpha=-0.5)   # an old-style SGD step
        w.grad.data.zero_()
        w.data.clamp_(-1.0, 1.0)
        results[m] = (as_numpy(w).copy(), as_numpy(w.grad).copy())
    for a, b in zip(results[dtrain], results[torch]):
        np.testing.assert_array_equal(a, b)


def test_data_assignment():
    torch = pytest.importorskip("torch")
    for m in (dtrain, torch):
        p = m.nn.Parameter(m.zeros(3))
        new = m.ones(2, 2)
        p.data = new
        assert p.shape == (2, 2) and p.requires_grad
        new.add_(1)  # the parameter now uses new's storage
        assert p.sum().item() == 8.0
        with pytest.raises(TypeError, match="has to be a tensor"):
            p.data = [1.0, 2.0]
        with pytest.raises(RuntimeError, match="floating point"):
            p.data = m.zeros(2, dtype=m.int64)
        x = m.zeros(2)
        x.data = m.zeros(3, dtype=m.int64)
        assert dtype_name(x) == "int64"


def test_data_assignment_without_torch():
    p = dtrain.nn.Parameter(dtrain.zeros(3))
    src = dtrain.arange(4.0)
    p.data = src
    src[0] = 7.0
    assert p.tolist() == [7.0, 1.0, 2.0, 3.0] and p.requires_grad
    with pytest.raises(TypeError, match="list"):
        p.data = [1.0]
