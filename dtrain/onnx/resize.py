"""Converters for padding, pixel (un)shuffle and interpolation.

Interpolation by whole-number scale factors (the usual Upsample(scale_factor=2)) is a Resize
node, whose source positions then agree exactly with PyTorch's and which keeps height and width
symbolic. Any other interpolation is exported with the very source indices and weights dtrain
computes (Gather, and for linear modes Mul and Add), so PyTorch's index rules (float32 scales,
copied axes) hold exactly, for the traced sizes.
"""

from __future__ import annotations

import numpy as np

from .graph import ExportError
from .layers import _spatial
from .registry import converts, converts_layer

NN = "dtrain.nn"
UP = "dtrain.nn.upsampling"


# ------------------------------------------------------------------------------ pad
def pad_node(tr, input, padding, mode: str, value) -> str:
    """One Pad node; ONNX lists all dims' begins, then all dims' ends."""
    from ..nn.padding import _pairs

    pairs = _pairs(padding, input.ndim)
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
             "circular": "wrap"}
    if mode not in modes or (mode == "circular" and tr.opset < 19):
        raise ExportError(f"ONNX export: no converter for pad mode {mode!r} at opset "
                          f"{tr.opset}")
    pads = tr.g.ints([b for b, _ in pairs] + [a for _, a in pairs])
    inputs = [tr.name(input), pads]
    if mode == "constant" and value:
        inputs.append(tr.name(value, input.dtype))
    return tr.g.op("Pad", inputs, mode=modes[mode])


@converts("dtrain.nn.padding", "pad")
def _pad_fn(tr, out, input, pad, mode="constant", value=None):
    return pad_node(tr, input, pad, mode, value)


@converts_layer(NN, *(f"{kind}Pad{d}d" for kind in ("Zero", "Constant", "Reflection",
                                                      "Replication", "Circular") for d in (1, 2)))
def _pad_layer(tr, m, out, x):
    return pad_node(tr, x, m.padding, m.mode, m.value if m.mode == "constant" else None)


# -------------------------------------------------------------------- pixel shuffle
def pixel_shuffle(tr, x, r: int) -> str:
    """DepthToSpace in PyTorch's (CRD) channel order."""
    if x.ndim not in (3, 4):
        raise ExportError(f"ONNX export: no converter for pixel_shuffle of a {x.ndim}-D input")
    return _spatial(tr, x, lambda v: tr.g.op("DepthToSpace", [v], blocksize=int(r), mode="CRD"))


def pixel_unshuffle(tr, x, r: int) -> str:
    """Reshape, Transpose, Reshape: SpaceToDepth orders the channels differently."""
    if x.ndim not in (3, 4):
        raise ExportError(f"ONNX export: no converter for pixel_unshuffle of a {x.ndim}-D input")
    c, h, w = (int(n) for n in x.shape[-3:])

    def emit(v):
        split = tr.g.op("Reshape", [v, tr.g.ints([0, c, h // r, r, w // r, r])])
        moved = tr.g.op("Transpose", [split], perm=[0, 1, 3, 5, 2, 4])
        return tr.g.op("Reshape", [moved, tr.g.ints([0, c * r * r, h // r, w // r])])

    return _spatial(tr, x, emit)


@converts_layer(NN, "PixelShuffle")
def _pixel_shuffle_layer(tr, m, out, x):
    return pixel_shuffle(tr, x, m.upscale_factor)


@converts_layer(NN, "PixelUnshuffle")
def _pixel_unshuffle_layer(tr, m, out, x):
    return pixel_unshuffle(tr, x, m.downscale_factor)


@converts(UP, "pixel_shuffle")
def _pixel_shuffle_fn(tr, out, input, upscale_factor):
    return pixel_shuffle(tr, input, upscale_factor)


@converts(UP, "pixel_unshuffle")
def _pixel_unshuffle_fn(tr, out, input, downscale_factor):
    return pixel_unshuffle(tr, input, downscale_factor)


# ---------------------------------------------------------------------- interpolate
def interpolate(tr, x, size, scale_factor, mode, align_corners, recompute_scale_factor,
                antialias=False) -> str:
    """Per resized axis a Gather of the source indices, and for linear modes the weighted sum
    of the two gathers; area mode multiplies by the averaging matrices."""
    from ..nn.upsampling import _along, resize_plan

    kind, plan = resize_plan(x.shape, x.dtype, size, scale_factor, mode, align_corners,
                             recompute_scale_factor, antialias)
    v = tr.name(x)
    factors = _integer_factors(scale_factor, len(plan))
    if factors and mode in ("nearest", "linear", "bilinear") and not align_corners and not (
            recompute_scale_factor):
        return resize_by_factors(tr, x, factors, mode)
    if kind == "area":  # MatMul by the averaging matrices: (H, W) as rows times columns
        v = tr.g.op("MatMul", [v, tr.g.const(plan[-1].T)])
        return v if len(plan) == 1 else tr.g.op("MatMul", [tr.g.const(plan[0]), v])
    for axis, (lo, hi, frac) in zip(range(x.ndim - len(plan), x.ndim), plan):
        if hi is None and np.array_equal(lo, np.arange(x.shape[axis])):
            continue  # an axis whose size does not change is copied
        low = tr.g.op("Gather", [v, tr.g.ints(lo)], axis=axis)
        if hi is None:
            v = low
            continue
        high = tr.g.op("Gather", [v, tr.g.ints(hi)], axis=axis)
        w_high = tr.g.const(_along(frac, x.ndim, axis))
        w_low = tr.g.const(_along(1 - frac, x.ndim, axis))
        v = tr.g.op("Add", [tr.g.op("Mul", [low, w_low]), tr.g.op("Mul", [high, w_high])])
    return v


def _integer_factors(scale_factor, count: int) -> list | None:
    """The scale factors when every one is a whole number >= 1, else None."""
    if scale_factor is None:
        return None
    factors = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else (
        [scale_factor] * count)
    if all(float(f) >= 1 and float(f).is_integer() for f in factors):
        return [float(f) for f in factors]
    return None


def resize_by_factors(tr, x, factors: list, mode: str) -> str:
    """Resize by whole-number factors: there PyTorch's and ONNX's source positions agree
    exactly, and the node keeps every dim symbolic (dynamic height and width export)."""
    scales = np.array([1.0] * (x.ndim - len(factors)) + factors, dtype=np.float32)
    if mode == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                 "nearest_mode": "floor"}
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}
    return tr.g.op("Resize", [tr.name(x), "", tr.g.const(scales)], **attrs)


@converts_layer(NN, "Upsample")
def _upsample_layer(tr, m, out, x):
    return interpolate(tr, x, m.size, m.scale_factor, m.mode, m.align_corners,
                       m.recompute_scale_factor)


@converts(UP, "interpolate")
def _interpolate_fn(tr, out, input, size=None, scale_factor=None, mode="nearest",
                    align_corners=None, recompute_scale_factor=None, antialias=False):
    return interpolate(tr, input, size, scale_factor, mode, align_corners,
                       recompute_scale_factor, antialias)
