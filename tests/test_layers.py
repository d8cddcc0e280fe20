"""Conv2d, pooling, BatchNorm/LayerNorm and Embedding against PyTorch and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import numeric_grad as central_differences

import dtrain
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.nn.normalization import collect_batch_stats

RNG = np.random.default_rng(1234)
TOL = {"float64": {"rtol": 1e-10, "atol": 1e-10}, "float32": {"rtol": 1e-5, "atol": 2e-5}}


# --------------------------------------------------------------------------- helpers
def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``x`` (perturbed in place)."""
    return central_differences(lambda _: f(), x, eps)


def check_fd(fn, *arrays, atol=1e-7):
    """Gradients of sum(fn(*tensors) * upstream) equal finite differences for every input."""
    tensors = [dtrain.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    upstream = RNG.standard_normal(out.shape)
    (out * dtrain.tensor(upstream)).sum().backward()

    def scalar():
        with dtrain.no_grad():
            return float((fn(*[dtrain.tensor(a) for a in arrays])._data * upstream).sum())

    for t, a in zip(tensors, arrays):
        np.testing.assert_allclose(t.grad._data, numeric_grad(scalar, a), atol=atol)


def check_module_fd(layer, x: np.ndarray, atol=1e-7):
    """The layer's input and parameter gradients equal finite differences."""
    floating = x.dtype.kind == "f"
    xt = dtrain.tensor(x, requires_grad=floating)
    out = layer(xt)
    upstream = RNG.standard_normal(out.shape)
    (out * dtrain.tensor(upstream)).sum().backward()

    def scalar():
        with dtrain.no_grad():
            return float((layer(dtrain.tensor(x))._data * upstream).sum())

    targets = [("input", x, xt.grad)] if floating else []
    targets += [(name, p._data, p.grad) for name, p in layer.named_parameters()]
    for name, array, grad in targets:
        np.testing.assert_allclose(grad._data, numeric_grad(scalar, array), atol=atol,
                                   err_msg=name)


def torch_twin(layer, torch_layer):
    """Copy every parameter and buffer of the dtrain layer into its torch twin."""
    import torch

    ours, theirs = layer.state_dict(), torch_layer.state_dict()
    assert list(ours) == list(theirs)
    with torch.no_grad():
        for name, value in ours.items():
            theirs[name].copy_(torch.from_numpy(np.array(value)))
    return torch_layer


def compare_with_torch(layer, torch_layer, x: np.ndarray, dtype: str, steps: int = 1):
    """Forward, input and parameter gradients (and buffers) of twin layers agree."""
    import torch

    tol = TOL[dtype]
    floating = x.dtype.kind == "f"
    for _ in range(steps):
        layer.zero_grad()
        torch_layer.zero_grad()
        xd = dtrain.tensor(x, requires_grad=floating)
        xt = torch.tensor(x, requires_grad=floating)
        out_d, out_t = layer(xd), torch_layer(xt)
        g = RNG.standard_normal(tuple(out_t.shape)).astype(out_d.dtype)
        out_d.backward(dtrain.tensor(g))
        out_t.backward(torch.from_numpy(g))
        assert out_d.dtype == np.dtype(dtype) and out_d.shape == tuple(out_t.shape)
        np.testing.assert_allclose(out_d._data, out_t.detach().numpy(), **tol)
        if floating:
            np.testing.assert_allclose(xd.grad._data, xt.grad.numpy(), **tol)
        tparams = dict(torch_layer.named_parameters())
        for name, p in layer.named_parameters():
            np.testing.assert_allclose(p.grad._data, tparams[name].grad.numpy(), **tol,
                                       err_msg=name)
        tbuffers = dict(torch_layer.named_buffers())
        for name, b in layer.named_buffers():
            np.testing.assert_allclose(b._data, tbuffers[name].numpy(), **tol, err_msg=name)
        x = x + RNG.standard_normal(x.shape).astype(x.dtype) if floating else x


# ------------------------------------------------------------------------------ conv
def conv_args(cin: int, cout: int, kernel, **options) -> dict:
    return {"in_channels": cin, "out_channels": cout, "kernel_size": kernel, **options}


CONV_CASES = [
    (conv_args(3, 4, 3), (2, 3, 7, 6)),
    (conv_args(3, 5, 3, stride=2, padding=1), (2, 3, 9, 8)),
    (conv_args(2, 3, (2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), (3, 2, 8, 9)),
    (conv_args(4, 6, 3, padding=1, groups=2), (2, 4, 6, 5)),
    (conv_args(4, 8, 3, padding="same", dilation=2, groups=4), (2, 4, 7, 7)),
    (conv_args(2, 3, 5, stride=3, padding="valid"), (1, 2, 11, 9)),
    (conv_args(3, 2, 1, bias=False), (2, 3, 4, 5)),
    (conv_args(2, 3, 4, padding="same"), (2, 2, 6, 7)),
    (conv_args(2, 3, 2, padding=3), (2, 2, 4, 5)),
    (conv_args(2, 3, 3, stride=(2, 3), padding=(3, 1)), (2, 2, 5, 8)),
    (conv_args(2, 4, 3, padding=2, padding_mode="reflect"), (2, 2, 5, 6)),
    (conv_args(2, 4, 3, stride=2, padding=1, padding_mode="replicate"), (2, 2, 7, 6)),
    (conv_args(2, 2, 3, padding=(1, 2), padding_mode="circular", groups=2), (2, 2, 5, 4)),
    (conv_args(3, 4, 3, padding=1), (3, 6, 5)),  # unbatched
    (conv_args(1, 4, 3, padding=1), (2, 1, 5, 6)),  # many more outputs than inputs: col2im
    (conv_args(1, 5, (2, 3), padding=(2, 1), dilation=(1, 2), padding_mode="replicate"),
     (2, 1, 5, 7)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own note
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kwargs,shape", CONV_CASES)
def test_conv2d_matches_torch(kwargs, shape, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(**kwargs, dtype=dtype)
    twin = torch_twin(layer, torch.nn.Conv2d(**kwargs, dtype=getattr(torch, dtype)))
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, RNG.standard_normal(shape).astype(dtype), dtype)


@pytest.mark.parametrize("kwargs,shape", [
    ({"stride": 2, "padding": 1, "dilation": (2, 1), "groups": 2}, (2, 4, 7, 6)),
    ({"padding": "same", "dilation": 2}, (1, 4, 5, 6)),
    ({"stride": (1, 2), "padding": (2, 0)}, (2, 4, 4, 7)),
])
def test_conv2d_gradients_match_finite_differences(kwargs, shape):
    x = RNG.standard_normal(shape)
    w = RNG.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 2))
    b = RNG.standard_normal(6)
    check_fd(lambda x, w, b: F.conv2d(x, w, b, **kwargs), x, w, b)
    check_fd(lambda x, w: F.conv2d(x, w, **kwargs), x, w)
    wide = RNG.standard_normal((14, 4 // kwargs.get("groups", 1), 2, 3))  # 14 > 3 * 4
    check_fd(lambda x, w: F.conv2d(x, w, **kwargs), x, wide)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv2d_padding_modes_match_finite_differences(mode):
    layer = nn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(2, 1), padding_mode=mode,
                      dtype="float64")
    check_module_fd(layer, RNG.standard_normal((2, 2, 4, 5)))


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_only_input_or_only_weight_gradient(stride):
    x = RNG.standard_normal((2, 3, 5, 5))
    layer = nn.Conv2d(3, 4, 3, stride=stride, padding=1, dtype="float64")
    xt = dtrain.tensor(x, requires_grad=True)
    layer(xt).sum().backward()
    expected_x, expected_w = xt.grad._data, layer.weight.grad._data
    layer.zero_grad()
    layer.requires_grad_(False)
    xt = dtrain.tensor(x, requires_grad=True)
    layer(xt).sum().backward()
    assert layer.weight.grad is None
    np.testing.assert_allclose(xt.grad._data, expected_x, rtol=1e-12, atol=1e-12)
    layer.requires_grad_(True)
    xt = dtrain.tensor(x)
    layer(xt).sum().backward()
    assert xt.grad is None and layer.bias.grad is not None
    np.testing.assert_allclose(layer.weight.grad._data, expected_w, rtol=1e-12, atol=1e-12)


def test_conv2d_identity_kernel_by_hand():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float64).reshape(2, 1, 4, 4)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 1] = 2.0
    out = F.conv2d(dtrain.tensor(x), dtrain.tensor(w), dtrain.tensor(np.array([0.5])), padding=1)
    np.testing.assert_array_equal(out._data, 2 * x + 0.5)
    out = F.conv2d(dtrain.tensor(x), dtrain.tensor(w), stride=2)
    np.testing.assert_array_equal(out._data, 2 * x[:, :, 1:3:2, 1:3:2])


def test_conv2d_init_is_seeded_and_draws_like_linear():
    dtrain.manual_seed(7)
    conv = nn.Conv2d(3, 4, (2, 3))
    dtrain.manual_seed(7)
    linear = nn.Linear(3 * 2 * 3, 4)
    np.testing.assert_array_equal(conv.weight._data.reshape(4, -1), linear.weight._data)
    np.testing.assert_array_equal(conv.bias._data, linear.bias._data)
    assert conv.weight.dtype == np.float32 and np.abs(conv.weight._data).max() <= 1 / math.sqrt(18)
    grouped = nn.Conv2d(4, 8, 3, groups=4)
    assert grouped.weight.shape == (8, 1, 3, 3)


def test_conv2d_repr_and_errors():
    assert repr(nn.Conv2d(1, 8, 3, padding=1)) == (
        "Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))")
    assert repr(nn.Conv2d(2, 4, (1, 3), stride=2, dilation=2, groups=2, bias=False,
                          padding_mode="reflect")) == (
        "Conv2d(2, 4, kernel_size=(1, 3), stride=(2, 2), dilation=(2, 2), groups=2, "
        "bias=False, padding_mode=reflect)")
    layer = nn.Conv2d(3, 8, 3)
    with pytest.raises(RuntimeError, match=r"expects input with 3 channels.*\(2, 4, 5, 5\)"):
        layer(dtrain.randn(2, 4, 5, 5))
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        layer(dtrain.randn(2, 3))
    with pytest.raises(RuntimeError, match="smaller than the dilated kernel"):
        layer(dtrain.randn(1, 3, 2, 5))
    with pytest.raises(RuntimeError, match="dtype"):
        layer(dtrain.randn(1, 3, 5, 5, dtype="float64"))
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 8, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 8, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(3, 8, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 8, (3, 3, 3))
    with pytest.raises(RuntimeError, match="reflect padding"):
        nn.Conv2d(1, 1, 3, padding=3, padding_mode="reflect")(dtrain.randn(1, 1, 3, 3))


# --------------------------------------------------------------------------- pooling
MAX_CASES = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1), "dilation": (2, 1)},
    {"kernel_size": 3, "stride": 2, "ceil_mode": True},
    {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"kernel_size": 3, "stride": 1},
]
AVG_CASES = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
    {"kernel_size": 3, "stride": 2, "ceil_mode": True},
    {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
    {"kernel_size": (2, 3), "stride": 1, "divisor_override": 5},
]


def _pool_pair(name, kwargs):
    import torch

    cls = {"max": "MaxPool2d", "avg": "AvgPool2d"}[name]
    return getattr(nn, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,kwargs", [("max", k) for k in MAX_CASES]
                         + [("avg", k) for k in AVG_CASES])
def test_pooling_matches_torch(name, kwargs, dtype):
    pytest.importorskip("torch")
    layer, twin = _pool_pair(name, kwargs)
    assert repr(layer) == repr(twin)
    x = RNG.standard_normal((2, 3, 9, 8))
    if name == "max":
        x = np.round(x * 2)  # many ties: the gradient must go to the first maximum
    compare_with_torch(layer, twin, x.astype(dtype), dtype)
    compare_with_torch(layer, twin, x[0].astype(dtype), dtype)  # unbatched


@pytest.mark.parametrize("kwargs", MAX_CASES)
def test_max_pool_indices_match_torch(kwargs):
    torch = pytest.importorskip("torch")
    x = np.round(RNG.standard_normal((2, 3, 9, 8)) * 2)
    out, idx = F.max_pool2d(dtrain.tensor(x), return_indices=True, **kwargs)
    tout, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True, **kwargs)
    np.testing.assert_array_equal(out._data, tout.numpy())
    np.testing.assert_array_equal(idx._data, tidx.numpy())
    assert idx.dtype == np.int64


@pytest.mark.parametrize("output_size", [1, (3, 2), (4, None), (5, 7), 9])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adaptive_avg_pool_matches_torch(output_size, dtype):
    torch = pytest.importorskip("torch")
    layer, twin = nn.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size)
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, RNG.standard_normal((2, 3, 9, 8)).astype(dtype), dtype)


def test_max_pool_nan_propagates_like_torch():
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((1, 2, 4, 4))
    x[0, 0, 0, 1] = x[0, 1, 3, 3] = np.nan
    xd, xt = dtrain.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    F.max_pool2d(xd, 2).sum().backward()
    torch.nn.functional.max_pool2d(xt, 2).sum().backward()
    np.testing.assert_array_equal(xd.grad._data, xt.grad.numpy())


@pytest.mark.parametrize("fn", [
    lambda x: F.max_pool2d(x, 3, 2, 1),
    lambda x: F.max_pool2d(x, (2, 3), 1, dilation=(2, 1), ceil_mode=True),
    lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda x: F.avg_pool2d(x, (3, 2), (1, 2), (1, 0)),
    lambda x: F.adaptive_avg_pool2d(x, (3, 4)),
])
def test_pooling_gradients_match_finite_differences(fn):
    x = RNG.permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) * 0.01  # distinct values: no ties
    check_fd(fn, x)


def test_pooling_by_hand():
    x = np.ones((1, 1, 2, 4))
    x[0, 0, 1, 3] = 5.0
    xt = dtrain.tensor(x, requires_grad=True)
    out = F.max_pool2d(xt, 2)
    np.testing.assert_array_equal(out._data, [[[[1.0, 5.0]]]])
    out.sum().backward()  # ties go to the first element of the window (row-major)
    np.testing.assert_array_equal(xt.grad._data, [[[[1, 0, 0, 0], [0, 0, 0, 1]]]])
    xt.grad = None
    F.max_pool2d(xt, 2).backward(dtrain.tensor(np.array([[[[np.inf, -2.0]]]])))
    np.testing.assert_array_equal(xt.grad._data, [[[[np.inf, 0, 0, 0], [0, 0, 0, -2]]]])
    avg = F.avg_pool2d(dtrain.tensor(x), 2, padding=1, count_include_pad=False)
    np.testing.assert_allclose(avg._data, [[[[1.0, 1.0, 1.0], [1.0, 1.0, 5.0]]]])
    avg = F.avg_pool2d(dtrain.tensor(x), 2, padding=1)
    np.testing.assert_allclose(avg._data, [[[[0.25, 0.5, 0.25], [0.25, 0.5, 1.25]]]])
    np.testing.assert_allclose(F.adaptive_avg_pool2d(dtrain.tensor(x), 1)._data, [[[[1.5]]]])


def test_pooling_errors_and_repr():
    assert repr(nn.MaxPool2d(2)) == (
        "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)")
    assert repr(nn.AvgPool2d(3, 2, 1)) == "AvgPool2d(kernel_size=3, stride=2, padding=1)"
    with pytest.raises(ValueError, match="at most half"):
        F.max_pool2d(dtrain.randn(1, 1, 9, 9), 3, 1, 2)
    with pytest.raises(RuntimeError, match=r"too small"):
        F.max_pool2d(dtrain.randn(1, 1, 2, 2), 3)
    with pytest.raises(RuntimeError, match=r"\(4, 4\)"):
        nn.AvgPool2d(2)(dtrain.randn(4, 4))


# ------------------------------------------------------------------------ batch norm
BN_CASES = [
    ("BatchNorm1d", (6, 3)),
    ("BatchNorm1d", (4, 3, 5)),
    ("BatchNorm2d", (4, 3, 5, 2)),
]
BN_OPTIONS = [{}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3}, {"affine": False},
              {"track_running_stats": False}, {"bias": False}]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options", BN_OPTIONS)
@pytest.mark.parametrize("cls,shape", BN_CASES)
def test_batch_norm_matches_torch_over_steps_and_in_eval(cls, shape, options, dtype):
    torch = pytest.importorskip("torch")
    layer = getattr(nn, cls)(3, **options, dtype=dtype)
    if layer.weight is not None:
        layer.weight._data[...] = RNG.uniform(0.5, 2, 3)
    if layer.bias is not None:
        layer.bias._data[...] = RNG.standard_normal(3)
    twin = torch_twin(layer, getattr(torch.nn, cls)(3, **options, dtype=getattr(torch, dtype)))
    assert repr(layer) == repr(twin)
    x = (RNG.standard_normal(shape) * 2 + 1).astype(dtype)
    compare_with_torch(layer, twin, x, dtype, steps=3)
    layer.eval()
    twin.eval()
    compare_with_torch(layer, twin, x, dtype, steps=2)
    if layer.num_batches_tracked is not None:
        assert layer.num_batches_tracked._data == 3 and layer.num_batches_tracked.dtype == np.int64


def test_batch_norm_running_stats_by_hand():
    x = RNG.standard_normal((8, 2, 3))
    layer = nn.BatchNorm1d(2, dtype="float64")
    out = layer(dtrain.tensor(x))
    mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    np.testing.assert_allclose(out._data, (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean._data, 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var._data, 0.9 + 0.1 * var * 24 / 23, rtol=1e-12)
    cumulative = nn.BatchNorm1d(2, momentum=None, dtype="float64")
    y = RNG.standard_normal((8, 2, 3))
    cumulative(dtrain.tensor(x))
    cumulative(dtrain.tensor(y))
    np.testing.assert_allclose(cumulative.running_mean._data,
                               (mean + y.mean(axis=(0, 2))) / 2, rtol=1e-12)
    assert int(cumulative.num_batches_tracked._data) == 2
    cumulative.eval()
    out = cumulative(dtrain.tensor(y))
    expected = (y - cumulative.running_mean._data[:, None]) / np.sqrt(
        cumulative.running_var._data[:, None] + 1e-5)
    np.testing.assert_allclose(out._data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("cls,shape", BN_CASES)
def test_batch_norm_gradients_match_finite_differences(cls, shape, training):
    layer = getattr(nn, cls)(3, dtype="float64")
    layer.weight._data[...] = RNG.uniform(0.5, 2, 3)
    layer.bias._data[...] = RNG.standard_normal(3)
    layer.running_mean._data[...] = RNG.standard_normal(3)
    layer.running_var._data[...] = RNG.uniform(0.5, 2, 3)
    layer.train(training)
    check_module_fd(layer, RNG.standard_normal(shape), atol=1e-6)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_collected_batch_stats_applied_later_are_bitwise_identical(momentum):
    """Shards computed under collect_batch_stats and applied in order equal plain forwards."""
    def model():
        dtrain.manual_seed(3)
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=momentum),
                             nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6),
                             nn.BatchNorm1d(6, momentum=momentum))

    plain, deferred = model(), model()
    shards = [dtrain.randn(3, 2, 5, 5) * 3 + 1 for _ in range(3)]
    outputs = [plain(x) for x in shards]
    before = {k: v.clone() for k, v in deferred.state_dict().items()}
    records, deferred_outputs = [], []
    for x in shards:
        with collect_batch_stats() as shard_records:
            deferred_outputs.append(deferred(x))
        records.append(shard_records)
        for k, v in deferred.state_dict().items():
            assert np.array_equal(v, before[k]), f"{k} changed inside collect_batch_stats"
    assert [len(r) for r in records] == [2, 2, 2]
    module, mean, var, n = records[0][0]
    assert module is deferred[1] and mean.shape == (4,) and var.shape == (4,) and n == 75
    for shard_records in records:
        for module, mean, var, _ in shard_records:
            module.apply_batch_stats(mean, var)
    for (k, a), b in zip(plain.state_dict().items(), deferred.state_dict().values()):
        assert a.dtype == b.dtype and a._data.tobytes() == b._data.tobytes(), k
    for a, b in zip(outputs, deferred_outputs):
        assert a._data.tobytes() == b._data.tobytes()
    assert int(deferred[1].num_batches_tracked._data) == 3


def test_apply_batch_stats_errors_and_collect_outside_training():
    layer = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        layer.apply_batch_stats(np.zeros(4, np.float32), np.ones(3, np.float32))
    with pytest.raises(RuntimeError, match="track_running_stats"):
        nn.BatchNorm1d(3, track_running_stats=False).apply_batch_stats(np.zeros(3), np.ones(3))
    layer.eval()
    with collect_batch_stats() as records:
        layer(dtrain.randn(4, 3))
        nn.BatchNorm1d(3, track_running_stats=False)(dtrain.randn(4, 3))
    assert records == []


def test_batch_norm_errors():
    with pytest.raises(ValueError, match=r"4-D.*\(2, 3, 4\)"):
        nn.BatchNorm2d(3)(dtrain.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"expected 3 channels.*\(2, 4\)"):
        nn.BatchNorm1d(3)(dtrain.randn(2, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(dtrain.randn(1, 3))
    with pytest.raises(RuntimeError, match="running_mean"):
        F.batch_norm(dtrain.randn(2, 3), None, None, training=False)


def test_functional_batch_norm_updates_given_buffers():
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((5, 3, 4))
    rm, rv = np.zeros(3), np.ones(3)
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    out = F.batch_norm(dtrain.tensor(x), dtrain.tensor(rm), dtrain.tensor(rv), training=True,
                       momentum=0.2)
    tout = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.2)
    np.testing.assert_allclose(out._data, tout.numpy(), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------ layer norm
LN_CASES = [(4, {}), ((3, 4), {}), (4, {"bias": False}), (4, {"elementwise_affine": False}),
            ((5, 3, 4), {"eps": 1e-3})]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("normalized_shape,options", LN_CASES)
def test_layer_norm_matches_torch(normalized_shape, options, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.LayerNorm(normalized_shape, **options, dtype=dtype)
    for p in layer.parameters():
        p._data[...] = RNG.standard_normal(p.shape)
    twin = torch_twin(layer, torch.nn.LayerNorm(normalized_shape, **options,
                                                dtype=getattr(torch, dtype)))
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, RNG.standard_normal((2, 5, 3, 4)).astype(dtype), dtype)


@pytest.mark.parametrize("normalized_shape,options", LN_CASES[:3])
def test_layer_norm_gradients_match_finite_differences(normalized_shape, options):
    layer = nn.LayerNorm(normalized_shape, **options, dtype="float64")
    for p in layer.parameters():
        p._data[...] = RNG.standard_normal(p.shape)
    check_module_fd(layer, RNG.standard_normal((2, 3, 4)), atol=1e-6)
    x = RNG.standard_normal((3, 4))
    check_fd(lambda x: F.layer_norm(x, (4,)), x, atol=1e-6)


def test_layer_norm_by_hand_and_errors():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    out = nn.LayerNorm(4, dtype="float64")(dtrain.tensor(x))
    np.testing.assert_allclose(out._data, (x - 3) / np.sqrt(3.5 + 1e-5), rtol=1e-12)
    with pytest.raises(RuntimeError, match=r"\(\*, 3, 4\).*\(2, 4, 3\)"):
        nn.LayerNorm((3, 4))(dtrain.randn(2, 4, 3))


# ------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("options", [{}, {"padding_idx": 2},
                                     {"padding_idx": -1, "scale_grad_by_freq": True},
                                     {"max_norm": 1.0}, {"max_norm": 0.5, "norm_type": 1.0}])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_embedding_matches_torch(options, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.Embedding(7, 3, **options, dtype=dtype)
    twin = torch_twin(layer, torch.nn.Embedding(7, 3, **options, dtype=getattr(torch, dtype)))
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, RNG.integers(0, 7, (4, 5)), dtype)
    np.testing.assert_allclose(layer.weight._data, twin.weight.detach().numpy(), **TOL[dtype])


def test_embedding_padding_repeats_and_errors():
    dtrain.manual_seed(0)
    layer = nn.Embedding(5, 4, padding_idx=1)
    assert not layer.weight._data[1].any() and layer.weight._data.std() > 0.5
    idx = dtrain.tensor([[3, 1, 3], [3, 0, 1]])
    out = layer(idx)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out._data[0, 0], layer.weight._data[3])
    out.sum().backward()
    np.testing.assert_array_equal(layer.weight.grad._data[:, 0], [1, 0, 0, 3, 0])
    layer.zero_grad()
    layer(dtrain.tensor(np.zeros((0, 2), dtype=np.int64))).sum().backward()
    assert layer.weight.grad.shape == (5, 4) and not layer.weight.grad._data.any()
    assert layer(dtrain.tensor(3)).shape == (4,)
    with pytest.raises(IndexError, match=r"index 5 .*num_embeddings=5"):
        layer(dtrain.tensor([0, 5]))
    with pytest.raises(IndexError, match=r"index -1 "):
        layer(dtrain.tensor([-1]))
    with pytest.raises(TypeError, match="integer"):
        layer(dtrain.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 4, padding_idx=5)
    frozen = nn.Embedding.from_pretrained(np.eye(3, dtype=np.float32))
    assert not frozen.weight.requires_grad
    np.testing.assert_array_equal(frozen(dtrain.tensor([2]))._data, [[0, 0, 1]])


def test_embedding_gradient_matches_finite_differences():
    layer = nn.Embedding(6, 2, scale_grad_by_freq=False, dtype="float64")
    check_module_fd(layer, np.array([[0, 4, 5], [5, 5, 1]]))


# ------------------------------------------------------------------------------ a CNN
def cnn(lib):
    return lib.nn.Sequential(
        lib.nn.Conv2d(1, 4, 3, padding=1), lib.nn.BatchNorm2d(4), lib.nn.ReLU(),
        lib.nn.MaxPool2d(2), lib.nn.Flatten(), lib.nn.Linear(4 * 4 * 4, 3),
    )


def test_cnn_state_dict_repr_and_step_match_torch():
    torch = pytest.importorskip("torch")
    model = cnn(dtrain)
    twin = torch_twin(model, cnn(torch))
    assert repr(model) == repr(twin)
    assert [k for k, _ in model.named_buffers()] == [k for k, _ in twin.named_buffers()]
    compare_with_torch(model, twin, RNG.standard_normal((5, 1, 8, 8)).astype("float32"),
                       "float32", steps=2)


def test_cnn_trains_with_hand_written_sgd():
    dtrain.manual_seed(0)
    model = cnn(dtrain)
    x = dtrain.randn(32, 1, 8, 8)
    y = dtrain.tensor(RNG.integers(0, 3, 32))
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(15):
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        losses.append(loss.item())
        for p in model.parameters():
            p._data -= 0.1 * p.grad._data
    assert losses[-1] < 0.7 * losses[0], losses
    assert int(model[1].num_batches_tracked._data) == 15
