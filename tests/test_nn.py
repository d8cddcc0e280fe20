"""dtrain.nn against PyTorch (where installed) and against finite differences (always)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import numeric_grad

import dtrain
import dtrain.nn.functional as F
from dtrain import nn


def check_fd(fn, *arrays, atol=1e-6):
    """Gradients of sum(fn(*tensors) * upstream) equal finite differences for every input."""
    rng = np.random.default_rng(0)
    tensors = [dtrain.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    upstream = rng.standard_normal(out.shape)
    (out * dtrain.tensor(upstream)).sum().backward()
    for t, a in zip(tensors, arrays):
        def scalar(x, t=t):
            args = [dtrain.tensor(x) if s is t else dtrain.tensor(s._data) for s in tensors]
            return float((fn(*args)._data * upstream).sum())

        np.testing.assert_allclose(t.grad._data, numeric_grad(scalar, a.copy()), atol=atol)


RNG = np.random.default_rng(42)


# ---------------------------------------------------------------- finite differences
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3,), (2, 5, 3)])
def test_linear_gradients_match_finite_differences(shape, bias):
    x = RNG.standard_normal(shape)
    w = RNG.standard_normal((2, 3))
    b = RNG.standard_normal(2)
    if bias:
        check_fd(lambda x, w, b: F.linear(x, w, b), x, w, b)
    else:
        check_fd(lambda x, w: F.linear(x, w), x, w)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_gradient_matches_finite_differences(reduction, smoothing, weighted):
    x = RNG.standard_normal((5, 4))
    target = dtrain.tensor([0, 3, 1, -100, 2])
    weight = dtrain.tensor(RNG.uniform(0.5, 2, 4)) if weighted else None
    check_fd(lambda x: F.cross_entropy(x, target, weight=weight, reduction=reduction,
                                       label_smoothing=smoothing), x)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_plain_cross_entropy_gradient_matches_finite_differences(reduction):
    x = RNG.standard_normal((5, 4))
    target = dtrain.tensor([0, 3, 1, 1, 2])  # nothing ignored or weighted: the fast path
    check_fd(lambda x: F.cross_entropy(x, target, reduction=reduction), x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("n,c", [(1, 2), (8, 10), (32, 10), (256, 10), (7, 300)])
def test_plain_cross_entropy_has_the_general_paths_bits(n, c, reduction, dtype):
    """Without ignored or weighted targets cross_entropy skips the one-hot matrix; an
    ignore_index that no target holds takes the general path, which must give the same bits
    (loss and gradient), for extreme logits too."""
    rng = np.random.default_rng(n * c)
    x = (rng.standard_normal((n, c)) * np.exp2(rng.integers(-8, 8, (n, c)))).astype(dtype)
    target = rng.integers(0, c - 1, n)  # class c-1 never a target
    results = []
    for ignore_index in (-100, c - 1):
        xt = dtrain.tensor(x, requires_grad=True)
        loss = F.cross_entropy(xt, dtrain.tensor(target), ignore_index=ignore_index,
                               reduction=reduction)
        loss.backward(dtrain.tensor(np.asarray(n, dtype=dtype)))
        results.append((loss._data, xt.grad._data))
    (loss, grad), (general_loss, general_grad) = results
    assert loss.dtype == general_loss.dtype and loss.tobytes() == general_loss.tobytes()
    assert grad.dtype == general_grad.dtype and grad.tobytes() == general_grad.tobytes()


def test_cross_entropy_soft_targets_and_kdim_match_finite_differences():
    x = RNG.standard_normal((2, 3, 4))
    probs = RNG.dirichlet(np.ones(3), size=(2, 4)).transpose(0, 2, 1)
    check_fd(lambda x: F.cross_entropy(x, dtrain.tensor(probs), label_smoothing=0.1), x)
    target = dtrain.tensor(RNG.integers(0, 3, (2, 4)))
    check_fd(lambda x: F.cross_entropy(x, target), x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_and_binary_losses_match_finite_differences(reduction):
    x = RNG.standard_normal((3, 4))
    y = RNG.standard_normal((3, 4))
    check_fd(lambda a, b: F.mse_loss(a, b, reduction=reduction), x, y)
    check_fd(lambda a, b: F.l1_loss(a, b, reduction=reduction), x, y)
    probs = RNG.uniform(0.05, 0.95, (3, 4))
    labels = dtrain.tensor(RNG.integers(0, 2, (3, 4)).astype(np.float64))
    check_fd(lambda p: F.binary_cross_entropy(p, labels, reduction=reduction), probs)
    pos_weight = dtrain.tensor(RNG.uniform(0.5, 2, 4))
    check_fd(lambda z: F.binary_cross_entropy_with_logits(z, labels, reduction=reduction,
                                                          pos_weight=pos_weight), x)
    log_probs = np.log(RNG.dirichlet(np.ones(4), size=3))
    target = dtrain.tensor([1, 0, 3])
    check_fd(lambda lp: F.nll_loss(lp, target, reduction=reduction), log_probs)


@pytest.mark.parametrize("fn", [
    lambda x: F.leaky_relu(x, 0.2), lambda x: F.gelu(x), lambda x: F.gelu(x, "tanh"),
    lambda x: F.elu(x, 1.3), lambda x: F.softplus(x, 2.0, 3.0), lambda x: F.softmax(x, 1),
    lambda x: F.log_softmax(x, 0),
])
def test_activation_gradients_match_finite_differences(fn):
    x = RNG.standard_normal((3, 4))
    x[np.abs(x) < 1e-3] = 0.5  # stay away from kinks
    check_fd(fn, x)


# --------------------------------------------------------------------------- PyTorch
def to_torch(module_dt, module_torch):
    """Copy dtrain parameters into a torch module with the same structure."""
    import torch

    with torch.no_grad():
        for (name, p), (tname, tp) in zip(module_dt.state_dict().items(),
                                         module_torch.state_dict().items()):
            assert name == tname
            tp.copy_(torch.from_numpy(np.array(p)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    dt_layer = nn.Linear(6, 3).to(dtype)
    t_layer = torch.nn.Linear(6, 3).to(getattr(torch, dtype))
    to_torch(dt_layer, t_layer)
    x = RNG.standard_normal((4, 2, 6)).astype(dtype)
    xd = dtrain.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    out_d, out_t = dt_layer(xd), t_layer(xt)
    g = RNG.standard_normal(out_t.shape).astype(dtype)
    out_d.backward(dtrain.tensor(g))
    out_t.backward(torch.from_numpy(g))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out_d._data, out_t.detach().numpy(), **tol)
    np.testing.assert_allclose(xd.grad._data, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(dt_layer.weight.grad._data, t_layer.weight.grad.numpy(), **tol)
    np.testing.assert_allclose(dt_layer.bias.grad._data, t_layer.bias.grad.numpy(), **tol)
    assert out_d.dtype == np.dtype(dtype)


LOSS_CASES = [
    ("CrossEntropyLoss", {}, "index"),
    ("CrossEntropyLoss", {"reduction": "sum"}, "index"),
    ("CrossEntropyLoss", {"reduction": "none"}, "index"),
    ("CrossEntropyLoss", {"label_smoothing": 0.15}, "index"),
    ("CrossEntropyLoss", {"ignore_index": 2}, "index"),
    ("CrossEntropyLoss", {"weight": "w"}, "index"),
    ("CrossEntropyLoss", {"weight": "w", "label_smoothing": 0.3, "ignore_index": 1}, "index"),
    ("CrossEntropyLoss", {"weight": "w", "label_smoothing": 0.3, "reduction": "none"}, "index"),
    ("CrossEntropyLoss", {}, "kdim"),
    ("CrossEntropyLoss", {"label_smoothing": 0.1}, "probs"),
    ("CrossEntropyLoss", {"weight": "w", "reduction": "sum"}, "probs"),
    ("NLLLoss", {}, "logprob"),
    ("NLLLoss", {"weight": "w", "ignore_index": 0}, "logprob"),
    ("NLLLoss", {"reduction": "none"}, "logprob"),
    ("MSELoss", {}, "real"),
    ("MSELoss", {"reduction": "sum"}, "real"),
    ("L1Loss", {}, "real"),
    ("L1Loss", {"reduction": "none"}, "real"),
    ("BCELoss", {}, "prob"),
    ("BCELoss", {"weight": "wb", "reduction": "sum"}, "prob"),
    ("BCEWithLogitsLoss", {}, "binary"),
    ("BCEWithLogitsLoss", {"pos_weight": "wb", "weight": "wb"}, "binary"),
]


@pytest.mark.parametrize("name,kwargs,kind", LOSS_CASES)
def test_losses_match_torch(name, kwargs, kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    shape = (6, 5) if kind != "kdim" else (3, 5, 4)
    x = rng.standard_normal(shape)
    if kind == "logprob":
        x = np.log(rng.dirichlet(np.ones(5), size=6))
    if kind == "prob":
        x = rng.uniform(0.02, 0.98, shape)
    if kind in ("index", "logprob"):
        y = rng.integers(0, 5, 6)
    elif kind == "kdim":
        y = rng.integers(0, 5, (3, 4))
    elif kind == "probs":
        y = rng.dirichlet(np.ones(5), size=6)
    elif kind in ("prob", "binary"):
        y = rng.integers(0, 2, shape).astype(np.float64)
    else:
        y = rng.standard_normal(shape)
    weights = {"w": rng.uniform(0.5, 2.0, 5), "wb": rng.uniform(0.5, 2.0, 5)}
    dkw = {k: dtrain.tensor(weights[v]) if v in weights else v for k, v in kwargs.items()}
    tkw = {k: torch.tensor(weights[v]) if v in weights else v for k, v in kwargs.items()}
    xd = dtrain.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    out_d = getattr(nn, name)(**dkw)(xd, dtrain.tensor(y))
    out_t = getattr(torch.nn, name)(**tkw)(xt, torch.tensor(y))
    g = rng.standard_normal(out_t.shape)
    out_d.backward(dtrain.tensor(g))
    out_t.backward(torch.tensor(g))
    np.testing.assert_allclose(out_d._data, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xd.grad._data, xt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,args", [
    ("ReLU", ()), ("LeakyReLU", (0.3,)), ("Tanh", ()), ("Sigmoid", ()), ("GELU", ()),
    ("GELU", ("tanh",)), ("ELU", (0.7,)), ("Softplus", (1.5, 4.0)), ("Softmax", (1,)),
    ("LogSoftmax", (0,)),
])
def test_activations_match_torch(name, args):
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((4, 6)) * 3
    xd, xt = dtrain.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    od, ot = getattr(nn, name)(*args)(xd), getattr(torch.nn, name)(*args)(xt)
    g = RNG.standard_normal(x.shape)
    od.backward(dtrain.tensor(g))
    ot.backward(torch.tensor(g))
    np.testing.assert_allclose(od._data, ot.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xd.grad._data, xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_sigmoid_and_bce_with_logits_are_stable_for_large_inputs():
    x = dtrain.tensor([-1000.0, 1000.0, 0.0], requires_grad=True)
    y = dtrain.tensor([1.0, 0.0, 1.0])
    loss = F.binary_cross_entropy_with_logits(x, y)
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(x.grad._data).all()
    assert np.array_equal(dtrain.sigmoid(dtrain.tensor([-1000.0, 1000.0]))._data, [0.0, 1.0])


def test_clip_grad_matches_torch():
    torch = pytest.importorskip("torch")
    grads = [RNG.standard_normal((3, 4)), RNG.standard_normal(5)]
    for norm_type in (2.0, 1.0, float("inf")):
        ps = [nn.Parameter(dtrain.zeros(*g.shape, dtype="float64")) for g in grads]
        ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for p, t, g in zip(ps, ts, grads):
            p.grad = dtrain.tensor(g.copy())
            t.grad = torch.tensor(g.copy())
        nd = nn.utils.clip_grad_norm_(ps, 1.5, norm_type)
        nt = torch.nn.utils.clip_grad_norm_(ts, 1.5, norm_type)
        np.testing.assert_allclose(nd.item(), nt.item(), rtol=1e-12)
        for p, t in zip(ps, ts):
            np.testing.assert_allclose(p.grad._data, t.grad.numpy(), rtol=1e-12)
    nn.utils.clip_grad_value_(ps, 0.1)
    assert np.abs(ps[0].grad._data).max() <= 0.1


def test_clip_grad_norm_scales_to_max_norm():
    p = nn.Parameter(dtrain.zeros(2, dtype="float64"))
    p.grad = dtrain.tensor([3.0, 4.0], dtype="float64")
    total = nn.utils.clip_grad_norm_([p], 1.0)
    assert total.item() == 5.0
    np.testing.assert_allclose(np.linalg.norm(p.grad._data), 1.0, rtol=1e-6)


def mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.ReLU(), lib.nn.Dropout(0.25),
                             lib.nn.Linear(8, 3, bias=False), lib.nn.LogSoftmax(dim=1))


def test_module_repr_and_state_dict_names_match_torch():
    torch = pytest.importorskip("torch")
    dm, tm = mlp(dtrain), mlp(torch)
    assert repr(dm) == repr(tm)
    assert list(dm.state_dict()) == list(tm.state_dict())
    assert [n for n, _ in dm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert [n for n, _ in dm.named_modules()] == [n for n, _ in tm.named_modules()]


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for name, param in [("relu", None), ("tanh", None), ("leaky_relu", 0.2), ("linear", None),
                        ("sigmoid", None), ("selu", None), ("conv2d", None)]:
        assert nn.init.calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)


# -------------------------------------------------------------------------- Module API
class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.register_buffer("count", dtrain.zeros(1))
        self.register_buffer("scratch", dtrain.zeros(1), persistent=False)

    def forward(self, x):
        return self.fc(x).relu()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(3), Block(3)])
        self.head = nn.ModuleDict({"out": nn.Linear(3, 2)})
        self.shared = self.blocks[0].fc  # the same layer registered twice

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head["out"](x)


def test_state_dict_is_ordered_dotted_and_shares_memory():
    net = Net()
    keys = list(net.state_dict())
    # a module's own parameters and buffers come before its children's, as in PyTorch
    assert keys == ["blocks.0.count", "blocks.0.fc.weight", "blocks.0.fc.bias",
                    "blocks.1.count", "blocks.1.fc.weight", "blocks.1.fc.bias",
                    "head.out.weight", "head.out.bias", "shared.weight", "shared.bias"]
    assert len(list(net.parameters())) == 6  # the shared layer counted once
    sd = net.state_dict()
    value = sd["head.out.weight"]
    assert isinstance(value, dtrain.Tensor) and not value.requires_grad and value.is_leaf
    assert np.shares_memory(value._data, net.head["out"].weight._data)


def test_load_state_dict_round_trip_and_errors_leave_model_untouched():
    a, b = Net(), Net()
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert np.array_equal(va, vb), k
    before = {k: v.clone() for k, v in b.state_dict().items()}
    bad = {k: v.clone() for k, v in a.state_dict().items()}
    bad["head.out.weight"] = np.zeros((5, 3), np.float32)
    del bad["blocks.1.count"]
    bad["extra.weight"] = np.zeros(1)
    bad["blocks.0.fc.bias"] = bad["blocks.0.fc.bias"] + 1  # valid, must not be applied
    bad["shared.bias"] = bad["blocks.0.fc.bias"]  # the same parameter under its second name
    with pytest.raises(RuntimeError) as err:
        b.load_state_dict(bad)
    text = str(err.value)
    assert '"blocks.1.count"' in text and '"extra.weight"' in text
    assert "size mismatch for head.out.weight" in text and "(5, 3)" in text
    for k, v in b.state_dict().items():
        assert np.array_equal(v, before[k]), f"{k} changed by a failed load"
    bad["head.out.weight"] = before["head.out.weight"]
    result = b.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["blocks.1.count"] and result.unexpected_keys == ["extra.weight"]
    assert np.array_equal(b.blocks[0].fc.bias._data, bad["blocks.0.fc.bias"])


def test_train_eval_freeze_and_zero_grad():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net(dtrain.randn(2, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(not p.grad._data.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.blocks.requires_grad_(False)
    net(dtrain.randn(2, 3)).sum().backward()
    assert net.blocks[1].fc.weight.grad is None and net.head["out"].weight.grad is not None


def test_sequential_indexing_slicing_and_assignment_errors():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert isinstance(seq[0], nn.Linear) and isinstance(seq[-1], nn.Linear)
    assert len(seq[:2]) == 2 and isinstance(seq[:2], nn.Sequential)
    with pytest.raises(IndexError):
        seq[3]
    with pytest.raises(TypeError, match="parameter 'weight'"):
        seq[0].weight = dtrain.zeros(3, 2)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        seq.missing
    assert seq(dtrain.randn(4, 2)).shape == (4, 1)


def test_module_records_constructor_arguments():
    layer = nn.Linear(3, 2, bias=False)
    assert layer._init_args == (3, 2) and layer._init_kwargs == {"bias": False}
    seq = nn.Sequential(layer, nn.ReLU())
    assert seq._init_args[0] is layer


def test_double_casts_parameters_and_buffers():
    net = Net().double()
    assert all(v.dtype == np.float64 for v in net.state_dict().values())
    assert net(dtrain.randn(2, 3, dtype="float64")).dtype == np.float64


def test_linear_init_is_seeded_and_bounded():
    dtrain.manual_seed(3)
    a = nn.Linear(100, 50)
    dtrain.manual_seed(3)
    b = nn.Linear(100, 50)
    assert np.array_equal(a.weight._data, b.weight._data)
    assert np.abs(a.weight._data).max() <= 0.1 and np.abs(a.bias._data).max() <= 0.1
    assert abs(a.weight._data.std() - 0.1 / np.sqrt(3)) < 0.005


@pytest.mark.parametrize("init,std", [
    (lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), np.sqrt(2 / 400)),
    (lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"), np.sqrt(2 / 400)),
    (lambda w: nn.init.xavier_uniform_(w), np.sqrt(2 / 700)),
    (lambda w: nn.init.xavier_normal_(w, gain=2.0), 2 * np.sqrt(2 / 700)),
])
def test_init_functions_have_the_documented_spread(init, std):
    w = nn.Parameter(dtrain.zeros(300, 400))
    init(w)
    assert abs(w._data.std() / std - 1) < 0.02
    assert w.requires_grad and w.is_leaf


# --------------------------------------------------------------------------- dropout
def test_dropout_train_eval_and_scaling():
    dtrain.manual_seed(0)
    drop = nn.Dropout(0.3)
    x = dtrain.ones(200, 100)
    y = drop(x)
    kept = y._data != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y._data[kept], 1 / 0.7, rtol=1e-6)
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_dropout_gradient_uses_the_same_mask():
    x = dtrain.ones(50, 40, requires_grad=True)
    y = F.dropout(x, 0.5)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad._data, y._data)


def test_keyed_dropout_mask_depends_on_sample_not_on_batch_composition():
    x = dtrain.ones(6, 32)
    with nn.keyed_dropout(seed=1, step=5, sample_ids=[10, 11, 12, 13, 14, 15]):
        full = F.dropout(x, 0.5)._data
        second_call = F.dropout(x, 0.5)._data
    with nn.keyed_dropout(seed=1, step=5, sample_ids=[13, 11]):
        part = F.dropout(dtrain.ones(2, 32), 0.5)._data
    np.testing.assert_array_equal(part[0], full[3])
    np.testing.assert_array_equal(part[1], full[1])
    assert not np.array_equal(full, second_call)
    with nn.keyed_dropout(seed=1, step=6, sample_ids=[10, 11, 12, 13, 14, 15]):
        assert not np.array_equal(F.dropout(x, 0.5)._data, full)
    assert abs((full != 0).mean() - 0.5) < 0.15
    with nn.keyed_dropout(seed=1, step=5, sample_ids=[1, 2]):
        with pytest.raises(RuntimeError, match="sample ids"):
            F.dropout(x, 0.5)


def test_keyed_uniform_is_uniform():
    from dtrain.nn.dropout import keyed_uniform

    u = keyed_uniform(7, 3, 0, np.arange(1000), (100,))
    assert u.shape == (1000, 100) and u.min() >= 0 and u.max() < 1
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.abs(counts / u.size - 0.1).max() < 0.005


def test_one_hot():
    out = F.one_hot(dtrain.tensor([0, 2, 1]), 4)
    assert out.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]
    with pytest.raises(RuntimeError, match="smaller than num_classes"):
        F.one_hot(dtrain.tensor([5]), 3)


def test_loss_argument_errors_are_clear():
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"expected target of shape \(3,\)"):
        F.cross_entropy(dtrain.randn(3, 4), dtrain.tensor([0, 1]))
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(dtrain.randn(2, 4), dtrain.tensor([0, 4]))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        nn.Linear(3, 2)(dtrain.randn(4, 5))
