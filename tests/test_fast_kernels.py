"""Fast paths of the hot kernels give PyTorch's results exactly, ties and edge shapes included."""

import itertools

import numpy as np
import pytest

import dtrain
import dtrain.nn.functional as F

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("shape,kernel,stride", [
    ((4, 3, 8, 8), 2, 2), ((2, 3, 9, 7), 2, 2), ((2, 2, 9, 9), 3, 3), ((2, 2, 8, 8), 2, 3),
    ((2, 2, 6, 6), (2, 3), (2, 3)), ((3, 5, 5), 2, 2)])
def test_tiled_max_pool_gradient_goes_to_the_first_maximum(shape, kernel, stride):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal(shape).astype(np.float32), 0)  # windows of tied zeros
    x[..., 0, :2] = 5.0  # and a tie at a positive maximum
    out_shape = torch.nn.functional.max_pool2d(torch.zeros(shape), kernel, stride).shape
    g = rng.standard_normal(tuple(out_shape)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, kernel, stride).backward(torch.tensor(g))
    xd = dtrain.tensor(x, requires_grad=True)
    F.max_pool2d(xd, kernel, stride).backward(dtrain.tensor(g))
    assert np.array_equal(xt.grad.numpy(), xd.grad._data)


def test_max_pool_gradient_with_inf_and_nan_takes_the_general_path():
    x = np.array([[[[1.0, np.nan, 2.0, 3.0], [0.0, 1.0, 3.0, 3.0]]]], dtype=np.float32)
    g = np.array([[[[np.inf, 1.0]]]], dtype=np.float32)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 2).backward(torch.tensor(g))
    xd = dtrain.tensor(x, requires_grad=True)
    F.max_pool2d(xd, 2).backward(dtrain.tensor(g))
    np.testing.assert_array_equal(xt.grad.numpy(), xd.grad._data)


def _special_windows() -> np.ndarray:
    """(1, 1, 128, 128) input whose 2x2 windows are every choice of 8 special values per corner."""
    payload = np.array([0x7FC01234], dtype=np.uint32).view(np.float32)[0]  # a second NaN
    values = np.array([-0.0, 0.0, 1.0, -1.0, np.nan, payload, np.inf, -np.inf], np.float32)
    windows = values[np.array(list(itertools.product(range(8), repeat=4)))]
    x = np.empty((1, 1, 128, 128), np.float32)
    for k, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        x[0, 0, i::2, j::2] = windows[:, k].reshape(64, 64)
    return x


@pytest.mark.parametrize("finite", [False, True])
def test_2x2_max_pool_has_the_general_kernels_bits(finite):
    # ceil mode on one more row and column sends the same windows through the general loop
    x = _special_windows()
    if finite:  # the 2x2 backward only runs without NaN windows
        x[~np.isfinite(x)] = 0.5
    g = np.random.default_rng(0).standard_normal((1, 1, 64, 64)).astype(np.float32)
    fast = dtrain.tensor(x, requires_grad=True)
    out = F.max_pool2d(fast, 2)
    out.backward(dtrain.tensor(g))
    padded = np.full((1, 1, 129, 129), -7.0, np.float32)
    padded[..., :128, :128] = x
    general = dtrain.tensor(padded, requires_grad=True)
    ref = F.max_pool2d(general, 2, ceil_mode=True)
    ref.backward(dtrain.tensor(np.pad(g, ((0, 0), (0, 0), (0, 1), (0, 1)))))
    assert ref.shape == (1, 1, 65, 65)
    assert np.array_equal(out._data.view(np.uint32), ref._data[..., :64, :64].view(np.uint32))
    assert np.array_equal(fast.grad._data.view(np.uint32),
                          general.grad._data[..., :128, :128].view(np.uint32))
