"""Activations, padding, normalize, pixel shuffle, interpolation and GroupNorm against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check
from test_layers import RNG, check_module_fd, compare_with_torch, torch_twin

import dtrain
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.nn import upsampling


# ------------------------------------------------------------------------ activations
@pytest.mark.parametrize("name", ["silu", "mish", "hardswish"])
def test_activations_match_torch_and_finite_differences(name):
    check(lambda m, x: getattr(m.nn.functional, name)(x), (3, 4))
    edges = np.array([-3.0, 3.0, -2.0, 0.5, 4.0, -5.0, 0.0, 30.0, -30.0])
    check(lambda m, x: getattr(m.nn.functional, name)(x), edges, fd=False)


@pytest.mark.parametrize("cls", ["SiLU", "Mish", "Hardswish", "Identity"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_activation_layers_match_torch(cls, dtype):
    torch = pytest.importorskip("torch")
    layer, twin = getattr(nn, cls)(), getattr(torch.nn, cls)()
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, (RNG.standard_normal((4, 5)) * 4).astype(dtype), dtype)


def test_identity_ignores_arguments_and_returns_its_input():
    x = dtrain.randn(2, 3)
    assert nn.Identity(54, unused="x")(x) is x


def test_activations_refuse_integer_input_like_torch():
    for name in ("silu", "mish", "hardswish"):
        with pytest.raises(NotImplementedError, match=f"{name} is not implemented for dtype int64"):
            getattr(F, name)(dtrain.tensor([1, 2]))


def test_silu_is_stable_for_large_inputs():
    x = dtrain.tensor(np.array([-1000.0, 1000.0]), requires_grad=True)
    F.silu(x).sum().backward()
    np.testing.assert_array_equal(F.silu(x).data, [-0.0, 1000.0])
    np.testing.assert_array_equal(x.grad._data, [0.0, 1.0])


# ---------------------------------------------------------------------------- padding
PAD_CASES = [
    ((1, 2), "constant", (2, 3, 4, 5)),
    ((1, 2, 0, 1), "reflect", (2, 3, 4, 5)),
    ((2, 1, 1, 0), "replicate", (2, 3, 4, 5)),
    ((1, 1, 2, 0), "circular", (2, 3, 4, 5)),
    ((-1, 2, 1, -1, 0, 1), "constant", (2, 3, 4, 5)),
    ((1, 2, 1, 1, 2, 0), "reflect", (2, 3, 4, 5)),
    ((3, 2), "reflect", (3, 4)),
    ((0, 3), "replicate", (2, 3, 2)),
    ((2, 2, 1, 3, 1, 1), "replicate", (3, 4, 3, 2)),
]


@pytest.mark.parametrize("pad,mode,shape", PAD_CASES)
def test_pad_matches_torch_and_finite_differences(pad, mode, shape):
    check(lambda m, x: m.nn.functional.pad(x, pad, mode=mode), shape)


def test_pad_value_and_errors():
    torch = pytest.importorskip("torch")
    check(lambda m, x: m.nn.functional.pad(x, (1, 2), value=2.5), (3, 4))
    x = dtrain.randn(1, 2, 3, 4)
    with pytest.raises(NotImplementedError, match="Padding size 2 .* 4D input"):
        F.pad(x, (1, 1), mode="reflect")
    with pytest.raises(RuntimeError, match="at most 3 for input of shape"):
        F.pad(x, (4, 0, 0, 0), mode="reflect")
    with pytest.raises(RuntimeError, match="divisible by 2"):
        F.pad(x, (1,))
    with pytest.raises(NotImplementedError, match="mode foo"):
        F.pad(x, (1, 1), mode="foo")
    with pytest.raises(RuntimeError, match="negative output size"):
        F.pad(x, (-3, -2))
    with pytest.raises(RuntimeError, match="less than or equal"):
        F.pad(dtrain.randn(3), (1, 1, 1, 1))
    for fn in (lambda m: m.nn.functional.pad(m.zeros(1, 2, 3, 4), (1, 1), mode="reflect"),
               lambda m: m.nn.functional.pad(m.zeros(1, 2, 3, 4), (1,)),
               lambda m: m.nn.functional.pad(m.zeros(3), (1, 1, 1, 1))):
        assert raised(fn, dtrain) is raised(fn, torch)


def raised(fn, lib) -> type:
    """The type of the exception ``fn(lib)`` raises."""
    try:
        fn(lib)
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return type(e)
    raise AssertionError("no exception")


# -------------------------------------------------------------------------- normalize
@pytest.mark.parametrize("kwargs", [{}, {"p": 1, "dim": 0}, {"p": 3.0, "dim": -1},
                                    {"p": float("inf")}, {"eps": 0.5}])
def test_normalize_matches_torch_and_finite_differences(kwargs):
    check(lambda m, x: m.nn.functional.normalize(x, **kwargs), (3, 4, 2))


def test_normalize_zero_rows_and_errors():
    rows = np.zeros((2, 3))
    rows[0] = [1.0, 2.0, 3.0]
    check(lambda m, x: m.nn.functional.normalize(x), rows, fd=False)
    check(lambda m, x: m.nn.functional.normalize(x, p=1), rows, fd=False)
    with pytest.raises(IndexError, match="Dimension out of range"):
        F.normalize(dtrain.randn(2, 3), dim=2)


# ---------------------------------------------------------------------- pixel shuffle
def test_pixel_shuffle_matches_torch_and_finite_differences():
    torch = pytest.importorskip("torch")
    check(lambda m, x: m.nn.functional.pixel_shuffle(x, 2), (2, 8, 3, 4))
    check(lambda m, x: m.nn.functional.pixel_shuffle(x, 3), (9, 2, 2))
    check(lambda m, x: m.nn.functional.pixel_unshuffle(x, 2), (3, 2, 4, 6))
    for cls, arg in (("PixelShuffle", 2), ("PixelUnshuffle", 2)):
        layer, twin = getattr(nn, cls)(arg), getattr(torch.nn, cls)(arg)
        assert repr(layer) == repr(twin)
        compare_with_torch(layer, twin, RNG.standard_normal((2, 4, 4, 6)).astype("float32"),
                           "float32")
    x = np.arange(8.0).reshape(1, 4, 1, 2)
    np.testing.assert_array_equal(nn.PixelUnshuffle(2)(nn.PixelShuffle(2)(dtrain.tensor(x))).data,
                                  x)


def test_pixel_shuffle_errors():
    with pytest.raises(RuntimeError, match="divisible by the square"):
        F.pixel_shuffle(dtrain.randn(1, 3, 3, 4), 2)
    with pytest.raises(RuntimeError, match="at least 3 dimensions"):
        F.pixel_shuffle(dtrain.randn(4, 4), 2)
    with pytest.raises(RuntimeError, match="divisible by downscale_factor"):
        F.pixel_unshuffle(dtrain.randn(1, 1, 3, 4), 2)
    with pytest.raises(ValueError, match="upscale_factor"):
        nn.PixelShuffle(0)


# ---------------------------------------------------------------------- interpolation
INTERP_4D = [
    {"scale_factor": 2}, {"size": (5, 7)}, {"scale_factor": (1.5, 0.7)}, {"size": (3, 9)},
    {"scale_factor": 1.3}, {"size": (5, 3), "mode": "nearest-exact"},
    {"size": (3, 9), "mode": "bilinear"}, {"scale_factor": 2, "mode": "bilinear"},
    {"size": (7, 5), "mode": "bilinear", "align_corners": True},
    {"scale_factor": 1.7, "mode": "bilinear", "align_corners": False},
    {"scale_factor": 0.5, "mode": "bilinear"}, {"size": (1, 1), "mode": "bilinear",
                                                 "align_corners": True},
    {"scale_factor": 2.5, "mode": "bilinear", "recompute_scale_factor": True},
    {"size": (3, 4), "mode": "area"}, {"scale_factor": 0.45, "mode": "area"},
    {"size": (5, 7), "mode": "area"},
]
INTERP_3D = [{"scale_factor": 3}, {"size": 7, "mode": "linear"},
             {"size": 11, "mode": "linear", "align_corners": True},
             {"scale_factor": 0.6, "mode": "linear"}, {"size": 3, "mode": "area"}]


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("kwargs,shape", [(k, (2, 3, 4, 6)) for k in INTERP_4D]
                         + [(k, (2, 3, 5)) for k in INTERP_3D])
def test_interpolate_matches_torch_and_finite_differences(kwargs, shape, dense, monkeypatch):
    # small axes multiply by matrices; large ones gather and reduceat: check both ways
    monkeypatch.setattr(upsampling, "_DENSE_ENTRIES", 1 << 17 if dense else 0)
    check(lambda m, x: m.nn.functional.interpolate(x, **kwargs), shape)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_with_infinities_matches_torch(mode):
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((1, 2, 5, 6))
    x[0, 0, 2, 3], x[0, 1, 4, 0] = np.inf, -np.inf
    for kwargs in ({"scale_factor": 2}, {"size": (7, 4)}):
        ours = F.interpolate(dtrain.tensor(x), mode=mode, **kwargs).data
        theirs = torch.nn.functional.interpolate(torch.tensor(x), mode=mode, **kwargs).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_float32_matches_torch_for_many_sizes(mode):
    torch = pytest.importorskip("torch")
    for size in range(3, 10):
        x = RNG.standard_normal((1, 2, size, size + 1)).astype(np.float32)
        for kwargs in ({"size": (3, 11)}, {"size": (size * 3 - 1, 2)}, {"scale_factor": 1.7},
                       {"scale_factor": 1 / 3}, {"scale_factor": 2.5}):
            ours = F.interpolate(dtrain.tensor(x), mode=mode, **kwargs).data
            theirs = torch.nn.functional.interpolate(torch.tensor(x), mode=mode, **kwargs)
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=2e-6,
                                       err_msg=f"{size} {kwargs}")


def test_upsample_layer_matches_torch():
    torch = pytest.importorskip("torch")
    for kwargs in ({"scale_factor": 2}, {"size": (3, 4), "mode": "bilinear",
                                         "align_corners": True},
                   {"scale_factor": (2, 1.5), "mode": "bilinear"}):
        layer, twin = nn.Upsample(**kwargs), torch.nn.Upsample(**kwargs)
        assert repr(layer) == repr(twin)
        compare_with_torch(layer, twin, RNG.standard_normal((2, 3, 4, 5)).astype("float32"),
                           "float32")


def test_interpolate_errors():
    x = dtrain.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="either size or scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(NotImplementedError, match="4D input .* 'linear'"):
        F.interpolate(x, scale_factor=2, mode="linear")
    with pytest.raises(NotImplementedError, match="'bicubic'"):
        F.interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="same number of spatial dimensions"):
        F.interpolate(x, size=(2, 3, 4))
    with pytest.raises(RuntimeError, match="must be positive"):
        F.interpolate(x, scale_factor=0.1)
    with pytest.raises(NotImplementedError, match="dtype int64"):
        F.interpolate(dtrain.tensor([[[1, 2]]]), scale_factor=2)


# ------------------------------------------------------------------------- group norm
GN_CASES = [(2, 4, {}, (3, 4, 5, 2)), (4, 4, {}, (3, 4, 5)), (1, 6, {"eps": 1e-3}, (3, 6)),
            (3, 6, {"affine": False}, (2, 6, 4)), (2, 4, {"bias": False}, (2, 4, 3, 3))]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("groups,channels,options,shape", GN_CASES)
def test_group_norm_matches_torch(groups, channels, options, shape, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.GroupNorm(groups, channels, **options, dtype=dtype)
    for p in layer.parameters():
        p._data[...] = RNG.standard_normal(p.shape)
    twin = torch_twin(layer, torch.nn.GroupNorm(groups, channels, **options,
                                                dtype=getattr(torch, dtype)))
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, (RNG.standard_normal(shape) * 3 + 1).astype(dtype), dtype)


@pytest.mark.parametrize("groups,channels,options,shape", GN_CASES[:3])
def test_group_norm_gradients_match_finite_differences(groups, channels, options, shape):
    layer = nn.GroupNorm(groups, channels, **options, dtype="float64")
    for p in layer.parameters():
        p._data[...] = RNG.standard_normal(p.shape)
    check_module_fd(layer, RNG.standard_normal(shape), atol=1e-6)
    check(lambda m, x, w, b: m.nn.functional.group_norm(x, groups, w, b), shape, (channels,),
          (channels,))


def test_group_norm_errors():
    with pytest.raises(ValueError, match=r"num_channels \(4\) must be divisible by num_groups"):
        nn.GroupNorm(3, 4)
    with pytest.raises(RuntimeError, match=r"divisible by num_groups.*\[2, 4, 3\]"):
        F.group_norm(dtrain.randn(2, 4, 3), 3)
    with pytest.raises(RuntimeError, match=r"\(N, 4, \*\).*\(2, 6\)"):
        nn.GroupNorm(2, 4)(dtrain.randn(2, 6))


PAD_LAYERS = [("ZeroPad1d", (2,), (2, 3, 5)), ("ZeroPad2d", ((1, 2, 3, 0),), (2, 3, 4, 5)),
              ("ConstantPad1d", ((1, 2), 3.5), (3, 5)), ("ConstantPad2d", (1, -0.5), (3, 4, 5)),
              ("ReflectionPad1d", ((2, 1),), (2, 3, 5)), ("ReflectionPad2d", (2,), (2, 3, 4, 5)),
              ("ReplicationPad1d", (3,), (3, 5)), ("ReplicationPad2d", ((1, 0, 2, 3),),
                                                    (3, 4, 5)),
              ("CircularPad1d", (2,), (2, 3, 5)), ("CircularPad2d", ((1, 2, 2, 1),), (1, 3, 4, 5))]


@pytest.mark.parametrize("cls,args,shape", PAD_LAYERS)
def test_padding_layers_match_torch(cls, args, shape):
    torch = pytest.importorskip("torch")
    layer, twin = getattr(nn, cls)(*args), getattr(torch.nn, cls)(*args)
    assert repr(layer) == repr(twin)
    compare_with_torch(layer, twin, RNG.standard_normal(shape), "float64")


def test_padding_layer_errors():
    with pytest.raises(ValueError, match="tuple of 4 ints"):
        nn.ZeroPad2d((1, 2))
    with pytest.raises(NotImplementedError, match="Padding size 4 .* 2D input"):
        nn.ReflectionPad2d(1)(dtrain.randn(3, 4))
