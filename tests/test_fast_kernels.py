"""Fast paths of the hot kernels give PyTorch's results exactly, ties and edge shapes included."""

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
