"""Conv1d and ConvTranspose2d against PyTorch and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import check
from test_layers import RNG, TOL, check_module_fd, compare_with_torch, torch_twin

import dtrain
import dtrain.nn.functional as F
from dtrain import nn

CONV1D_CASES = [
    ({}, (2, 4, 9)),
    ({"stride": 2, "padding": 1}, (2, 4, 9)),
    ({"padding": "same", "dilation": 2}, (2, 4, 8)),
    ({"padding": "valid", "groups": 2, "bias": False}, (3, 4, 7)),
    ({"stride": 3, "padding": 2, "dilation": 2}, (2, 4, 12)),
    ({"padding": 2, "padding_mode": "reflect"}, (2, 4, 6)),
    ({"padding": 1, "padding_mode": "circular", "groups": 4}, (2, 4, 6)),
    ({"padding": 1}, (4, 9)),  # unbatched
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options,shape", CONV1D_CASES)
def test_conv1d_matches_torch(options, shape, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.Conv1d(4, 8, 3, **options, dtype=dtype)
    twin = torch_twin(layer, torch.nn.Conv1d(4, 8, 3, **options, dtype=getattr(torch, dtype)))
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, RNG.standard_normal(shape).astype(dtype), dtype)


@pytest.mark.parametrize("options", [{}, {"stride": 2, "padding": 1},
                                     {"padding": "same", "dilation": 2, "groups": 2},
                                     {"padding": 2, "padding_mode": "replicate"}])
def test_conv1d_gradients_match_finite_differences(options):
    check_module_fd(nn.Conv1d(4, 6, 3, **options, dtype="float64"),
                    RNG.standard_normal((2, 4, 7)))
    functional = {k: v for k, v in options.items() if k != "padding_mode"}
    check(lambda m, x, w, b: m.nn.functional.conv1d(x, w, b, **functional), (2, 4, 7),
          (6, 4 // options.get("groups", 1), 3), (6,))


def test_conv1d_errors_and_init():
    layer = nn.Conv1d(3, 4, 3)
    with pytest.raises(RuntimeError, match=r"expects input with 3 channels.*\(2, 5, 7\)"):
        layer(dtrain.randn(2, 5, 7))
    with pytest.raises(RuntimeError, match=r"2-D \(C, L\) or 3-D.*\(2, 3, 4, 5\)"):
        layer(dtrain.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="strided"):
        nn.Conv1d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv1d(3, 4, (3, 3))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv1d(3, 4, 3, groups=2)
    with pytest.raises(RuntimeError, match="3-D weight"):
        F.conv1d(dtrain.randn(2, 3, 5), dtrain.randn(4, 3, 1, 3))
    dtrain.manual_seed(7)
    conv = nn.Conv1d(3, 4, 5)
    assert conv.weight.shape == (4, 3, 5) and np.abs(conv.weight._data).max() <= 1 / math.sqrt(15)
    assert np.abs(conv.bias._data).max() <= 1 / math.sqrt(15) and conv.weight._data.std() > 0.05


# -------------------------------------------------------------------------- transposed
CT_CASES = [
    ({}, (2, 4, 3, 4)),
    ({"stride": 2}, (2, 4, 3, 4)),
    ({"stride": 2, "padding": 1, "output_padding": 1}, (2, 4, 4, 3)),
    ({"stride": (2, 3), "padding": (1, 0), "output_padding": (1, 2), "dilation": (1, 2)},
     (2, 4, 3, 4)),
    ({"groups": 2, "stride": 2, "dilation": 2, "output_padding": 1, "bias": False}, (2, 4, 3, 3)),
    ({"padding": 2}, (1, 4, 5, 4)),
    ({"stride": 2, "padding": 1}, (4, 3, 5)),  # unbatched
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options,shape", CT_CASES)
def test_conv_transpose2d_matches_torch(options, shape, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.ConvTranspose2d(4, 6, (3, 2), **options, dtype=dtype)
    twin = torch_twin(layer, torch.nn.ConvTranspose2d(4, 6, (3, 2), **options,
                                                      dtype=getattr(torch, dtype)))
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, RNG.standard_normal(shape).astype(dtype), dtype)


def test_conv_transpose2d_output_size_matches_torch():
    torch = pytest.importorskip("torch")
    layer = nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1, dtype="float64")
    twin = torch_twin(layer, torch.nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1,
                                                      dtype=torch.float64))
    x = RNG.standard_normal((2, 2, 4, 5))
    for size in ((10, 13), (12, 14), [2, 3, 11, 15]):
        ours = layer(dtrain.tensor(x), output_size=size)
        theirs = twin(torch.tensor(x), output_size=size)
        np.testing.assert_allclose(ours._data, theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="valid sizes range from 10 to 12"):
        layer(dtrain.tensor(x), output_size=(13, 13))


@pytest.mark.parametrize("options", [{}, {"stride": 2, "padding": 1, "output_padding": 1},
                                     {"groups": 2, "dilation": (2, 1), "stride": (1, 2)}])
def test_conv_transpose2d_gradients_match_finite_differences(options):
    check_module_fd(nn.ConvTranspose2d(4, 6, 3, **options, dtype="float64"),
                    RNG.standard_normal((2, 4, 3, 4)))
    check(lambda m, x, w: m.nn.functional.conv_transpose2d(x, w, **options), (2, 4, 3, 4),
          (4, 6 // options.get("groups", 1), 2, 3))


def test_conv_transpose2d_is_the_input_gradient_of_conv2d():
    x = RNG.standard_normal((2, 3, 5, 6))
    w = RNG.standard_normal((4, 3, 3, 3))
    xt = dtrain.tensor(x, requires_grad=True)
    out = F.conv2d(xt, dtrain.tensor(w), stride=2, padding=1)
    g = RNG.standard_normal(out.shape)
    out.backward(dtrain.tensor(g))
    back = F.conv_transpose2d(dtrain.tensor(g), dtrain.tensor(w), stride=2, padding=1,
                              output_padding=(0, 1))
    np.testing.assert_allclose(back._data, xt.grad._data, rtol=1e-12, atol=1e-12)


def test_conv_transpose2d_errors_and_init():
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2)
    with pytest.raises(RuntimeError, match=r"expects input with 4 channels.*\(2, 3, 5, 5\)"):
        layer(dtrain.randn(2, 3, 5, 5))
    with pytest.raises(RuntimeError, match=r"\(2, 4\)"):
        layer(dtrain.randn(2, 4))
    unusable = nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=2)  # torch builds it too
    with pytest.raises(RuntimeError, match="output padding"):
        unusable(dtrain.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="zeros"):
        nn.ConvTranspose2d(4, 6, 3, padding_mode="reflect")
    with pytest.raises(RuntimeError, match="must be positive"):
        F.conv_transpose2d(dtrain.randn(1, 4, 1, 1), layer.weight, padding=2)
    dtrain.manual_seed(3)
    layer = nn.ConvTranspose2d(4, 6, 3, groups=2)
    assert layer.weight.shape == (4, 3, 3, 3)
    bound = 1 / math.sqrt(3 * 9)
    assert np.abs(layer.weight._data).max() <= bound and np.abs(layer.bias._data).max() <= bound


CT1_CASES = [({}, (2, 4, 5)), ({"stride": 2, "padding": 1, "output_padding": 1}, (2, 4, 5)),
             ({"groups": 2, "dilation": 2, "stride": 3, "output_padding": 2, "bias": False},
              (3, 4, 4)),
             ({"stride": 2}, (4, 6))]  # unbatched


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options,shape", CT1_CASES)
def test_conv_transpose1d_matches_torch(options, shape, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.ConvTranspose1d(4, 6, 3, **options, dtype=dtype)
    twin = torch_twin(layer, torch.nn.ConvTranspose1d(4, 6, 3, **options,
                                                      dtype=getattr(torch, dtype)))
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, RNG.standard_normal(shape).astype(dtype), dtype)
    size = [(shape[-1] - 1) * layer.stride[0] - 2 * layer.padding[0]
            + layer.dilation[0] * 2 + 1 + layer.stride[0] - 1]
    x = RNG.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(layer(dtrain.tensor(x), output_size=size).data,
                               twin(torch.tensor(x), output_size=size).detach().numpy(),
                               **TOL[dtype])


def test_conv_transpose1d_gradients_and_errors():
    check_module_fd(nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, groups=2, dtype="float64"),
                    RNG.standard_normal((2, 4, 5)))
    check(lambda m, x, w, b: m.nn.functional.conv_transpose1d(x, w, b, stride=2, padding=1,
                                                              output_padding=1), (2, 4, 5),
          (4, 3, 3), (3,))
    with pytest.raises(RuntimeError, match="3-D weight"):
        F.conv_transpose1d(dtrain.randn(2, 4, 5), dtrain.randn(4, 3, 3, 3))
    with pytest.raises(RuntimeError, match="output padding"):
        F.conv_transpose1d(dtrain.randn(2, 4, 5), dtrain.randn(4, 3, 3), output_padding=1)
    with pytest.raises(RuntimeError, match=r"2-D or 3-D \(batched\).*\(4, 5, 5, 5\)"):
        nn.ConvTranspose1d(4, 6, 3)(dtrain.randn(4, 5, 5, 5))
