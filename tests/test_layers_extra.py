"""1-D pooling, ReLU6/Hardtanh/LogSigmoid/PReLU, cosine similarity, Dropout2d and narrow:
values, gradients and module text against torch and finite differences."""

import os
import sys

import numpy as np
import pytest

import dtrain

sys.path.insert(0, os.path.dirname(__file__))
from helpers import check, torch

SPREAD = np.array([[[-7.0, -0.6, 0.3, 2.1, 6.5, 8.0], [1.2, -1.7, 0.4, -0.2, 3.3, 0.9]]])


@pytest.mark.parametrize("args", [(2,), (3, 1), (2, 2, 1), (3, 2, 1, 2)])
def test_max_pool1d(args):
    check(lambda m, x: m.nn.functional.max_pool1d(x, *args), (2, 3, 9))
    check(lambda m, x: m.nn.MaxPool1d(*args)(x), (3, 9))


def test_max_pool1d_indices_and_ceil_mode():
    check(lambda m, x: m.nn.functional.max_pool1d(x, 2, ceil_mode=True), (2, 3, 7))
    check(lambda m, x: m.nn.functional.max_pool1d(x, 3, return_indices=True)[1], (2, 3, 9),
          grad=False)


@pytest.mark.parametrize("args", [(2,), (3, 1), (3, 2, 1)])
def test_avg_pool1d(args):
    check(lambda m, x: m.nn.functional.avg_pool1d(x, *args), (2, 3, 9))
    check(lambda m, x: m.nn.AvgPool1d(*args)(x), (2, 3, 8))
    check(lambda m, x: m.nn.AvgPool1d(*args, count_include_pad=False)(x), (3, 8))


@pytest.mark.parametrize("name, args", [("relu6", ()), ("hardtanh", ()), ("hardtanh", (-2.0, 3.0)),
                                        ("logsigmoid", ())])
def test_clamping_activations(name, args):
    check(lambda m, x: getattr(m.nn.functional, name)(x, *args), SPREAD.copy())


def test_activation_modules():
    check(lambda m, x: m.nn.ReLU6()(x), SPREAD.copy())
    check(lambda m, x: m.nn.Hardtanh(-2.0, 2.0)(x), SPREAD.copy())
    check(lambda m, x: m.nn.LogSigmoid()(x), SPREAD.copy())


def test_prelu():
    check(lambda m, x, w: m.nn.functional.prelu(x, w), SPREAD.copy(), np.array([0.25, -0.1]))
    check(lambda m, x, w: m.nn.functional.prelu(x, w), SPREAD.copy(), np.array([0.3]))
    layer = dtrain.nn.PReLU(2, init=0.1)
    assert layer.weight.tolist() == pytest.approx([0.1, 0.1])
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        dtrain.nn.functional.prelu(dtrain.ones(2, 3), dtrain.ones(2))


def test_cosine_similarity():
    check(lambda m, a, b: m.nn.functional.cosine_similarity(a, b), (4, 5), (4, 5))
    check(lambda m, a, b: m.nn.CosineSimilarity(dim=0)(a, b), (4, 5), (1, 5))
    check(lambda m, a, b: m.nn.functional.cosine_similarity(a, b, dim=-1), (2, 3, 4), (4,))


def test_module_text_vs_torch():
    def case(m):
        return [repr(layer) for layer in (
            m.nn.MaxPool1d(2), m.nn.AvgPool1d(3, 1), m.nn.ReLU6(), m.nn.ReLU6(inplace=True),
            m.nn.Hardtanh(-2.0, 2.0), m.nn.LogSigmoid(), m.nn.PReLU(3), m.nn.CosineSimilarity(),
            m.nn.Dropout2d(0.3))]
    ours = case(dtrain)
    assert ours[0] == "MaxPool1d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    if torch is not None:
        assert ours == case(torch)


def test_dropout2d_drops_whole_channels():
    dtrain.manual_seed(0)
    x = dtrain.ones(8, 16, 3, 3, requires_grad=True)
    y = dtrain.nn.functional.dropout2d(x, 0.5)
    per_channel = y.detach().numpy().reshape(8, 16, 9)
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert (per_channel.min(axis=2) == per_channel.max(axis=2)).all()  # all or nothing
    assert 0.3 < (per_channel[:, :, 0] == 0).mean() < 0.7
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.detach().numpy())
    layer = dtrain.nn.Dropout2d(0.5)
    layer.eval()
    assert layer(x) is x
    with pytest.raises(RuntimeError, match="3D or 4D"):
        dtrain.nn.functional.dropout2d(dtrain.ones(2, 3), 0.5)


def test_narrow():
    check(lambda m, x: x.narrow(1, 1, 2), (2, 4))
    check(lambda m, x: m.narrow(x, 0, -2, 2), (4, 3))
    with pytest.raises(RuntimeError, match="exceeds dimension size"):
        dtrain.arange(5).narrow(0, 3, 4)
