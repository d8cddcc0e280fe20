"""Converters for dtrain.nn: each layer (and its functional form) as one or a few ONNX nodes.

Layers are converted from their attributes in evaluation semantics: dropout is the identity and
batch norm uses its running statistics. Weights become initializers named by their dotted path.
"""

from __future__ import annotations

import math

import numpy as np

from .graph import ExportError
from .ops import flatten
from .registry import converts, converts_layer

NN = "dtrain.nn"
K = "dtrain.nn._kernels"
F = "dtrain.nn.functional"


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _layer_from(convert, *names: str):
    """A layer converter that calls ``convert(tr, x, layer.<name>, ...)`` with ``names`` in order."""

    def layer(tr, m, out, x):
        return convert(tr, x, *(getattr(m, name) for name in names))

    return layer


def _spatial(tr, x, emit) -> str:
    """Run ``emit`` on an (N, C, H, W) value; a 3-D (C, H, W) input gets a batch of one."""
    if x.ndim == 4:
        return emit(tr.name(x))
    zero = tr.g.ints([0])
    batched = tr.g.op("Unsqueeze", [tr.name(x), zero])
    return tr.g.op("Squeeze", [emit(batched), zero])


# ------------------------------------------------------------------------------ linear
def linear(tr, x, weight, bias) -> str:
    """``x @ weight.T + bias``: one Gemm for 2-D input, MatMul (+ Add) otherwise."""
    w = tr.name(weight)
    if x.ndim == 2:
        inputs = [tr.name(x), w] + ([tr.name(bias)] if bias is not None else [])
        return tr.g.op("Gemm", inputs, transB=1)
    y = tr.g.op("MatMul", [tr.name(x), tr.g.op("Transpose", [w], perm=[1, 0])])
    return y if bias is None else tr.g.op("Add", [y, tr.name(bias)])


@converts_layer(NN, "Linear")
def _linear_layer(tr, m, out, x):
    return linear(tr, x, m.weight, m.bias)


@converts(K, "linear")
def _linear_fn(tr, out, input, weight, bias=None):
    return linear(tr, input, weight, bias)


# ------------------------------------------------------------------------- activations
def _simple(op_type: str):
    def layer(tr, m, out, x):
        return tr.g.op(op_type, [tr.name(x)])

    return layer


for _cls, _op_type in (("ReLU", "Relu"), ("Tanh", "Tanh"), ("Sigmoid", "Sigmoid")):
    converts_layer(NN, _cls)(_simple(_op_type))


@converts(F, "relu")
def _relu_fn(tr, out, input, inplace=False):
    return tr.g.op("Relu", [tr.name(input)])


@converts_layer(NN, "LeakyReLU")
def _leaky_relu_layer(tr, m, out, x):
    return tr.g.op("LeakyRelu", [tr.name(x)], alpha=float(m.negative_slope))


@converts(K, "leaky_relu")
def _leaky_relu_fn(tr, out, input, negative_slope=0.01):
    return tr.g.op("LeakyRelu", [tr.name(input)], alpha=float(negative_slope))


@converts_layer(NN, "ELU")
def _elu_layer(tr, m, out, x):
    return tr.g.op("Elu", [tr.name(x)], alpha=float(m.alpha))


@converts(K, "elu")
def _elu_fn(tr, out, input, alpha=1.0):
    return tr.g.op("Elu", [tr.name(input)], alpha=float(alpha))


def gelu(tr, x, approximate: str) -> str:
    """GELU: the Gelu op from opset 20, else its erf (or tanh) formula."""
    if approximate not in ("none", "tanh"):
        raise ExportError(f"ONNX export: GELU approximate={approximate!r}")
    v = tr.name(x)
    if tr.opset >= 20:
        return tr.g.op("Gelu", [v], approximate=approximate)

    def c(value):
        return tr.name(value, x.dtype)

    if approximate == "none":
        inner = tr.g.op("Erf", [tr.g.op("Div", [v, c(math.sqrt(2.0))])])
    else:
        cube = tr.g.op("Mul", [tr.g.op("Mul", [v, v]), v])
        poly = tr.g.op("Add", [v, tr.g.op("Mul", [cube, c(0.044715)])])
        inner = tr.g.op("Tanh", [tr.g.op("Mul", [poly, c(math.sqrt(2.0 / math.pi))])])
    half = tr.g.op("Mul", [v, c(0.5)])
    return tr.g.op("Mul", [half, tr.g.op("Add", [inner, c(1.0)])])


@converts_layer(NN, "GELU")
def _gelu_layer(tr, m, out, x):
    return gelu(tr, x, m.approximate)


@converts(K, "gelu")
def _gelu_fn(tr, out, input, approximate="none"):
    return gelu(tr, input, approximate)


def softplus(tr, x, beta: float, threshold: float) -> str:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as dtrain)."""
    v = tr.name(x)
    scaled = v if beta == 1 else tr.g.op("Mul", [v, tr.name(beta, x.dtype)])
    y = tr.g.op("Softplus", [scaled])
    if beta != 1:
        y = tr.g.op("Div", [y, tr.name(beta, x.dtype)])
    linear_region = tr.g.op("Greater", [scaled, tr.name(threshold, x.dtype)])
    return tr.g.op("Where", [linear_region, v, y])


@converts_layer(NN, "Softplus")
def _softplus_layer(tr, m, out, x):
    return softplus(tr, x, float(m.beta), float(m.threshold))


@converts(K, "softplus")
def _softplus_fn(tr, out, input, beta=1.0, threshold=20.0):
    return softplus(tr, input, float(beta), float(threshold))


def silu(tr, x) -> str:
    """x * sigmoid(x)."""
    v = tr.name(x)
    return tr.g.op("Mul", [v, tr.g.op("Sigmoid", [v])])


def mish(tr, x) -> str:
    """x * tanh(softplus(x)): the Mish op from opset 18."""
    v = tr.name(x)
    if tr.opset >= 18:
        return tr.g.op("Mish", [v])
    return tr.g.op("Mul", [v, tr.g.op("Tanh", [tr.g.op("Softplus", [v])])])


def hardswish(tr, x) -> str:
    """x * relu6(x + 3) / 6: HardSwish from opset 14, x * HardSigmoid(x) before."""
    v = tr.name(x)
    if tr.opset >= 14:
        return tr.g.op("HardSwish", [v])
    return tr.g.op("Mul", [v, tr.g.op("HardSigmoid", [v], alpha=1.0 / 6, beta=0.5)])


for _name, _emit in (("silu", silu), ("mish", mish), ("hardswish", hardswish)):
    converts_layer(NN, {"silu": "SiLU", "mish": "Mish", "hardswish": "Hardswish"}[_name])(
        lambda tr, m, out, x, _emit=_emit: _emit(tr, x))
    converts(K, _name)(lambda tr, out, input, _emit=_emit: _emit(tr, input))
    converts(F, _name)(lambda tr, out, input, inplace=False, _emit=_emit: _emit(tr, input))


def _implicit(dim, x) -> int:
    from ..nn.activation import _implicit_dim

    return _implicit_dim(dim, x) % max(x.ndim, 1)


def _softmax_layer(op_type: str):
    def layer(tr, m, out, x):
        return tr.g.op(op_type, [tr.name(x)], axis=_implicit(m.dim, x))

    return layer


converts_layer(NN, "Softmax")(_softmax_layer("Softmax"))
converts_layer(NN, "LogSoftmax")(_softmax_layer("LogSoftmax"))


def _softmax_fn(op_type: str):
    def convert(tr, out, input, dim=None, dtype=None):
        v = tr.name(input, dtype)
        return tr.g.op(op_type, [v], axis=_implicit(dim, input))

    return convert


converts(F, "softmax")(_softmax_fn("Softmax"))
converts(F, "log_softmax")(_softmax_fn("LogSoftmax"))


# ------------------------------------------------------------------- dropout, flatten
@converts_layer(NN, "Dropout")
def _dropout_layer(tr, m, out, x):
    return tr.name(x)


@converts("dtrain.nn.dropout", "dropout")
def _dropout_fn(tr, out, input, p=0.5, training=True, inplace=False, generator=None):
    raise ExportError("ONNX export: no converter for op 'dropout' in training mode "
                      "(pass training=self.training and export in eval mode)")


@converts_layer(NN, "Flatten")
def _flatten_layer(tr, m, out, x):
    return flatten(tr, x, m.start_dim, m.end_dim)


# ------------------------------------------------------------------------ convolution
def conv2d(tr, x, weight, bias, stride, pads, dilation, groups: int,
           padding_mode: str = "zeros") -> str:
    """Conv with ((top, bottom), (left, right)) padding; other padding modes as a Pad first."""
    (pt, pb), (pl, pr) = pads
    w = tr.name(weight)
    b = [tr.name(bias)] if bias is not None else []
    modes = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    if padding_mode != "zeros" and (pt or pb or pl or pr):
        if padding_mode not in modes or (padding_mode == "circular" and tr.opset < 19):
            raise ExportError(f"ONNX export: no converter for Conv2d padding_mode="
                              f"{padding_mode!r} at opset {tr.opset}")
        pad_mode = modes[padding_mode]
    else:
        pad_mode = None

    def emit(v):
        conv_pads = [pt, pl, pb, pr]
        if pad_mode is not None:
            v = tr.g.op("Pad", [v, tr.g.ints([0, 0, pt, pl, 0, 0, pb, pr])], mode=pad_mode)
            conv_pads = [0, 0, 0, 0]
        return tr.g.op("Conv", [v, w, *b], kernel_shape=list(weight.shape[2:]),
                       strides=list(_pair(stride)), pads=conv_pads,
                       dilations=list(_pair(dilation)), group=int(groups))

    return _spatial(tr, x, emit)


@converts_layer(NN, "Conv2d")
def _conv_layer(tr, m, out, x):
    return conv2d(tr, x, m.weight, m.bias, m.stride, m._pads, m.dilation, m.groups,
                  m.padding_mode)


@converts("dtrain.nn.conv", "conv2d")
def _conv_fn(tr, out, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    from ..nn.conv import _resolve_padding

    pads = _resolve_padding(padding, tuple(weight.shape[2:]), _pair(stride), _pair(dilation))
    return conv2d(tr, input, weight, bias, stride, pads, dilation, groups)


def conv1d(tr, x, weight, bias, stride: int, pads: tuple, dilation: int, groups: int,
           padding_mode: str = "zeros") -> str:
    """1-D Conv; ``pads`` as the 2-D kernel takes them, ((0, 0), (left, right))."""
    left, right = pads[1]
    w = tr.name(weight)
    b = [tr.name(bias)] if bias is not None else []
    modes = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    v = tr.name(x)
    if x.ndim == 2:
        v = tr.g.op("Unsqueeze", [v, tr.g.ints([0])])
    conv_pads = [left, right]
    if padding_mode != "zeros" and (left or right):
        if padding_mode not in modes or (padding_mode == "circular" and tr.opset < 19):
            raise ExportError(f"ONNX export: no converter for Conv1d padding_mode="
                              f"{padding_mode!r} at opset {tr.opset}")
        v = tr.g.op("Pad", [v, tr.g.ints([0, 0, left, 0, 0, right])], mode=modes[padding_mode])
        conv_pads = [0, 0]
    y = tr.g.op("Conv", [v, w, *b], kernel_shape=[int(weight.shape[2])], strides=[int(stride)],
                pads=conv_pads, dilations=[int(dilation)], group=int(groups))
    return tr.g.op("Squeeze", [y, tr.g.ints([0])]) if x.ndim == 2 else y


@converts_layer(NN, "Conv1d")
def _conv1d_layer(tr, m, out, x):
    return conv1d(tr, x, m.weight, m.bias, m.stride[0], m._pads, m.dilation[0], m.groups,
                  m.padding_mode)


@converts("dtrain.nn.conv1d", "conv1d")
def _conv1d_fn(tr, out, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    from ..nn.conv1d import _pads_1d, _single

    s, d = _single(stride, "stride"), _single(dilation, "dilation")
    return conv1d(tr, input, weight, bias, s, _pads_1d(padding, weight.shape[2], s, d), d,
                  groups)


def conv_transpose2d(tr, x, weight, bias, stride, padding, output_padding, groups: int,
                     dilation) -> str:
    """ConvTranspose: ONNX keeps PyTorch's (in, out/groups, kH, kW) weight layout."""
    w = tr.name(weight)
    b = [tr.name(bias)] if bias is not None else []
    (ph, pw) = _pair(padding)

    def emit(v):
        return tr.g.op("ConvTranspose", [v, w, *b], kernel_shape=list(weight.shape[2:]),
                       strides=list(_pair(stride)), pads=[ph, pw, ph, pw],
                       output_padding=list(_pair(output_padding)),
                       dilations=list(_pair(dilation)), group=int(groups))

    return _spatial(tr, x, emit)


def conv_transpose1d(tr, x, weight, bias, stride: int, padding: int, output_padding: int,
                     groups: int, dilation: int) -> str:
    """1-D ConvTranspose; a 2-D (C, L) input gets a batch of one."""
    b = [tr.name(bias)] if bias is not None else []
    v = tr.name(x)
    if x.ndim == 2:
        v = tr.g.op("Unsqueeze", [v, tr.g.ints([0])])
    y = tr.g.op("ConvTranspose", [v, tr.name(weight), *b], kernel_shape=[int(weight.shape[2])],
                strides=[int(stride)], pads=[int(padding)] * 2,
                output_padding=[int(output_padding)], dilations=[int(dilation)],
                group=int(groups))
    return tr.g.op("Squeeze", [y, tr.g.ints([0])]) if x.ndim == 2 else y


@converts_layer(NN, "ConvTranspose1d", "ConvTranspose2d")
def _conv_transpose_layer(tr, m, out, x, output_size=None):
    op = m._output_padding_for(x, output_size)
    if m._dims == 1:
        return conv_transpose1d(tr, x, m.weight, m.bias, m.stride[0], m.padding[0], op[0],
                                m.groups, m.dilation[0])
    return conv_transpose2d(tr, x, m.weight, m.bias, m.stride, m.padding, op, m.groups,
                            m.dilation)


@converts("dtrain.nn.conv_transpose", "conv_transpose1d")
def _conv_transpose1d_fn(tr, out, input, weight, bias=None, stride=1, padding=0,
                         output_padding=0, groups=1, dilation=1):
    from ..nn.conv1d import _single

    return conv_transpose1d(tr, input, weight, bias, *(_single(v, n) for v, n in (
        (stride, "stride"), (padding, "padding"), (output_padding, "output_padding"))), groups,
        _single(dilation, "dilation"))


@converts("dtrain.nn.conv_transpose", "conv_transpose2d")
def _conv_transpose_fn(tr, out, input, weight, bias=None, stride=1, padding=0, output_padding=0,
                       groups=1, dilation=1):
    return conv_transpose2d(tr, input, weight, bias, stride, padding, output_padding, groups,
                            dilation)


# ---------------------------------------------------------------------------- pooling
def pool2d(tr, op_type: str, x, kernel_size, stride, padding, ceil_mode: bool, **attrs) -> str:
    """MaxPool or AveragePool with PyTorch's stride default (the kernel size)."""
    k = _pair(kernel_size)
    s = k if stride is None or stride in ((), []) else _pair(stride)
    p = _pair(padding)

    def emit(v):
        return tr.g.op(op_type, [v], kernel_shape=list(k), strides=list(s),
                       pads=[p[0], p[1], p[0], p[1]], ceil_mode=int(bool(ceil_mode)), **attrs)

    return _spatial(tr, x, emit)


def max_pool2d(tr, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    if return_indices:
        raise ExportError("ONNX export: no converter for MaxPool2d with return_indices=True")
    return pool2d(tr, "MaxPool", x, kernel_size, stride, padding, ceil_mode,
                  dilations=list(_pair(dilation)))


@converts_layer(NN, "MaxPool2d")
def _max_pool_layer(tr, m, out, x):
    return max_pool2d(tr, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                      m.return_indices)


@converts("dtrain.nn.pooling", "max_pool2d")
def _max_pool_fn(tr, out, input, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode=False, return_indices=False):
    return max_pool2d(tr, input, kernel_size, stride, padding, dilation, ceil_mode,
                      return_indices)


def avg_pool2d(tr, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
               divisor_override) -> str:
    y = pool2d(tr, "AveragePool", x, kernel_size, stride, padding, ceil_mode,
               count_include_pad=int(bool(count_include_pad or divisor_override)))
    if divisor_override is None:
        return y
    if ceil_mode:
        raise ExportError("ONNX export: no converter for AvgPool2d with both divisor_override "
                          "and ceil_mode")
    k = _pair(kernel_size)
    return tr.g.op("Mul", [y, tr.name(k[0] * k[1] / divisor_override, x.dtype)])


@converts_layer(NN, "AvgPool2d")
def _avg_pool_layer(tr, m, out, x):
    return avg_pool2d(tr, x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                      m.count_include_pad, m.divisor_override)


@converts("dtrain.nn.pooling", "avg_pool2d")
def _avg_pool_fn(tr, out, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
    return avg_pool2d(tr, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                      divisor_override)


def adaptive_avg_pool2d(tr, x, output_size) -> str:
    """GlobalAveragePool, AveragePool when the sizes divide, else two MatMuls by PyTorch's
    window-averaging matrices (windows that overlap or differ in size)."""
    from ..nn.pooling import _adaptive_matrix

    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    h, w = x.shape[-2:]
    ho, wo = (h if sizes[0] is None else int(sizes[0])), (w if sizes[1] is None else int(sizes[1]))
    if (ho, wo) == (1, 1):
        return _spatial(tr, x, lambda v: tr.g.op("GlobalAveragePool", [v]))
    if h % ho == 0 and w % wo == 0:
        k = (h // ho, w // wo)
        return pool2d(tr, "AveragePool", x, k, k, 0, False)
    rows = tr.g.const(_adaptive_matrix(h, ho, x.dtype))
    cols = tr.g.const(_adaptive_matrix(w, wo, x.dtype).T)
    return tr.g.op("MatMul", [rows, tr.g.op("MatMul", [tr.name(x), cols])])


@converts_layer(NN, "AdaptiveAvgPool2d")
def _adaptive_layer(tr, m, out, x):
    return adaptive_avg_pool2d(tr, x, m.output_size)


@converts("dtrain.nn.pooling", "adaptive_avg_pool2d")
def _adaptive_fn(tr, out, input, output_size):
    return adaptive_avg_pool2d(tr, input, output_size)


# ---------------------------------------------------------------------- normalization
def batch_norm(tr, x, running_mean, running_var, weight, bias, eps: float) -> str:
    """BatchNormalization with the running statistics (inference semantics)."""
    channels = x.shape[1]
    ones, zeros = np.ones(channels, x.dtype), np.zeros(channels, x.dtype)
    scale = tr.name(weight if weight is not None else ones)
    shift = tr.name(bias if bias is not None else zeros)
    return tr.g.op("BatchNormalization", [tr.name(x), scale, shift, tr.name(running_mean),
                                          tr.name(running_var)], epsilon=float(eps))


@converts_layer(NN, "BatchNorm1d", "BatchNorm2d")
def _batch_norm_layer(tr, m, out, x):
    if m.running_mean is None or m.running_var is None:
        raise ExportError(f"ONNX export: no converter for {type(m).__name__} without running "
                          "statistics (track_running_stats=False)")
    return batch_norm(tr, x, m.running_mean, m.running_var, m.weight, m.bias, m.eps)


@converts("dtrain.nn.normalization", "batch_norm")
def _batch_norm_fn(tr, out, input, running_mean, running_var, weight=None, bias=None,
                   training=False, momentum=0.1, eps=1e-5):
    if training:
        raise ExportError("ONNX export: no converter for op 'batch_norm' with training=True")
    return batch_norm(tr, input, running_mean, running_var, weight, bias, eps)


def layer_norm(tr, x, normalized_shape, weight, bias, eps: float) -> str:
    """LayerNormalization from opset 17; mean/variance nodes before it."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    axis = x.ndim - len(shape)
    scale = tr.name(weight if weight is not None else np.ones(shape, x.dtype))
    v = tr.name(x)
    if tr.opset >= 17:
        inputs = [v, scale] + ([tr.name(bias)] if bias is not None else [])
        return tr.g.op("LayerNormalization", inputs, axis=axis, epsilon=float(eps))
    from .ops import reduce

    axes = tuple(range(axis, x.ndim))
    centered = tr.g.op("Sub", [v, reduce(tr, "ReduceMean", v, axes, True)])
    var = reduce(tr, "ReduceMean", tr.g.op("Mul", [centered, centered]), axes, True)
    std = tr.g.op("Sqrt", [tr.g.op("Add", [var, tr.name(eps, x.dtype)])])
    y = tr.g.op("Mul", [tr.g.op("Div", [centered, std]), scale])
    return y if bias is None else tr.g.op("Add", [y, tr.name(bias)])


converts_layer(NN, "LayerNorm")(
    _layer_from(layer_norm, "normalized_shape", "weight", "bias", "eps"))


@converts("dtrain.nn.normalization", "layer_norm")
def _layer_norm_fn(tr, out, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    return layer_norm(tr, input, normalized_shape, weight, bias, eps)


def group_norm(tr, x, num_groups: int, weight, bias, eps: float) -> str:
    """InstanceNormalization over (N, groups, rest), then the per-channel affine map."""
    v = tr.name(x)
    grouped = tr.g.op("Reshape", [v, tr.g.ints([0, int(num_groups), -1])])
    ones, zeros = np.ones(num_groups, x.dtype), np.zeros(num_groups, x.dtype)
    normed = tr.g.op("InstanceNormalization", [grouped, tr.g.const(ones), tr.g.const(zeros)],
                     epsilon=float(eps))
    y = tr.g.op("Reshape", [normed, tr.g.op("Shape", [v])])
    def per_channel(t):
        if x.ndim == 2:
            return tr.name(t)
        return tr.g.op("Unsqueeze", [tr.name(t), tr.g.ints(range(1, x.ndim - 1))])

    if weight is not None:
        y = tr.g.op("Mul", [y, per_channel(weight)])
    if bias is not None:
        y = tr.g.op("Add", [y, per_channel(bias)])
    return y


converts_layer(NN, "GroupNorm")(_layer_from(group_norm, "num_groups", "weight", "bias", "eps"))


@converts("dtrain.nn.normalization", "group_norm")
def _group_norm_fn(tr, out, input, num_groups, weight=None, bias=None, eps=1e-5):
    return group_norm(tr, input, num_groups, weight, bias, eps)


@converts("dtrain.nn.normalization", "normalize")
def _normalize_fn(tr, out, input, p=2.0, dim=1, eps=1e-12):
    """x / max(||x||_p, eps) along ``dim``."""
    from .ops import reduce

    v = tr.name(input)
    axes = (int(dim) % input.ndim,)
    p = float(p)
    if p == 2:
        norm = reduce(tr, "ReduceL2", v, axes, True)
    elif p == 1:
        norm = reduce(tr, "ReduceL1", v, axes, True)
    elif p == math.inf:
        norm = reduce(tr, "ReduceMax", tr.g.op("Abs", [v]), axes, True)
    else:
        powered = tr.g.op("Pow", [tr.g.op("Abs", [v]), tr.name(p, input.dtype)])
        norm = tr.g.op("Pow", [reduce(tr, "ReduceSum", powered, axes, True),
                               tr.name(1.0 / p, input.dtype)])
    return tr.g.op("Div", [v, tr.g.op("Max", [norm, tr.name(eps, input.dtype)])])


# -------------------------------------------------------------------------- embedding
def embedding(tr, indices, weight, max_norm) -> str:
    """Rows of the table picked by integer indices: one Gather."""
    if max_norm is not None:
        raise ExportError("ONNX export: no converter for Embedding with max_norm (it changes "
                          "the weights during the forward)")
    return tr.g.op("Gather", [tr.name(weight), tr.name(indices, np.int64)], axis=0)


@converts_layer(NN, "Embedding")
def _embedding_layer(tr, m, out, x):
    return embedding(tr, x, m.weight, m.max_norm)


@converts("dtrain.nn.sparse", "embedding")
def _embedding_fn(tr, out, input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
                  scale_grad_by_freq=False, sparse=False):
    return embedding(tr, input, weight, max_norm)
