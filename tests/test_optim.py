"""dtrain.optim against PyTorch (same start, same gradients) and against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain
from dtrain import nn, optim

STEPS = 50
RTOL = {"float32": 1e-6, "float64": 1e-10}
# PyTorch's CPU kernels fuse multiply-adds (add with alpha, lerp, addcmul) and its float32 sqrt
# is not correctly rounded; NumPy rounds every operation. The resulting one-ulp differences stay
# one ulp of the tensor's scale, so an element that passes near zero needs this absolute part.
ATOL = {"float32": 1e-6, "float64": 0.0}


# ---------------------------------------------------------------- problems
def quadratic(dtype: str):
    """Parameters and loss of a coupled quadratic: 0.5 x'Ax - b'x + 0.5 sum(w (Y - T)^2)."""
    rng = np.random.default_rng(1)
    m = rng.standard_normal((6, 6))
    a = dtrain.tensor((m @ m.T / 6 + np.eye(6)).astype(dtype))
    b = dtrain.tensor(rng.standard_normal(6).astype(dtype))
    w = dtrain.tensor(rng.uniform(0.5, 2.0, (3, 4)).astype(dtype))
    t = dtrain.tensor(rng.standard_normal((3, 4)).astype(dtype))
    x = nn.Parameter(rng.standard_normal(6).astype(dtype))
    y = nn.Parameter(rng.standard_normal((3, 4)).astype(dtype))

    def loss():
        return (x @ (a @ x)) * 0.5 - (b * x).sum() + ((y - t) ** 2 * w).sum() * 0.5

    return [x, y], loss


def mlp(dtype: str):
    """Parameters and MSE loss of a 5-8-3 tanh MLP on a fixed batch."""
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8, dtype=dtype), nn.Tanh(), nn.Linear(8, 3, dtype=dtype))
    rng = np.random.default_rng(2)
    x = dtrain.tensor(rng.standard_normal((16, 5)).astype(dtype))
    y = dtrain.tensor(rng.standard_normal((16, 3)).astype(dtype))
    return list(model.parameters()), lambda: ((model(x) - y) ** 2).mean()


PROBLEMS = {"quadratic": quadratic, "mlp": mlp}


def groups_of(params, kwargs):
    """Two parameter groups, the second with half the learning rate (exercises overrides)."""
    return [{"params": params[:1]}, {"params": params[1:], "lr": kwargs.get("lr", 1e-3) / 2}]


def run_dtrain(name: str, kwargs: dict, problem: str, dtype: str, steps: int = STEPS):
    """Train with dtrain; returns the initial weights, the gradients of every step, the result."""
    params, loss = PROBLEMS[problem](dtype)
    initial = [p._data.copy() for p in params]
    opt = getattr(optim, name)(groups_of(params, kwargs), **kwargs)
    grads = []
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        grads.append([p.grad._data.copy() for p in params])
        opt.step()
    return initial, grads, [p._data for p in params]


def run_torch(name: str, kwargs: dict, initial, grads):
    """PyTorch's single-tensor optimizer fed the same start and the same gradients."""
    torch = pytest.importorskip("torch")
    params = [torch.tensor(a, requires_grad=True) for a in initial]
    options = {"foreach": False, **kwargs}  # the single-tensor path unless a case says otherwise
    opt = getattr(torch.optim, name)(groups_of(params, kwargs), **options)
    torch_steps(opt, params, grads)
    return [p.detach().numpy() for p in params]


def torch_steps(opt, params, grads) -> None:
    """Step a PyTorch optimizer once per entry of ``grads`` (the arrays of one step)."""
    torch = pytest.importorskip("torch")
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()


def steps_alike(opt, ours, topt, theirs, grads) -> None:
    """Step dtrain's ``opt`` and PyTorch's ``topt`` side by side on the same gradients."""
    torch = pytest.importorskip("torch")
    for step_grads in grads:
        for p, q, g in zip(ours, theirs, step_grads):
            p.grad, q.grad = dtrain.tensor(g), torch.from_numpy(g.copy())
        opt.step()
        topt.step()


def assert_params_match(ours, theirs) -> None:
    """dtrain's parameters equal PyTorch's to 1e-12 (relative)."""
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p._data, q.detach().numpy(), rtol=1e-12)


def as_numpy_state_dict(tsd: dict) -> dict:
    """A PyTorch optimizer state_dict with arrays for tensors, as dtrain loads it."""
    return {"state": {k: {n: v.numpy() for n, v in s.items()} for k, s in tsd["state"].items()},
            "param_groups": tsd["param_groups"]}


def check_against_torch(name: str, kwargs: dict, problem: str, dtype: str) -> None:
    """50 steps of dtrain and PyTorch from the same weights with the same gradients agree."""
    initial, grads, ours = run_dtrain(name, kwargs, problem, dtype)
    theirs = run_torch(name, kwargs, initial, grads)
    for a, b, start in zip(ours, theirs, initial):
        assert not np.array_equal(a, start)  # the parameters moved
        np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=ATOL[dtype] * np.abs(b).max())


# ---------------------------------------------------------------- against PyTorch
SGD_CASES = [
    {"lr": 0.05},
    {"lr": 0.05, "maximize": True},
    {"lr": 0.05, "weight_decay": 0.1},
    {"lr": 0.05, "weight_decay": 0.1, "maximize": True},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "maximize": True},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    {"lr": 0.05, "momentum": 0.5, "dampening": 0.5, "weight_decay": 0.01, "maximize": True},
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "foreach": True},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "fused": True},
]

ADAM_CASES = [
    {"lr": 0.01},
    {"lr": 0.01, "amsgrad": True},
    {"lr": 0.01, "maximize": True},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True},
    {"lr": 0.01, "betas": (0.3, 0.5), "eps": 1e-3},  # beta1 < 0.5: the other lerp branch
    {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "foreach": True},
    {"lr": 0.01, "weight_decay": 0.1, "maximize": True, "fused": True},
    {"lr": 0.01, "amsgrad": True, "fused": True, "capturable": True},  # fused ignores it on CPU
]
ADAMW_CASES = [
    {"lr": 0.01},
    {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
    {"lr": 0.01, "weight_decay": 0.0, "maximize": True},
    {"lr": 0.01, "betas": (0.3, 0.5), "weight_decay": 0.1, "maximize": True, "amsgrad": True},
    {"lr": 0.01, "weight_decay": 0.1, "foreach": True},
    {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "fused": True},
]
RMSPROP_CASES = [
    {"lr": 0.01},
    {"lr": 0.01, "centered": True},
    {"lr": 0.01, "momentum": 0.9},
    {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1},
    {"lr": 0.01, "alpha": 0.3, "eps": 1e-3, "maximize": True},
    {"lr": 0.01, "momentum": 0.5, "centered": True, "maximize": True},
    {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1, "foreach": True},
]
ADAGRAD_CASES = [
    {"lr": 0.1},
    {"lr": 0.1, "lr_decay": 0.05},
    {"lr": 0.1, "weight_decay": 0.1, "maximize": True},
    {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-3},
    {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01, "initial_accumulator_value": 0.1},
    {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1, "foreach": True},
    {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.5, "fused": True},
]

# every combination of the options that change the arithmetic, then the other hyperparameters;
# foreach=True compares with PyTorch's multi-tensor kernels (dtrain has one arithmetic for both)
PENALTIES = [{}, {"maximize": True}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "maximize": True}]
DECOUPLED = [{**p, "decoupled_weight_decay": True} for p in PENALTIES]
ADADELTA_CASES = [
    *PENALTIES,
    {"lr": 0.5, "rho": 0.5, "eps": 1e-3},
    {"lr": 0.1, "rho": 0.99, "weight_decay": 0.01, "maximize": True, "foreach": True},
]
ADAMAX_CASES = [
    *({"lr": 0.01, **p} for p in PENALTIES),
    {"lr": 0.01, "betas": (0.3, 0.5), "eps": 1e-3},  # beta1 < 0.5: the other lerp branch
    {"lr": 0.01, "weight_decay": 0.1, "foreach": True},
]
NADAM_CASES = [
    *({"lr": 0.01, **p} for p in PENALTIES + DECOUPLED),
    {"lr": 0.01, "momentum_decay": 0.1},
    {"lr": 0.01, "momentum_decay": 0.0, "weight_decay": 0.1, "decoupled_weight_decay": True},
    {"lr": 0.01, "betas": (0.3, 0.5), "eps": 1e-3, "maximize": True},
    {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "foreach": True},
]
RADAM_CASES = [
    *({"lr": 0.01, **p} for p in PENALTIES + DECOUPLED),
    {"lr": 0.01, "betas": (0.3, 0.5), "eps": 1e-3},  # rho_inf = 3: never rectified
    {"lr": 0.01, "betas": (0.9, 0.9)},  # rho_inf = 19 (1999 by default); rectified from step 6
    {"lr": 0.01, "weight_decay": 0.1, "maximize": True, "foreach": True},
]
RPROP_CASES = [
    {"lr": 0.01},
    {"lr": 0.01, "maximize": True},
    {"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-3, 0.02)},
    {"lr": 0.01, "etas": (0.5, 1.1), "foreach": True},
]
ASGD_CASES = [
    {"lr": 0.01},
    {"lr": 0.05, "lambd": 0.01, "alpha": 0.5, "t0": 10},  # averaging from step 11
    {"lr": 0.05, "lambd": 0.1, "t0": 5, "weight_decay": 0.1, "maximize": True},
    {"lr": 0.05, "t0": 20, "weight_decay": 0.1},  # (torch's foreach ASGD rounds eta apart)
]
ADAFACTOR_CASES = [
    {},
    {"lr": 0.05, "weight_decay": 0.1},
    {"maximize": True, "eps": (1e-4, 1e-2), "d": 2.0, "beta2_decay": -0.5},
    {"lr": 0.05, "eps": (None, 0.1), "foreach": True},
]

CASES = ([("SGD", kw) for kw in SGD_CASES] + [("Adam", kw) for kw in ADAM_CASES]
         + [("AdamW", kw) for kw in ADAMW_CASES] + [("RMSprop", kw) for kw in RMSPROP_CASES]
         + [("Adagrad", kw) for kw in ADAGRAD_CASES]
         + [("Adadelta", kw) for kw in ADADELTA_CASES] + [("Adamax", kw) for kw in ADAMAX_CASES]
         + [("NAdam", kw) for kw in NADAM_CASES] + [("RAdam", kw) for kw in RADAM_CASES]
         + [("Rprop", kw) for kw in RPROP_CASES] + [("ASGD", kw) for kw in ASGD_CASES]
         + [("Adafactor", kw) for kw in ADAFACTOR_CASES])


def case_id(case) -> str:
    name, kwargs = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("problem", ["quadratic", "mlp"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(case, problem, dtype):
    check_against_torch(*case, problem, dtype)


# ---------------------------------------------------------------- hand-computed steps
def param(values, grad=None, dtype="float64"):
    p = nn.Parameter(np.array(values, dtype=dtype))
    if grad is not None:
        p.grad = dtrain.tensor(np.array(grad, dtype=dtype))
    return p


def test_sgd_first_steps_by_hand():
    p = param([1.0, -2.0], [0.5, 0.25])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.2)
    opt.step()  # g = [0.5 + 0.2, 0.25 - 0.4]; buffer = g (undamped); p -= 0.1 g
    np.testing.assert_allclose(p._data, [1.0 - 0.07, -2.0 + 0.015], rtol=1e-15)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [0.7, -0.15], rtol=1e-15)
    opt.step()  # g = [0.5 + 0.2*0.93, 0.25 - 0.2*1.985]; buffer = 0.9 buffer + g
    g = np.array([0.5 + 0.2 * 0.93, 0.25 - 0.2 * 1.985])
    buf = 0.9 * np.array([0.7, -0.15]) + g
    np.testing.assert_allclose(p._data, [0.93, -1.985] - 0.1 * buf, rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3,), (512, 784), (1 << 16,), ((1 << 16) + 1,), (300, 301)])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_update_in_pieces_has_the_whole_updates_bits(shape, momentum, dtype):
    """SGD's ``param += grad * -lr`` goes through a cache-sized scratch a piece at a time; each
    element must get exactly the bits of the one-pass update, across pieces and remainders."""
    rng = np.random.default_rng(shape[0])
    start = (rng.standard_normal(shape) * np.exp2(rng.integers(-20, 20, shape))).astype(dtype)
    grads = [(rng.standard_normal(shape) * np.exp2(rng.integers(-20, 20, shape))).astype(dtype)
             for _ in range(2)]
    p = nn.Parameter(start.copy())
    opt = optim.SGD([p], lr=0.0123, momentum=momentum)
    expected, buf = start.copy(), None
    for g in grads:
        p.grad = dtrain.tensor(g.copy())
        opt.step()
        if momentum:
            buf = g.copy() if buf is None else buf * momentum + g
        expected += (g if not momentum else buf) * -0.0123
        assert p._data.dtype == expected.dtype and p._data.tobytes() == expected.tobytes()
        assert np.array_equal(p.grad._data, g), "the gradient was written into"


def test_sgd_nesterov_and_dampening_by_hand():
    p = param([0.0], [1.0])
    opt = optim.SGD([p], lr=1.0, momentum=0.5, nesterov=True)
    opt.step()  # buffer = 1, g = 1 + 0.5 * 1
    assert p._data[0] == -1.5
    opt.step()  # buffer = 0.5 + 1, g = 1 + 0.75
    assert p._data[0] == -1.5 - 1.75
    q = param([0.0], [1.0])
    opt = optim.SGD([q], lr=1.0, momentum=0.5, dampening=0.5)
    opt.step()  # first buffer is the gradient itself, undamped
    opt.step()  # buffer = 0.5 * 1 + 0.5 * 1
    assert q._data[0] == -2.0


def test_adam_first_two_steps_by_hand():
    g1, g2 = np.array([0.5, -0.25]), np.array([0.1, 0.3])
    p = param([1.0, -2.0], g1)
    opt = optim.Adam([p], lr=0.1)
    opt.step()  # m = 0.1 g, v = 0.001 g^2: the first step is lr * g / (|g| + eps)
    expected = np.array([1.0, -2.0]) - 0.1 * g1 / (np.abs(g1) + 1e-8)
    np.testing.assert_allclose(p._data, expected, rtol=1e-14)
    p.grad = dtrain.tensor(g2)
    opt.step()
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    np.testing.assert_allclose(p._data, expected - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8),
                               rtol=1e-14)
    assert opt.state[p]["step"] == 2


def test_adam_l2_and_adamw_decoupled_weight_decay_by_hand():
    p = param([2.0], [0.5])
    optim.Adam([p], lr=0.1, weight_decay=0.5).step()  # g = 0.5 + 0.5 * 2 = 1.5
    np.testing.assert_allclose(p._data, [2.0 - 0.1 * 1.5 / (1.5 + 1e-8)], rtol=1e-14)
    q = param([2.0], [0.5])
    optim.AdamW([q], lr=0.1, weight_decay=0.5).step()  # theta * (1 - 0.05), then Adam on g
    np.testing.assert_allclose(q._data, [2.0 * 0.95 - 0.1 * 0.5 / (0.5 + 1e-8)], rtol=1e-14)


def test_rmsprop_and_adagrad_first_steps_by_hand():
    p = param([1.0], [0.2])
    optim.RMSprop([p], lr=0.01).step()  # v = 0.01 g^2
    np.testing.assert_allclose(p._data, [1.0 - 0.01 * 0.2 / (0.02 + 1e-8)], rtol=1e-14)
    q = param([1.0], [0.2])
    opt = optim.Adagrad([q], lr=0.1, lr_decay=0.5, initial_accumulator_value=0.12)
    opt.step()  # sum = 0.12 + 0.04
    np.testing.assert_allclose(q._data, [1.0 - 0.1 * 0.2 / (0.4 + 1e-10)], rtol=1e-14)
    opt.step()  # sum = 0.2, lr / (1 + 1 * 0.5)
    expected = 1.0 - 0.1 * 0.2 / (0.4 + 1e-10) - 0.1 / 1.5 * 0.2 / (np.sqrt(0.2) + 1e-10)
    np.testing.assert_allclose(q._data, [expected], rtol=1e-14)


def test_adadelta_and_adamax_first_steps_by_hand():
    p = param([1.0], [0.5])
    optim.Adadelta([p], lr=2.0).step()  # v = 0.1 g^2, delta = sqrt(eps) / sqrt(v + eps) * g
    delta = np.sqrt(1e-6) / np.sqrt(0.025 + 1e-6) * 0.5
    np.testing.assert_allclose(p._data, [1.0 - 2.0 * delta], rtol=1e-14)
    q = param([1.0, -1.0], [0.5, -0.25])
    opt = optim.Adamax([q], lr=0.1)
    opt.step()  # m = 0.1 g, u = |g| + eps, lr / (1 - 0.9)
    np.testing.assert_allclose(q._data, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8),
                                        -1.0 + 0.1 * 0.25 / (0.25 + 1e-8)], rtol=1e-14)
    np.testing.assert_array_equal(opt.state[q]["exp_inf"], [0.5 + 1e-8, 0.25 + 1e-8])


def test_radam_and_nadam_first_steps_by_hand():
    p = param([1.0], [0.5])
    optim.RAdam([p], lr=0.1).step()  # rho_1 = 1 <= 5: the unadapted step lr * m_hat = lr * g
    np.testing.assert_allclose(p._data, [1.0 - 0.1 * 0.5], rtol=1e-14)
    q = param([1.0], [0.5])
    opt = optim.NAdam([q], lr=0.1)
    opt.step()
    mu1, mu2 = (0.9 * (1 - 0.5 * 0.96 ** (t * 0.004)) for t in (1, 2))
    product = float(np.float32(mu1))  # kept in float32, PyTorch's default scalar dtype
    denom = 0.5 + 1e-8  # sqrt(v / (1 - beta2)) + eps = |g| + eps
    expected = (1.0 - 0.1 * (1 - mu1) / (1 - product) * 0.5 / denom
                - 0.1 * mu2 / (1 - product * mu2) * 0.05 / denom)
    np.testing.assert_allclose(q._data, [expected], rtol=1e-14)
    assert opt.state[q]["mu_product"] == product and opt.state[q]["step"] == 1


def test_rprop_steps_by_hand():
    p = param([1.0])
    opt = optim.Rprop([p], lr=0.01)
    expected = []
    for g in (0.5, 0.3, -0.2, -0.2):
        p.grad = dtrain.tensor([g])
        opt.step()
        expected.append(p._data[0])
    # no previous sign: step lr; same sign: step * 1.2; flipped: step * 0.5 and no move
    # (the gradient is forgotten); after a forgotten gradient: the halved step, unchanged
    np.testing.assert_allclose(expected, [0.99, 0.978, 0.978, 0.984], rtol=1e-14)
    np.testing.assert_allclose(opt.state[p]["step_size"], [0.006], rtol=1e-14)


def test_asgd_first_steps_by_hand():
    p = param([1.0], [1.0])
    opt = optim.ASGD([p], lr=0.1, lambd=0.5, alpha=1.0, t0=0.0)
    opt.step()
    eta = float(np.float32(0.1))  # the rates live in the default dtype, as in PyTorch
    first = 1.0 * (1 - 0.5 * eta) - eta
    assert p._data[0] == first and opt.state[p]["ax"][0] == first  # mu = 1: ax is the iterate
    assert opt.state[p]["eta"] == np.float32(0.1 / (1 + 0.5 * 0.1))
    assert opt.state[p]["mu"] == 1.0
    opt.step()  # mu is still 1 for this step, then 1 / (2 - t0)
    eta = float(np.float32(0.1 / 1.05))
    second = first * (1 - 0.5 * eta) - eta
    assert p._data[0] == pytest.approx(second, rel=1e-15) and opt.state[p]["ax"][0] == second
    assert opt.state[p]["mu"] == 0.5


# ---------------------------------------------------------------- the base class
def test_param_groups_take_defaults_and_overrides():
    a, b = param([1.0], [1.0]), param([1.0], [1.0])
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 1e-3}], lr=1e-2, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-3]
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    assert opt.defaults["lr"] == 1e-2
    opt.step()
    np.testing.assert_allclose([a._data[0], b._data[0]], [1 - 1e-2, 1 - 1e-3], rtol=1e-15)
    opt.param_groups[1]["lr"] = 0.5  # users edit groups directly (schedulers do too)
    opt.step()
    np.testing.assert_allclose(b._data[0], 1 - 1e-3 - 0.5 * 1.9, rtol=1e-15)


def test_model_parameters_and_named_parameters_are_accepted():
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)
    assert len(opt.param_groups[0]["params"]) == 2
    opt = optim.SGD(model.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]


def test_add_param_group_and_its_errors():
    a, b, c = param([1.0]), param([2.0]), param([3.0])
    opt = optim.SGD([a], lr=0.1)
    opt.add_param_group({"params": [b], "momentum": 0.5})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["momentum"] == 0.5
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [c, a]})
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [a, b]}, {"params": [b]}], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([a, a], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        opt.add_param_group({"params": {c}})
    with pytest.raises(TypeError, match="only optimize Tensors"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="'params'"):
        opt.add_param_group({"lr": 0.1})
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.add_param_group({"params": [c], "lr": -1.0})
    assert len(opt.param_groups) == 2  # failed additions leave the optimizer unchanged


@pytest.mark.parametrize("params", [[], iter([])])
def test_empty_parameter_list_raises(params):
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD(params, lr=0.1)


def test_single_tensor_or_dict_as_params_raises():
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(param([1.0]), lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        optim.SGD({"params": [param([1.0])]}, lr=0.1)


def test_non_leaf_tensor_is_rejected():
    x = dtrain.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([x * 2], lr=0.1)


ALL_FIRST_ORDER = [("SGD", {"momentum": 0.9, "weight_decay": 0.1}), ("Adam", {"amsgrad": True}),
                   ("AdamW", {}), ("RMSprop", {"centered": True, "momentum": 0.5}),
                   ("Adagrad", {"weight_decay": 0.1}), ("Adadelta", {"weight_decay": 0.1}),
                   ("Adamax", {"betas": (0.8, 0.99)}), ("NAdam", {"decoupled_weight_decay": True}),
                   ("RAdam", {"weight_decay": 0.1}), ("Rprop", {}), ("ASGD", {"t0": 0}),
                   ("Adafactor", {"weight_decay": 0.1})]


@pytest.mark.parametrize("case", ALL_FIRST_ORDER, ids=case_id)
def test_step_skips_parameters_without_gradient(case):
    name, kwargs = case
    a, b = param([1.0], [1.0]), param([2.0])
    opt = getattr(optim, name)([a, b], lr=0.5, **kwargs)
    opt.step()
    assert b._data[0] == 2.0 and a._data[0] != 1.0
    if name != "Adagrad":  # Adagrad creates every state up front, as PyTorch's does
        assert b not in opt.state


def test_zero_grad_to_none_and_to_zeros():
    a = param([1.0, 2.0], [3.0, 4.0])
    opt = optim.SGD([a], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad._data, [0.0, 0.0])
    opt.zero_grad()
    assert a.grad is None


@pytest.mark.parametrize("case", [*ALL_FIRST_ORDER, ("LBFGS", {"max_iter": 1})], ids=case_id)
def test_step_returns_closure_loss_and_enables_grad(case):
    name, kwargs = case
    p = param([3.0])
    opt = getattr(optim, name)([p], lr=0.1, **kwargs)
    seen = []

    def closure():
        opt.zero_grad()
        seen.append(dtrain.is_grad_enabled())
        loss = (p * p).sum()
        loss.backward()
        return loss

    with dtrain.no_grad():
        loss = opt.step(closure)
    assert seen == [True] and float(loss) == 9.0
    assert p._data[0] < 3.0
    if name == "SGD":
        assert p._data[0] == pytest.approx(3.0 - 0.1 * (6.0 + 0.1 * 3.0))
    if name != "LBFGS":
        assert opt.step() is None


def test_gradient_with_the_wrong_shape_raises():
    p = param([1.0, 2.0])
    p.grad = dtrain.tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"gradient of parameter 0 has shape \(3,\)"):
        optim.SGD([p], lr=0.1).step()


def test_update_does_not_go_through_autograd():
    p = param([1.0, 2.0], [1.0, 1.0])
    data = p._data
    optim.SGD([p], lr=0.1, momentum=0.9).step()
    assert p._data is data and p.grad_fn is None and p.is_leaf  # updated in place


# ---------------------------------------------------------------- invalid options
@pytest.mark.parametrize("name,kwargs,option", [
    ("SGD", {"lr": -0.1}, "lr"),
    ("SGD", {"momentum": -0.5}, "momentum"),
    ("SGD", {"weight_decay": -1e-4}, "weight_decay"),
    ("SGD", {"nesterov": True}, "nesterov"),
    ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "nesterov"),
    ("Adam", {"lr": -1e-3}, "lr"),
    ("Adam", {"eps": -1e-8}, "eps"),
    ("Adam", {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    ("Adam", {"betas": (0.9, -0.1)}, r"betas\[1\]"),
    ("Adam", {"weight_decay": -0.1}, "weight_decay"),
    ("AdamW", {"betas": (0.9, 1.5)}, r"betas\[1\]"),
    ("AdamW", {"weight_decay": -0.1}, "weight_decay"),
    ("RMSprop", {"alpha": -0.5}, "alpha"),
    ("RMSprop", {"momentum": -0.5}, "momentum"),
    ("RMSprop", {"eps": -1.0}, "eps"),
    ("RMSprop", {"weight_decay": -1.0}, "weight_decay"),
    ("Adagrad", {"lr_decay": -0.1}, "lr_decay"),
    ("Adagrad", {"initial_accumulator_value": -0.1}, "initial_accumulator_value"),
    ("Adagrad", {"eps": -0.1}, "eps"),
    ("Adadelta", {"lr": -1.0}, "lr"),
    ("Adadelta", {"rho": 1.5}, "rho"),
    ("Adadelta", {"rho": -0.1}, "rho"),
    ("Adadelta", {"eps": -1e-6}, "eps"),
    ("Adadelta", {"weight_decay": -0.1}, "weight_decay"),
    ("Adadelta", {"foreach": "yes"}, "foreach"),
    ("Adamax", {"lr": -1.0}, "lr"),
    ("Adamax", {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    ("Adamax", {"eps": -1.0}, "eps"),
    ("Adamax", {"capturable": None}, "capturable"),
    ("NAdam", {"betas": (0.9, 1.0)}, r"betas\[1\]"),
    ("NAdam", {"momentum_decay": -0.004}, "momentum_decay"),
    ("NAdam", {"weight_decay": -0.1}, "weight_decay"),
    ("NAdam", {"differentiable": 1}, "differentiable"),
    ("RAdam", {"lr": -1e-3}, "lr"),
    ("RAdam", {"betas": (0.9,)}, "betas"),
    ("RAdam", {"eps": -1.0}, "eps"),
    ("Rprop", {"lr": -1.0}, "lr"),
    ("Rprop", {"etas": (1.0, 1.2)}, "etas"),
    ("Rprop", {"etas": (0.5, 0.9)}, "etas"),
    ("Rprop", {"step_sizes": (1e-6,)}, "step_sizes"),
    ("ASGD", {"lr": -1.0}, "lr"),
    ("ASGD", {"weight_decay": -0.1}, "weight_decay"),
    ("ASGD", {"foreach": 0}, "foreach"),
    ("Adafactor", {"lr": -1.0}, "lr"),
    ("Adafactor", {"beta2_decay": 0.5}, "beta2_decay"),
    ("Adafactor", {"eps": (-1.0, 1e-3)}, "eps"),
    ("Adafactor", {"eps": (None, -1e-3)}, "eps"),
    ("Adafactor", {"d": 0.5}, "d"),
    ("Adafactor", {"weight_decay": -0.1}, "weight_decay"),
])
def test_invalid_hyperparameters_raise_naming_the_option(name, kwargs, option):
    with pytest.raises(ValueError, match=f"Invalid {option}"):
        getattr(optim, name)([param([1.0])], **kwargs)


# ---------------------------------------------------------------- checkpoints
def checkpoint_run(name: str, kwargs: dict, resume_at: int | None, path=None, steps: int = 20):
    """Train the MLP; with ``resume_at`` the optimizer is rebuilt midway from its state_dict,
    written to ``path`` with ``dtrain.save`` and read back."""
    params, loss = mlp("float32")
    grouped = name != "LBFGS"
    opt = getattr(optim, name)(groups_of(params, kwargs) if grouped else params, **kwargs)

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    for i in range(steps):
        if i == resume_at:
            dtrain.save(opt.state_dict(), path)
            fresh = groups_of(params, {}) if grouped else params
            opt = getattr(optim, name)(fresh, lr=123.0)  # other options, to be overwritten
            opt.load_state_dict(dtrain.load(path))
        opt.step(closure)
    return [p._data.copy() for p in params], opt


CHECKPOINT_CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    ("AdamW", {"lr": 0.01, "betas": (0.8, 0.99)}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("Adadelta", {"lr": 0.5, "rho": 0.8, "weight_decay": 0.01}),
    ("Adamax", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.01}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.01, "decoupled_weight_decay": True}),
    ("RAdam", {"lr": 0.01, "weight_decay": 0.01, "maximize": True}),
    ("Rprop", {"lr": 0.01, "etas": (0.4, 1.3)}),
    ("ASGD", {"lr": 0.05, "lambd": 0.01, "t0": 5}),
    ("Adafactor", {"lr": 0.05, "weight_decay": 0.01}),
]
LBFGS_CHECKPOINT_CASES = [
    ("LBFGS", {"lr": 0.5, "max_iter": 3, "history_size": 4}),
    ("LBFGS", {"lr": 1.0, "max_iter": 3, "history_size": 4, "line_search_fn": "strong_wolfe"}),
]


@pytest.mark.parametrize("case", CHECKPOINT_CASES + LBFGS_CHECKPOINT_CASES, ids=case_id)
def test_state_dict_round_trip_continues_bit_identically(case, tmp_path):
    name, kwargs = case
    steps = 6 if name == "LBFGS" else 20
    straight, _ = checkpoint_run(name, kwargs, None, steps=steps)
    resumed, opt = checkpoint_run(name, kwargs, steps // 2, tmp_path / "opt.dtrain", steps)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    assert opt.param_groups[-1]["lr"] == kwargs["lr"] / (2 if name != "LBFGS" else 1)


def test_state_dict_layout_is_pytorchs():
    a, b, c = param([1.0], [1.0]), param([2.0], [1.0]), param([3.0])
    opt = optim.SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1, momentum=0.9)
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.5 and "params" not in opt.defaults
    assert set(sd["state"]) == {0, 1}  # c has no gradient, hence no state
    assert isinstance(sd["state"][0]["momentum_buffer"], np.ndarray)


def test_load_state_dict_copies_and_casts():
    p = param([1.0, 2.0], [1.0, 1.0], dtype="float32")
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    buf = np.array([5.0, 6.0])  # float64 array into a float32 parameter's state
    opt.load_state_dict({"state": {0: {"momentum_buffer": buf}},
                         "param_groups": [{"lr": 0.2, "momentum": 0.9, "params": [0]}]})
    loaded = opt.state[p]["momentum_buffer"]
    assert loaded.dtype == np.float32 and not np.shares_memory(loaded, buf)
    assert opt.param_groups[0]["lr"] == 0.2 and opt.param_groups[0]["nesterov"] is False
    opt.step()
    np.testing.assert_array_equal(buf, [5.0, 6.0])  # the dict's array was not changed
    tensor_state = {"momentum_buffer": dtrain.tensor([1.0, 1.0])}
    opt.load_state_dict({"state": {"0": tensor_state},
                         "param_groups": [{"lr": 0.2, "momentum": 0.9, "params": [0]}]})
    assert isinstance(opt.state[p]["momentum_buffer"], np.ndarray)


@pytest.mark.parametrize("mutate,error", [
    (lambda sd: sd["param_groups"].append({"params": []}), "2 parameter groups"),
    (lambda sd: sd["param_groups"][0]["params"].append(5), "doesn't match the size"),
    (lambda sd: sd["state"].__setitem__(9, {}), "parameter 9"),
    (lambda sd: sd["state"][0].__setitem__("momentum_buffer", np.zeros(3)), "shape"),
    (lambda sd: sd["param_groups"][0].__setitem__("lr", -1.0), "Invalid lr"),
    (lambda sd: sd.pop("state"), "'state'"),
    (lambda sd: sd["state"].__setitem__("first", {}), "not a parameter index"),
])
def test_mismatched_state_dict_raises_and_changes_nothing(mutate, error):
    p = param([1.0, 2.0], [1.0, 1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    sd = opt.state_dict()
    sd = {"state": {0: dict(sd["state"][0])}, "param_groups": [dict(sd["param_groups"][0])]}
    sd["param_groups"][0]["params"] = list(sd["param_groups"][0]["params"])
    before = opt.state[p]["momentum_buffer"]
    mutate(sd)
    with pytest.raises(ValueError, match=error):
        opt.load_state_dict(sd)
    assert opt.state[p]["momentum_buffer"] is before and opt.param_groups[0]["lr"] == 0.1


def torch_state_keys(name: str, kwargs: dict):
    """State and group keys of PyTorch's optimizer after one step on the MLP's parameters."""
    torch = pytest.importorskip("torch")
    params = [torch.tensor(a._data, requires_grad=True) for a in mlp("float64")[0]]
    opt = getattr(torch.optim, name)(params, foreach=False, **kwargs)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    return {k: set(v) for k, v in sd["state"].items()}, [set(g) for g in sd["param_groups"]]


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=case_id)
def test_state_dict_keys_match_torch(case):
    name, kwargs = case
    params = mlp("float64")[0]
    opt = getattr(optim, name)(params, **kwargs)
    for p in params:
        p.grad = dtrain.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    state_keys, group_keys = torch_state_keys(name, kwargs)
    # PyTorch's kernel flags, in the groups of the optimizers that do not take them yet
    skipped = {"foreach", "capturable", "differentiable", "fused"} - set(opt.defaults)
    assert ({k: set(v) for k, v in sd["state"].items()},
            [set(g) for g in sd["param_groups"]]) == (state_keys,
                                                     [g - skipped for g in group_keys])


def test_torch_checkpoint_loads_and_continues_like_torch():
    torch = pytest.importorskip("torch")
    kwargs = {"lr": 0.01, "amsgrad": True}
    initial, grads, _ = run_dtrain("Adam", kwargs, "mlp", "float64", steps=10)
    params = [torch.tensor(a, requires_grad=True) for a in initial]
    topt = torch.optim.Adam(params, foreach=False, **kwargs)
    torch_steps(topt, params, grads[:5])
    ours = [nn.Parameter(p.detach().numpy().copy()) for p in params]
    opt = optim.Adam(ours)
    opt.load_state_dict(as_numpy_state_dict(topt.state_dict()))
    assert opt.state[ours[0]]["step"] == 5.0 and opt.param_groups[0]["amsgrad"] is True
    steps_alike(opt, ours, topt, params, grads[5:])
    assert_params_match(ours, params)


NEW_OPTIMIZERS = ["Adadelta", "Adamax", "NAdam", "RAdam", "Rprop", "ASGD"]
FIRST_ORDER = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", *NEW_OPTIMIZERS]
CAPTURABLE = ["Adam", "AdamW", "RMSprop", *NEW_OPTIMIZERS]  # those whose torch class takes it
FUSED = ["SGD", "Adam", "AdamW", "Adagrad"]


@pytest.mark.parametrize("name", [*FIRST_ORDER, "Adafactor"])
def test_defaults_match_torch(name):
    torch = pytest.importorskip("torch")
    ours = getattr(optim, name)([param([1.0])]).defaults
    theirs = getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)]).defaults
    assert ours == theirs


@pytest.mark.parametrize("name,flag,error",
                         [(n, "capturable", AssertionError) for n in CAPTURABLE]
                         + [(n, "differentiable", RuntimeError) for n in FIRST_ORDER])
def test_accelerator_flags_fail_at_step_like_torch_on_the_cpu(name, flag, error):
    torch = pytest.importorskip("torch")
    p, idle = param([1.0], [1.0]), param([2.0])
    opt = getattr(optim, name)([{"params": [idle]}, {"params": [p]}], **{flag: True})
    assert opt.param_groups[1][flag] is True
    with pytest.raises(error, match=f"{flag}=True"):
        opt.step()
    assert p._data[0] == 1.0 and idle._data[0] == 2.0
    t = torch.ones(1, requires_grad=True)
    t.grad = torch.ones(1)
    with pytest.raises(error):
        getattr(torch.optim, name)([t], **{flag: True}).step()
    getattr(optim, name)([idle], **{flag: True}).step()  # nothing to update: no error, as torch


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("flags", [{"fused": True, "foreach": True},
                                   {"fused": True, "differentiable": True}])
def test_fused_conflicts_raise_like_torch(name, flags):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="fused=True"):
        getattr(optim, name)([param([1.0])], **flags)
    with pytest.raises(RuntimeError):
        getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)], **flags)


@pytest.mark.parametrize("case", [
    ("Adadelta", {"lr": 0.5, "weight_decay": 0.01}),
    ("Adamax", {"lr": 0.01, "maximize": True}),
    ("NAdam", {"lr": 0.01, "momentum_decay": 0.01}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("Rprop", {"lr": 0.01, "etas": (0.3, 1.5)}),
    ("ASGD", {"lr": 0.05, "lambd": 0.01, "t0": 3}),  # PyTorch casts eta and mu when loading
    ("Adafactor", {"lr": 0.05, "weight_decay": 0.1}),
], ids=case_id)
def test_torch_checkpoint_of_new_optimizers_continues_like_torch(case):
    torch = pytest.importorskip("torch")
    name, kwargs = case
    initial, grads, _ = run_dtrain(name, kwargs, "mlp", "float64", steps=12)
    params = [torch.tensor(a, requires_grad=True) for a in initial]
    topt = getattr(torch.optim, name)(params, foreach=False, **kwargs)
    torch_steps(topt, params, grads[:6])
    tsd = topt.state_dict()
    topt = getattr(torch.optim, name)(params, foreach=False)
    topt.load_state_dict(tsd)  # PyTorch casts mu_product to the parameter's dtype here
    ours = [nn.Parameter(p.detach().numpy().copy()) for p in params]
    opt = getattr(optim, name)(ours)
    opt.load_state_dict(as_numpy_state_dict(tsd))
    assert opt.state[ours[0]]["step"] == 6.0 and opt.param_groups[0]["foreach"] is False
    steps_alike(opt, ours, topt, params, grads[6:])
    assert_params_match(ours, params)


@pytest.mark.parametrize("case", [
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adadelta", {"lr": 0.5, "weight_decay": 0.01}),
    ("Adamax", {"lr": 0.01}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {"lr": 0.01}),
    ("Rprop", {"lr": 0.01}),
    ("ASGD", {"lr": 0.05, "lambd": 0.01, "t0": 3}),
    ("Adafactor", {"lr": 0.05}),
], ids=case_id)
def test_dtrain_checkpoint_loads_into_torch_and_continues_alike(case):
    """The other direction: torch reads dtrain's state_dict (arrays as tensors) as its own."""
    torch = pytest.importorskip("torch")
    name, kwargs = case
    initial, grads, _ = run_dtrain(name, kwargs, "mlp", "float64", steps=12)
    ours = [nn.Parameter(a.copy()) for a in initial]
    opt = getattr(optim, name)(ours, **kwargs)
    for step_grads in grads[:6]:
        for p, g in zip(ours, step_grads):
            p.grad = dtrain.tensor(g)
        opt.step()
    sd = opt.state_dict()
    theirs = [torch.tensor(p._data.copy(), requires_grad=True) for p in ours]
    topt = getattr(torch.optim, name)(theirs, foreach=False)
    topt.load_state_dict({
        "state": {k: {n: torch.tensor(v) for n, v in s.items()} for k, s in sd["state"].items()},
        "param_groups": sd["param_groups"]})
    opt.load_state_dict(sd)  # the same casts on both sides (mu_product, eta, mu)
    steps_alike(opt, ours, topt, theirs, grads[6:])
    assert_params_match(ours, theirs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asgd_average_and_rates_match_torch(dtype):
    """ASGD's estimate is the average ``ax``; its rates are rounded as PyTorch rounds them."""
    torch = pytest.importorskip("torch")
    kwargs = {"lr": 0.05, "lambd": 0.01, "alpha": 0.5, "t0": 10}
    initial, grads, _ = run_dtrain("SGD", {}, "mlp", dtype, steps=30)  # any 30 gradients
    ours = [nn.Parameter(a.copy()) for a in initial]
    theirs = [torch.tensor(a, requires_grad=True) for a in initial]
    opt = optim.ASGD(ours, **kwargs)
    topt = torch.optim.ASGD(theirs, foreach=False, **kwargs)
    steps_alike(opt, ours, topt, theirs, grads)
    for p, q in zip(ours, theirs):
        mine, ref = opt.state[p], topt.state[q]
        assert float(mine["eta"]) == ref["eta"].item() and float(mine["mu"]) == ref["mu"].item()
        assert float(mine["mu"]) < 1  # the average moves
        np.testing.assert_allclose(mine["ax"], ref["ax"].numpy(), rtol=RTOL[dtype],
                                   atol=ATOL[dtype] * np.abs(ref["ax"].numpy()).max())


@pytest.mark.parametrize("shape", [(), (3,), (2, 3, 4), (2, 1, 2, 5)])
def test_adafactor_factors_the_last_two_dimensions_like_torch(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    start = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(20)]
    ours, theirs = nn.Parameter(start.copy()), torch.tensor(start, requires_grad=True)
    opt, topt = optim.Adafactor([ours], lr=0.05), torch.optim.Adafactor([theirs], lr=0.05)
    for g in grads:
        ours.grad, theirs.grad = dtrain.tensor(g), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    np.testing.assert_allclose(ours._data, theirs.detach().numpy(), rtol=1e-12)
    assert {k: np.shape(v) for k, v in opt.state[ours].items()} == \
        {k: tuple(v.shape) for k, v in topt.state[theirs].items()}


def test_nadam_mu_product_is_a_scalar_of_the_parameter_dtype_after_loading():
    p = param([1.0, 2.0], [1.0, 1.0])
    opt = optim.NAdam([p])
    opt.step()
    assert type(opt.state[p]["mu_product"]) is np.float32  # PyTorch's default scalar dtype
    sd = opt.state_dict()
    assert type(sd["state"][0]["mu_product"]) is float  # plain data for dtrain.save
    opt.load_state_dict(sd)
    assert type(opt.state[p]["mu_product"]) is np.float64
    sd["state"][0]["mu_product"] = np.ones(2)
    with pytest.raises(ValueError, match="'mu_product' of parameter 0 must be a number"):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("name", NEW_OPTIMIZERS)
def test_new_optimizers_follow_torch_under_a_scheduler(name):
    """OneCycleLR moves lr (and beta1 where the optimizer has betas) between steps."""
    torch = pytest.importorskip("torch")
    from dtrain.optim import lr_scheduler

    def run(lib, sched_lib, make_param, set_grad):
        params = [make_param(a.copy()) for a in initial]
        opt = getattr(lib, name)(params, lr=0.01)
        sched = sched_lib.OneCycleLR(opt, max_lr=0.05, total_steps=30,
                                     cycle_momentum="betas" in opt.defaults)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                set_grad(p, g)
            opt.step()
            sched.step()
        return params, opt

    initial, grads, _ = run_dtrain(name, {"lr": 0.01}, "quadratic", "float64", steps=30)
    ours, opt = run(optim, lr_scheduler, nn.Parameter,
                    lambda p, g: setattr(p, "grad", dtrain.tensor(g)))
    theirs, topt = run(torch.optim, torch.optim.lr_scheduler,
                       lambda a: torch.tensor(a, requires_grad=True),
                       lambda p, g: setattr(p, "grad", torch.from_numpy(g.copy())))
    assert opt.param_groups[0]["lr"] == topt.param_groups[0]["lr"]
    for q, p in zip(ours, theirs):
        np.testing.assert_allclose(q._data, p.detach().numpy(), rtol=1e-10)


# ---------------------------------------------------------------- LBFGS
def rosenbrock(x: np.ndarray):
    """The Rosenbrock function and its gradient (minimum 0 at (1, 1)), in float64 NumPy."""
    f = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    g = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])
    return f, g


def lbfgs_iterates(lib, kwargs: dict, steps: int):
    """Points after each LBFGS step on Rosenbrock from (-1.5, 2), with NumPy's gradients."""
    x = (nn.Parameter if lib is dtrain else lambda a: lib.tensor(a, requires_grad=True))(
        np.array([-1.5, 2.0]))
    opt = (optim if lib is dtrain else lib.optim).LBFGS([x], **kwargs)

    def closure():
        f, g = rosenbrock(np.array(x._data if lib is dtrain else x.detach().numpy()))
        x.grad = lib.tensor(g)
        return lib.tensor(np.array(f))

    points = []
    for _ in range(steps):
        opt.step(closure)
        points.append(np.array(x._data if lib is dtrain else x.detach().numpy()))
    state = opt.state[x]
    return np.array(points), (state["func_evals"], state["n_iter"])


@pytest.mark.parametrize("kwargs,steps", [
    ({"line_search_fn": "strong_wolfe"}, 4),
    ({"line_search_fn": "strong_wolfe", "history_size": 5}, 5),  # the memory rolls over
    ({"line_search_fn": "strong_wolfe", "max_iter": 1, "max_eval": 25}, 60),
    ({"lr": 0.25}, 6),
    ({"lr": 0.25, "max_iter": 1}, 120),
], ids=["wolfe", "wolfe-history-5", "wolfe-each-iteration", "fixed-step",
        "fixed-step-each-iteration"])
def test_lbfgs_follows_torch_on_rosenbrock(kwargs, steps):
    torch = pytest.importorskip("torch")
    ours, our_counts = lbfgs_iterates(dtrain, kwargs, steps)
    theirs, their_counts = lbfgs_iterates(torch, kwargs, steps)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=0)
    assert our_counts == tuple(int(c) for c in their_counts)
    np.testing.assert_allclose(ours[-1], [1.0, 1.0], atol=1e-4)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_minimises_rosenbrock_through_autograd(line_search_fn):
    x = nn.Parameter(np.array([-1.5, 2.0]))
    opt = optim.LBFGS([x], lr=1.0 if line_search_fn else 0.25, line_search_fn=line_search_fn)

    def closure():
        opt.zero_grad()
        loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        loss.backward()
        return loss

    first = float(opt.step(closure))
    assert first == 12.5  # step returns the loss before its first iteration
    for _ in range(10):
        last = float(opt.step(closure))
    assert last < 1e-8
    np.testing.assert_allclose(x._data, [1.0, 1.0], atol=1e-4)


def test_lbfgs_uses_every_parameter_as_one_vector():
    a, b = nn.Parameter(np.array([3.0, -1.0])), nn.Parameter(np.array([[2.0]]))
    opt = optim.LBFGS([a, b], line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (a * a).sum() * 0.5 + (b * b).sum() * 2.0
        loss.backward()
        return loss

    assert float(opt.step(closure)) == 13.0
    assert float(closure()) < 1e-9
    np.testing.assert_allclose(np.concatenate([a._data, b._data.ravel()]), 0.0, atol=1e-4)
    assert opt.state[a]["n_iter"] >= 1 and b not in opt.state  # global state on the first


def test_lbfgs_requires_a_closure_and_one_group():
    p = param([1.0], [1.0])
    with pytest.raises(TypeError, match="requires a closure"):
        optim.LBFGS([p]).step()
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [p]}, {"params": [param([2.0])]}])
    opt = optim.LBFGS([p])
    with pytest.raises(ValueError, match="parameter groups"):
        opt.add_param_group({"params": [param([2.0])]})
    assert opt.defaults["max_eval"] == 25  # max_iter * 5 // 4


@pytest.mark.parametrize("kwargs,option", [
    ({"lr": -1.0}, "lr"),
    ({"line_search_fn": "armijo"}, "line_search_fn"),
    ({"history_size": 0}, "history_size"),
    ({"max_iter": 0}, "max_iter"),
    ({"tolerance_grad": -1.0}, "tolerance_grad"),
])
def test_lbfgs_invalid_options_raise_naming_the_option(kwargs, option):
    with pytest.raises(ValueError, match=f"Invalid {option}"):
        optim.LBFGS([param([1.0])], **kwargs)


def test_lbfgs_stops_at_once_when_the_gradient_is_zero():
    p = param([1.0])
    opt = optim.LBFGS([p])
    calls = []

    def closure():
        calls.append(1)
        p.grad = dtrain.tensor([0.0])
        return dtrain.tensor(2.0)

    assert float(opt.step(closure)) == 2.0 and len(calls) == 1 and p._data[0] == 1.0
