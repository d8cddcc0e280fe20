"""NonlinearCG: minima against SciPy's CG, first iterations by hand, restarts, options, state."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain
from dtrain import nn, optim

TIGHT = {"tolerance_grad": 1e-10, "tolerance_change": 0.0, "max_iter": 2000, "max_eval": 10000}


def param(values, dtype="float64"):
    return nn.Parameter(np.array(values, dtype=dtype))


# ---------------------------------------------------------------- problems (NumPy, float64)
def extended_rosenbrock(x: np.ndarray):
    """Sum of independent 2-D Rosenbrock pairs and its gradient; minimum 0 at all ones."""
    a, b = x[0::2], x[1::2]
    f = np.sum(100 * (b - a**2) ** 2 + (1 - a) ** 2)
    g = np.empty_like(x)
    g[0::2] = -400 * a * (b - a**2) - 2 * (1 - a)
    g[1::2] = 200 * (b - a**2)
    return f, g


def logistic_data(dtype="float64"):
    """60 noisy, non-separable samples with 3 features: a unique, finite minimum."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = (X @ [1.5, -2.0, 0.5] + 0.3 + rng.standard_normal(60) > 0).astype(np.float64)
    return X.astype(dtype), y.astype(dtype)


def logistic_loss(theta: np.ndarray):
    """Mean binary cross-entropy of logits X w + b, theta = (w, b), and its gradient."""
    X, y = logistic_data()
    z = X @ theta[:3] + theta[3]
    f = np.mean(np.logaddexp(0, z) - y * z)
    r = (1 / (1 + np.exp(-z)) - y) / len(y)
    return f, np.append(X.T @ r, r.sum())


def numpy_closure(x: nn.Parameter, fun):
    """A closure that sets ``x.grad`` from a NumPy (loss, gradient) function."""
    def closure():
        f, g = fun(x._data.copy())
        x.grad = dtrain.tensor(g)
        return dtrain.tensor(np.array(f))
    return closure


def logistic_model(dtype="float64"):
    """(w, b) parameters from zero and a closure through dtrain's autograd."""
    X, y = logistic_data(dtype)
    w, b = param(np.zeros(3), dtype), param(np.zeros(1), dtype)
    Xt, yt, bce = dtrain.tensor(X), dtrain.tensor(y), nn.BCEWithLogitsLoss()

    def closure():
        for p in (w, b):
            p.grad = None
        loss = bce(Xt @ w + b, yt)
        loss.backward()
        return loss
    return [w, b], closure


# ---------------------------------------------------------------- against SciPy
def cg_minimum(problem: str, beta: str):
    """Our minimiser and minimum: one step() call with tight tolerances."""
    if problem == "logistic":
        params, closure = logistic_model()
    else:
        n = 2 if problem == "rosenbrock-2d" else 10
        params = [param(np.tile([-1.2, 1.0], n // 2))]
        closure = numpy_closure(params[0], extended_rosenbrock)
    opt = optim.NonlinearCG(params, beta=beta, **TIGHT)
    opt.step(closure)
    x = np.concatenate([p._data.ravel() for p in params])
    return x, float(closure()), opt.state[params[0]]


def scipy_minimum(problem: str):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    if problem == "logistic":
        fun, x0 = logistic_loss, np.zeros(4)
    else:
        fun = extended_rosenbrock
        x0 = np.tile([-1.2, 1.0], 1 if problem == "rosenbrock-2d" else 5)
    result = scipy_optimize.minimize(fun, x0, jac=True, method="CG",
                                     options={"gtol": 1e-10, "maxiter": 10000})
    return result.x, result.fun


PROBLEMS = ["rosenbrock-2d", "rosenbrock-10d", "logistic"]


@pytest.mark.parametrize("beta", ["polak_ribiere", "fletcher_reeves"])
@pytest.mark.parametrize("problem", PROBLEMS)
def test_reaches_scipys_cg_minimum(problem, beta):
    theirs, their_loss = scipy_minimum(problem)
    ours, our_loss, _ = cg_minimum(problem, beta)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert abs(our_loss - their_loss) <= 1e-9


@pytest.mark.parametrize("beta", ["PR", "FR"])
@pytest.mark.parametrize("problem", PROBLEMS)
def test_converges_to_the_known_minimum(problem, beta):
    ours, our_loss, state = cg_minimum(problem, beta)
    if problem == "logistic":
        # stationary, so the convex minimum; near 1e-9 a step changes the loss (about 0.5) by
        # less than its float64 resolution, and the search stops there
        assert np.abs(logistic_loss(ours)[1]).max() <= 1e-8
    else:
        np.testing.assert_allclose(ours, 1.0, rtol=0, atol=1e-6)
        assert our_loss < 1e-12
    assert state["n_iter"] < 100  # conjugate directions, not a steepest-descent crawl


# ---------------------------------------------------------------- iterations by hand
A = np.diag([1.0, 4.0])  # f(x) = x.A.x / 2, gradient A x, minimum 0 at the origin


def quadratic(x: np.ndarray):
    return 0.5 * x @ A @ x, A @ x


@pytest.mark.parametrize("beta", ["PR", "FR"])
def test_exact_steps_on_a_quadratic_by_hand(beta):
    # From (4, 1): g0 = (4, 4); the exact step along -g0 is g0.g0 / g0.A.g0 = 32 / 80 = 0.4,
    # which the search's cubic finds in one extrapolation, so x1 = (2.4, -0.6), g1 = (2.4, -2.4).
    # g1 is orthogonal to g0, so FR and PR agree: beta = 11.52 / 32 = 0.36, d1 = (-3.84, 0.96);
    # the exact step 11.52 / 18.432 = 0.625 lands on the minimum: CG's n-step termination.
    x = param([4.0, 1.0])
    opt = optim.NonlinearCG([x], beta=beta, max_iter=1, max_eval=10)
    closure = numpy_closure(x, quadratic)
    assert float(opt.step(closure)) == 10.0
    np.testing.assert_allclose(x._data, [2.4, -0.6], rtol=1e-13)
    np.testing.assert_allclose(opt.state[x]["t"], 0.4, rtol=1e-13)
    np.testing.assert_array_equal(opt.state[x]["d"], [-4.0, -4.0])
    opt.step(closure)
    np.testing.assert_allclose(opt.state[x]["d"], [-3.84, 0.96], rtol=1e-13)
    np.testing.assert_allclose(opt.state[x]["t"], 0.625, rtol=1e-12)
    np.testing.assert_allclose(x._data, [0.0, 0.0], atol=1e-13)


def test_search_starts_from_the_quadratic_interpolation_guess():
    # f = 5 x.A.x from (4, 1): f0 = 100; the first trial is lr / |g0|_1 = 0.5 / 80, then the
    # exact step 0.04 to x1 = (2.4, -0.6), f1 = 36, d1 = (-38.4, 9.6), g1.d1 = -1152. The
    # second search first tries lr * 2.02 (f1 - f0) / g1.d1 = 0.5 * 0.112222... along d1.
    x = param([4.0, 1.0])
    points = []
    closure = numpy_closure(x, lambda v: (5 * v @ A @ v, 10 * A @ v))
    opt = optim.NonlinearCG([x], lr=0.5, max_iter=2, max_eval=10)
    opt.step(lambda: points.append(x._data.copy()) or closure())
    np.testing.assert_allclose(points[1], [4 - 40 / 80 * 0.5, 1 - 40 / 80 * 0.5], rtol=1e-14)
    np.testing.assert_allclose(points[2], [2.4, -0.6], rtol=1e-13)
    guess = 0.5 * 2.02 * 64 / 1152
    np.testing.assert_allclose(points[3], [2.4 - 38.4 * guess, -0.6 + 9.6 * guess], rtol=1e-12)


@pytest.mark.parametrize("kwargs,expected", [
    # lr 0.3: x1 = (2.8, -0.2), g1 = (2.8, -0.8); g1.g1 = 8.48, g1.(g1 - g0) = 0.48
    ({"beta": "FR", "lr": 0.3}, [2.8 - 0.3 * 3.86, -0.2 - 0.3 * 0.26]),  # beta 0.265
    ({"beta": "PR", "lr": 0.3}, [2.8 - 0.3 * 2.86, -0.2 + 0.3 * 0.74]),  # beta 0.015
    ({"beta": "PR", "lr": 0.3, "restart_every": 1}, [2.8 - 0.3 * 2.8, -0.2 + 0.3 * 0.8]),
    # lr 0.1: x1 = (3.6, 0.6), g1 = (3.6, 2.4); g1.(g1 - g0) = -5.28 < 0, so PR+ takes beta 0
    ({"beta": "PR", "lr": 0.1}, [3.6 - 0.1 * 3.6, 0.6 - 0.1 * 2.4]),
    ({"beta": "FR", "lr": 0.1}, [3.6 - 0.1 * 5.94, 0.6 - 0.1 * 4.74]),  # beta 0.585
], ids=["FR", "PR", "PR-restart-every-1", "PR-clipped-at-0", "FR-lr-0.1"])
def test_two_fixed_steps_by_hand(kwargs, expected):
    x = param([4.0, 1.0])
    opt = optim.NonlinearCG([x], line_search_fn=None, max_iter=2, max_eval=3,
                            **kwargs)
    calls = []
    closure = numpy_closure(x, quadratic)
    opt.step(lambda: calls.append(1) or closure())
    np.testing.assert_allclose(x._data, expected, rtol=1e-13, atol=1e-15)
    assert len(calls) == 2  # the last iteration's loss would go unused, as in LBFGS
    assert opt.state[x]["func_evals"] == 2 and opt.state[x]["n_iter"] == 2


def test_restarts_when_the_direction_is_not_descent():
    # f = x^2 / 2 from 1 with fixed step 3: x1 = -2, g1 = -2, beta_FR = 4, so -g1 + 4 d0 = -2
    # points uphill (g1.d = 4 > 0); the restart steps along -g1 = 2 instead, to x2 = 4.
    x = param([1.0])
    opt = optim.NonlinearCG([x], beta="FR", lr=3.0, line_search_fn=None, max_iter=2,
                            max_eval=3, restart_every=5)
    opt.step(numpy_closure(x, lambda v: (0.5 * v @ v, v.copy())))
    assert x._data[0] == 4.0 and opt.state[x]["since_restart"] == 1


def test_restarts_every_number_of_parameters_by_default():
    a, b = param([3.0, -1.0]), param([[2.0]])
    opt = optim.NonlinearCG([a, b], max_iter=1, tolerance_grad=0.0, tolerance_change=0.0)

    def closure():
        opt.zero_grad()
        loss = (a * a).sum() * 0.5 + (b * b).sum() * 2.0 + (a[0] * b).sum() * 0.5
        loss.backward()
        return loss

    counts = []
    for _ in range(7):
        opt.step(closure)
        counts.append(opt.state[a]["since_restart"])
    assert counts == [1, 2, 3, 1, 2, 3, 1] and b not in opt.state  # global state on the first


# ---------------------------------------------------------------- API and options
def test_step_returns_the_first_loss_and_minimises_through_autograd():
    x = param([-1.2, 1.0])
    opt = optim.NonlinearCG([x], max_iter=200, max_eval=1000)

    def closure():
        opt.zero_grad()
        loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        loss.backward()
        return loss

    first = opt.step(closure)
    assert isinstance(first, dtrain.Tensor) and np.isclose(float(first), 24.2)
    assert float(closure()) < 1e-9  # the loss changed by less than tolerance_change
    np.testing.assert_allclose(x._data, [1.0, 1.0], atol=1e-4)


def test_beta_aliases_give_identical_runs():
    def run(beta):
        x = param([-1.2, 1.0])
        opt = optim.NonlinearCG([x], beta=beta, max_iter=15)
        opt.step(numpy_closure(x, extended_rosenbrock))
        return x._data

    np.testing.assert_array_equal(run("PR"), run("polak_ribiere"))
    np.testing.assert_array_equal(run("FR"), run("fletcher_reeves"))
    assert not np.array_equal(run("PR"), run("FR"))


def test_requires_a_closure_and_one_group():
    p = param([1.0])
    with pytest.raises(TypeError, match="requires a closure"):
        optim.NonlinearCG([p]).step()
    with pytest.raises(ValueError, match="parameter groups"):
        optim.NonlinearCG([{"params": [p]}, {"params": [param([2.0])]}])
    opt = optim.NonlinearCG([p])
    assert opt.defaults["max_eval"] == 25 and opt.defaults["restart_every"] is None


@pytest.mark.parametrize("kwargs,option", [
    ({"lr": -1.0}, "lr"),
    ({"max_iter": 0}, "max_iter"),
    ({"max_eval": 0}, "max_eval"),
    ({"tolerance_grad": -1.0}, "tolerance_grad"),
    ({"tolerance_change": -1.0}, "tolerance_change"),
    ({"beta": "hestenes_stiefel"}, "beta"),
    ({"restart_every": 0}, "restart_every"),
    ({"restart_every": 2.5}, "restart_every"),
    ({"restart_every": True}, "restart_every"),
    ({"line_search_fn": "armijo"}, "line_search_fn"),
    ({"c1": 0.0}, "c1"),
    ({"c1": 1.0}, "c1"),
    ({"c2": 1e-5}, "c2"),  # below c1
    ({"c2": 1.0}, "c2"),
])
def test_invalid_options_raise_naming_the_option(kwargs, option):
    with pytest.raises(ValueError, match=f"Invalid {option}"):
        optim.NonlinearCG([param([1.0])], **kwargs)


def test_stops_at_once_when_the_gradient_is_zero():
    p = param([1.0])
    calls = []

    def closure():
        calls.append(1)
        p.grad = dtrain.tensor([0.0])
        return dtrain.tensor(2.0)

    assert float(optim.NonlinearCG([p]).step(closure)) == 2.0
    assert len(calls) == 1 and p._data[0] == 1.0


# ---------------------------------------------------------------- checkpoints
def checkpoint_run(kwargs: dict, resume_at: int | None, path=None, steps: int = 6):
    """Logistic regression in float32; with ``resume_at`` the optimizer is rebuilt midway from
    its state_dict, written with ``dtrain.save`` and read back."""
    params, closure = logistic_model("float32")
    opt = optim.NonlinearCG(params, **kwargs)
    for i in range(steps):
        if i == resume_at:
            dtrain.save(opt.state_dict(), path)
            opt = optim.NonlinearCG(params, lr=123.0, beta="FR", c2=0.5)  # to be overwritten
            opt.load_state_dict(dtrain.load(path))
        opt.step(closure)
    return [p._data.copy() for p in params], opt


@pytest.mark.parametrize("kwargs", [
    {"max_iter": 2, "tolerance_change": 0.0, "tolerance_grad": 0.0},
    {"max_iter": 2, "beta": "FR", "restart_every": 3, "c2": 0.3},
    {"max_iter": 3, "lr": 0.5, "line_search_fn": None},
], ids=["PR-wolfe", "FR-wolfe", "fixed-step"])
def test_state_dict_round_trip_continues_identically(kwargs, tmp_path):
    straight, _ = checkpoint_run(kwargs, None)
    resumed, opt = checkpoint_run(kwargs, 3, tmp_path / "cg.dtrain")
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    group = opt.param_groups[0]
    assert group["lr"] == kwargs.get("lr", 1.0)
    assert group["beta"] == kwargs.get("beta", "polak_ribiere")
    state = opt.state_dict()["state"]
    assert set(state) == {0} and set(state[0]) == {
        "d", "t", "prev_flat_grad", "prev_loss", "since_restart", "func_evals", "n_iter"}
    assert 6 <= state[0]["n_iter"] <= 6 * kwargs["max_iter"]
