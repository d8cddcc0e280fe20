"""nonzero/argwhere/masked_select/unique/bincount/diag, the legacy FloatTensor-style types and
autograd.Variable: against torch (and finite differences where there are gradients)."""

import os
import sys

import numpy as np
import pytest

import dtrain

sys.path.insert(0, os.path.dirname(__file__))
from helpers import check, torch

VALUES = [[0, 3, 0], [2, 0, 2]]


def same(case):
    """``case(dtrain)`` as nested lists, equal to ``case(torch)`` when torch is installed."""
    def lists(value):
        if isinstance(value, tuple):
            return [lists(v) for v in value]
        return value.tolist()
    ours = lists(case(dtrain))
    if torch is not None:
        assert ours == lists(case(torch))
    return ours


def test_nonzero_and_argwhere():
    assert same(lambda m: m.tensor(VALUES).nonzero()) == [[0, 1], [1, 0], [1, 2]]
    assert same(lambda m: m.nonzero(m.tensor(VALUES), as_tuple=True)) == [[0, 1, 1], [1, 0, 2]]
    same(lambda m: m.argwhere(m.tensor([0.0, 1.5, 0.0, 2.0])))
    same(lambda m: m.nonzero(m.tensor([True, False, True]), as_tuple=True))


def test_masked_select():
    same(lambda m: m.tensor(VALUES).masked_select(m.tensor(VALUES) > 1))
    same(lambda m: m.masked_select(m.tensor(VALUES), m.tensor([True, False, True])))
    check(lambda m, x, k: x.masked_select(k), (2, 3), np.array([[True, False, True]]))
    with pytest.raises(RuntimeError, match="BoolTensor"):
        dtrain.ones(2).masked_select(dtrain.tensor([1, 0]))


def test_unique_and_bincount():
    x = [[3, 1, 3], [2, 1, 1]]
    assert same(lambda m: m.unique(m.tensor(x))) == [1, 2, 3]
    same(lambda m: m.tensor(x).unique(return_inverse=True, return_counts=True))
    same(lambda m: m.unique(m.tensor([[1, 2], [1, 2], [0, 5]]), dim=0, return_counts=True))
    assert same(lambda m: m.bincount(m.tensor([0, 2, 2, 5]))) == [1, 0, 2, 0, 0, 1]
    same(lambda m: m.tensor([1, 1, 3]).bincount(minlength=6))
    same(lambda m: m.bincount(m.tensor([0, 1, 1]), weights=m.tensor([0.5, 1.0, 2.0])))


@pytest.mark.parametrize("diagonal", [0, 1, -1])
def test_diag(diagonal):
    check(lambda m, v: m.diag(v, diagonal), (3,))
    check(lambda m, a: m.diag(a, diagonal), (3, 4))
    check(lambda m, a: a.diag(diagonal), (4, 3))


LEGACY = ["FloatTensor", "DoubleTensor", "LongTensor", "IntTensor", "ByteTensor", "BoolTensor"]


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_tensor_types(name):
    def case(m):
        cls = getattr(m, name)
        built, empty = cls([1, 0, 2]), cls(2, 3)
        return (str(built.dtype).split(".")[-1], built.tolist(), empty.shape == (2, 3),
                isinstance(built, cls), isinstance(m.ones(1, dtype=m.float16), cls),
                m.ones(2).type(cls).tolist(), str(m.ones(2).type(cls).dtype).split(".")[-1])
    ours = case(dtrain)
    assert ours[3] is True and ours[4] is False
    if torch is not None:
        assert ours == case(torch)


def test_variable_shares_storage():
    def case(m):
        t = m.ones(2)
        v = m.autograd.Variable(t, requires_grad=True)
        (v * 3).sum().backward()
        t.add_(1)
        return v is t, v.requires_grad, t.requires_grad, v.tolist(), v.grad.tolist()
    ours = case(dtrain)
    assert ours == (False, True, False, [2.0, 2.0], [3.0, 3.0])
    if torch is not None:
        assert ours == case(torch)


def test_contiguity_vs_torch():
    def case(m):
        x = m.ones(2, 3, requires_grad=True)
        y = x.t().contiguous()
        return (x.is_contiguous(), x.t().is_contiguous(), y.is_contiguous(),
                x.permute(1, 0).is_contiguous(), x[:, 1:].is_contiguous(), y.grad_fn.name(),
                x.contiguous() is x)
    ours = case(dtrain)
    assert ours == (True, False, True, False, False, "CloneBackward0", True)
    if torch is not None:
        assert ours == case(torch)


def test_seeds_and_determinism_flags():
    dtrain.manual_seed(7)
    assert dtrain.initial_seed() == 7
    drawn = dtrain.seed()
    assert dtrain.initial_seed() == drawn and 0 <= drawn < 2**63
    a = dtrain.rand(3)
    dtrain.manual_seed(drawn)
    assert dtrain.rand(3).tolist() == a.tolist()
    try:
        dtrain.use_deterministic_algorithms(True, warn_only=True)
        assert dtrain.are_deterministic_algorithms_enabled()
        assert dtrain.is_deterministic_algorithms_warn_only_enabled()
    finally:
        dtrain.use_deterministic_algorithms(False)
    assert not dtrain.are_deterministic_algorithms_enabled()


def nan_backward(m):
    x = m.tensor([0.0, 1.0], requires_grad=True)
    with m.autograd.detect_anomaly():
        try:
            (x.sqrt() * 0).sum().backward()
        except RuntimeError as error:
            message = str(error)
    (x.sqrt() * 0).sum().backward()  # off again: nan gradients pass silently
    return message, m.is_anomaly_enabled()


def test_detect_anomaly_names_the_op():
    ours = nan_backward(dtrain)
    assert ours == ("Function 'SqrtBackward0' returned nan values in its 0th output.", False)
    if torch is not None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that anomaly mode is slow
            message, enabled = nan_backward(torch)
        assert message.startswith(ours[0]) and enabled is False
    with dtrain.autograd.set_detect_anomaly(True):
        assert dtrain.is_anomaly_enabled()
    assert not dtrain.is_anomaly_enabled()
