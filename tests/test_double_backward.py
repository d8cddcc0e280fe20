"""Double backward (``create_graph=True``) of every op that supports it, one line per case.

Each case goes through ``double_helpers.check_double``: first derivatives taken with a graph and
second derivatives against torch, and against finite differences of the first-order gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
from double_helpers import check_double

RNG = np.random.default_rng(11)


def pos(*shape) -> np.ndarray:
    """Values in [0.5, 2): safe for log, sqrt, division and real powers."""
    return RNG.uniform(0.5, 2.0, shape)


def distinct(*shape) -> np.ndarray:
    """Well-separated values away from 0: no ties for max/min, no kinks for abs and relu."""
    n = int(np.prod(shape))
    return (RNG.permutation(n) - n / 2 + 0.25).reshape(shape) / 3


PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,))]


@pytest.mark.parametrize("a, b", PAIRS)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow"])
def test_binary(op, a, b):
    fns = {"add": lambda x, y: (x + y) ** 2, "sub": lambda x, y: (x - y) ** 3,
           "mul": lambda x, y: x * y * y, "div": lambda x, y: x / y, "pow": lambda x, y: x ** y}
    check_double(lambda m, x, y: fns[op](x, y), pos(*a), pos(*b))


@pytest.mark.parametrize("fn, spec", [
    (lambda m, x: -x * x, (3, 4)),
    (lambda m, x: x.exp(), (3, 4)),
    (lambda m, x: x.log(), pos(3, 4)),
    (lambda m, x: x.sqrt(), pos(3, 4)),
    (lambda m, x: x.tanh(), (3, 4)),
    (lambda m, x: x.sigmoid(), (3, 4)),
    (lambda m, x: x.relu() * x, distinct(3, 4)),
    (lambda m, x: x.abs() * x, distinct(3, 4)),
    (lambda m, x: x.clamp(-0.5, 0.7) * x, distinct(3, 4)),
    (lambda m, x: x ** 3, (3, 4)),
    (lambda m, x: x ** 0 + x, (3,)),
    (lambda m, x: 2.0 ** x, (3,)),
    (lambda m, x: x.double() ** 2, (3,)),
    (lambda m, x: x.clone() ** 2, (3,)),
])
def test_unary(fn, spec):
    check_double(fn, spec)


@pytest.mark.parametrize("a, b", [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 2)), ((3, 4), (4,)),
                                  ((2, 3, 4), (4, 2)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul(a, b):
    check_double(lambda m, x, y: (x @ y) ** 2, a, b)


@pytest.mark.parametrize("fn", [
    lambda m, x: x.sum() ** 2,
    lambda m, x: x.sum(1) ** 2,
    lambda m, x: x.sum((0, 2), keepdim=True) ** 2,
    lambda m, x: x.mean() ** 2,
    lambda m, x: x.mean(-1) ** 2,
    lambda m, x: x.var(1) ** 2,
    lambda m, x: x.std(0, keepdim=True) ** 2,
    lambda m, x: x.amax(1) ** 2,
    lambda m, x: x.max(2).values ** 2,
    lambda m, x: x.min() ** 2,
    lambda m, x: x.softmax(1) ** 2,
    lambda m, x: x.log_softmax(-1) ** 2,
    lambda m, x: x.norm() ** 2,
    lambda m, x: x.norm(2, dim=1) ** 3,
    lambda m, x: x.norm(3, dim=(0, 2)) ** 2,
    lambda m, x: x.cumsum(1) ** 2,
])
def test_reductions(fn):
    check_double(fn, distinct(2, 3, 4))


@pytest.mark.parametrize("fn", [
    lambda m, x: x.reshape(6, 4) ** 2,
    lambda m, x: x.view(-1) ** 2,
    lambda m, x: x.transpose(0, 2) ** 2,
    lambda m, x: x.permute(2, 0, 1) ** 2,
    lambda m, x: x[0].T ** 2,
    lambda m, x: x[0, 1:] ** 2,
    lambda m, x: x[:, [0, 0, 2]] ** 2,
    lambda m, x: x[m.tensor(np.array([1, 1, 0]))] ** 2,
    lambda m, x: m.cat([x, x[:, :1] * 2], 1) ** 2,
    lambda m, x: m.stack([x, x * x], 1) ** 2,
    lambda m, x: x[:, :1].expand(2, 3, 4) ** 2,
    lambda m, x: x.unsqueeze(1).squeeze(1) ** 2,
    lambda m, x: x.flatten(1) ** 2,
    lambda m, x: m.where(x > 0, x * x, -x) ** 2,
    lambda m, x: m.maximum(x, x * 0.5 + 0.1) ** 2,
    lambda m, x: x.split(1, 1)[1] ** 2,
    lambda m, x: x.unbind(2)[3] ** 2,
    lambda m, x: x.repeat(1, 2, 1) ** 2,
    lambda m, x: x.gather(1, m.tensor(np.array([[[0, 2, 1, 0]], [[2, 2, 0, 1]]]))) ** 2,
    lambda m, x: x.index_select(2, m.tensor(np.array([3, 0, 3]))) ** 2,
    lambda m, x: x.masked_fill(m.tensor(np.arange(24).reshape(2, 3, 4) % 3 == 0), 0.5) ** 2,
])
def test_shape_and_indexing(fn):
    check_double(fn, distinct(2, 3, 4))


def test_maximum_minimum():
    x = distinct(3, 4)
    check_double(lambda m, x, y: m.maximum(x, y) * m.minimum(x, y) * x, x, x[::-1] + 0.05)


def test_setitem_of_a_clone():
    def fn(m, x, y):
        z = x.clone()
        z[1] = y * y
        return z ** 2

    check_double(fn, (3, 4), (4,))


# ---------------------------------------------------------------- layers and losses
LABELS = np.array([0, 2, 1, 1])
PROBS = RNG.dirichlet(np.ones(3), 4)  # constant targets: finite differences must not move them


@pytest.mark.parametrize("fn", [
    lambda m, x, w, b: m.nn.functional.linear(x, w, b).tanh(),
    lambda m, x, w, b: m.nn.functional.linear(x[0], w) ** 2,
    lambda m, x, w, b: m.nn.functional.linear(x.reshape(2, 2, 5), w, b) ** 2,
    lambda m, x, w, b: m.nn.functional.leaky_relu(x @ w.T + b, 0.2) ** 2,
    lambda m, x, w, b: m.nn.functional.mse_loss(x @ w.T, b.expand(4, 3)),
    lambda m, x, w, b: m.nn.functional.mse_loss(x @ w.T, b.expand(4, 3), reduction="none"),
    lambda m, x, w, b: m.nn.functional.l1_loss(x @ w.T, b.expand(4, 3)) * w.sum(),
    lambda m, x, w, b: m.nn.functional.cross_entropy(x @ w.T + b, m.tensor(LABELS)),
    lambda m, x, w, b: m.nn.functional.cross_entropy(x @ w.T + b, m.tensor(LABELS),
                                                     reduction="none", label_smoothing=0.2),
    lambda m, x, w, b: m.nn.functional.cross_entropy(x @ w.T + b, m.tensor(PROBS)),
    lambda m, x, w, b: m.nn.functional.nll_loss((x @ w.T).log_softmax(1), m.tensor(LABELS),
                                                reduction="sum"),
    lambda m, x, w, b: m.nn.functional.binary_cross_entropy_with_logits(x @ w.T + b,
                                                                        m.tensor(PROBS)),
    lambda m, x, w, b: m.nn.functional.binary_cross_entropy((x @ w.T + b).sigmoid(),
                                                            m.tensor(PROBS)),
    lambda m, x, w, b: m.nn.functional.gelu(x @ w.T) * b,
    lambda m, x, w, b: m.nn.functional.gelu(x @ w.T, approximate="tanh") * b,
    lambda m, x, w, b: m.nn.functional.softplus(x @ w.T) * b,
    lambda m, x, w, b: m.nn.functional.elu(x @ w.T) * b,
    lambda m, x, w, b: m.nn.functional.silu(x @ w.T) * b,
    lambda m, x, w, b: m.nn.functional.mish(x @ w.T) * b,
    lambda m, x, w, b: m.nn.functional.hardswish(x @ w.T) * b,
    lambda m, x, w, b: m.nn.functional.layer_norm(x @ w.T, (3,), b, b * b) ** 2,
    lambda m, x, w, b: m.nn.functional.normalize(x @ w.T, dim=1) * b,
    lambda m, x, w, b: m.nn.functional.embedding(m.tensor(np.array([2, 0, 2])), w) ** 2,
])
def test_layers_and_losses(fn):
    check_double(fn, (4, 5), (3, 5), (3,))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(training):
    def fn(m, x, w, b):
        mean, var = m.tensor(np.array([0.1, -0.2, 0.3])), m.tensor(np.array([1.5, 0.5, 2.0]))
        return m.nn.functional.batch_norm(x, mean, var, w, b, training=training) ** 3

    check_double(fn, (4, 3, 2), (3,), (3,))


def test_group_norm():
    check_double(lambda m, x, w, b: m.nn.functional.group_norm(x, 2, w, b) ** 3, (2, 4, 3), (4,),
                 (4,))


@pytest.mark.parametrize("options", [{}, {"stride": 2, "padding": 1}, {"dilation": 2, "padding": 2},
                                     {"padding": (0, 1)}, {"padding": "same"}])
def test_conv2d(options):
    check_double(lambda m, x, w, b: m.nn.functional.conv2d(x, w, b, **options) ** 2,
                 (2, 3, 5, 5), (4, 3, 3, 3), (4,), atol=1e-6, rtol=1e-6)


def test_conv2d_groups_and_unbatched():
    check_double(lambda m, x, w: m.nn.functional.conv2d(x, w, groups=2).tanh(), (4, 4, 4),
                 (6, 2, 2, 2))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv2d_padding_modes(mode):
    def fn(m, x, w):
        conv = m.nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, bias=False).double()
        del conv.weight
        conv.weight = w  # a plain tensor attribute: the graph reaches w
        return conv(x) ** 2

    check_double(fn, (1, 2, 4, 4), (3, 2, 3, 3))


def test_constant_pad():
    def fn(m, x):
        return m.nn.functional.pad(x, (1, 2, 0, 1), value=0.5) ** 3

    check_double(fn, (2, 3, 4))


@pytest.mark.parametrize("fn", [
    lambda m, x: m.nn.functional.avg_pool2d(x * x, 2) ** 2,
    lambda m, x: m.nn.functional.avg_pool2d(x * x, 3, 2, 1, count_include_pad=False) ** 2,
    lambda m, x: m.nn.functional.adaptive_avg_pool2d(x * x, (2, 3)) ** 2,
    lambda m, x: m.nn.functional.max_pool2d(x * x, 2) ** 2,
    lambda m, x: m.nn.functional.max_pool2d(x, 3, 1, 1) ** 3,
    lambda m, x: m.nn.functional.max_pool2d(x[0], 2, dilation=2) ** 3,
    lambda m, x: m.nn.functional.interpolate(x * x, scale_factor=2) ** 2,
    lambda m, x: m.nn.functional.interpolate(x * x, size=(3, 5), mode="bilinear",
                                             align_corners=False) ** 2,
    lambda m, x: m.nn.functional.pixel_shuffle(x.reshape(2, 12, 2, 2) ** 2, 2) ** 2,
    lambda m, x: m.nn.functional.pixel_unshuffle(x ** 2, 2) ** 2,
    lambda m, x: m.nn.functional.pad(x * x, (1, 2, 2, 1), mode="reflect") ** 2,
    lambda m, x: m.nn.functional.pad(x * x, (1, 2, 2, 1), mode="replicate") ** 2,
    lambda m, x: m.nn.functional.pad(x * x, (1, 2, 2, 1), mode="circular") ** 2,
    lambda m, x: x.sort(2).values ** 3,
    lambda m, x: x.topk(2, dim=3).values ** 3,
])
def test_pooling_resampling_and_sorting(fn):
    check_double(fn, distinct(2, 3, 4, 4))


@pytest.mark.parametrize("options", [{}, {"stride": 2, "padding": 1, "output_padding": 1},
                                     {"dilation": 2, "groups": 2}])
def test_conv_transpose2d(options):
    check_double(lambda m, x, w, b: m.nn.functional.conv_transpose2d(x, w, b, **options) ** 2,
                 (2, 4, 3, 3), (4, 3, 2, 2), (3 * options.get("groups", 1),), atol=1e-6,
                 rtol=1e-6)


def test_conv_transpose2d_unbatched():
    check_double(lambda m, x, w: m.nn.functional.conv_transpose2d(x, w, stride=2).tanh(),
                 (2, 3, 3), (2, 3, 3, 3))
