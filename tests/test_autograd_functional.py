"""``dtrain.autograd.functional`` (torch.autograd.functional): jacobian, hessian, vjp, jvp, hvp,
vhp against torch (values, return structures, requires_grad) and against finite differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import numeric_grad

import dtrain
import dtrain.autograd.functional as AF

RNG = np.random.default_rng(21)
X, Y = RNG.standard_normal(3), RNG.standard_normal((2, 3))
VX, VY = RNG.standard_normal(3), RNG.standard_normal((2, 3))
VOUT = (RNG.standard_normal(2), RNG.standard_normal((2, 3)))


def one_to_one(m, x):
    return (x.exp() * x.sum()).tanh()


def two_to_two(m, x, y):
    return (y @ x).sigmoid(), (x ** 3).sum() * y


def scalar_one(m, x):
    return (x.exp() * x.sum()).tanh().sum() * x.norm()


def scalar_two(m, x, y):
    return (y @ x).sigmoid().sum() * (x ** 3).sum() + (y ** 4).sum()


def _tensors(m, value):
    if isinstance(value, tuple):
        return tuple(m.tensor(v) for v in value)
    return m.tensor(value)


def _run(m, name, fn, inputs, *args, **kwargs):
    module = AF if m is dtrain else pytest.importorskip("torch").autograd.functional
    with warnings.catch_warnings():
        # torch's forward mode goes through its vmap, which warns about torch.jit.script
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(module, name)(lambda *t: fn(m, *t), _tensors(m, inputs),
                                     *(_tensors(m, a) for a in args), **kwargs)


def _same(mine, theirs, path="result"):
    if isinstance(theirs, (tuple, list)):
        assert type(mine) is type(theirs) and len(mine) == len(theirs), (path, mine)
        for i, (a, b) in enumerate(zip(mine, theirs)):
            _same(a, b, f"{path}[{i}]")
        return
    assert isinstance(mine, dtrain.Tensor), path
    assert tuple(mine.shape) == tuple(theirs.shape), (path, mine.shape, theirs.shape)
    assert mine.requires_grad == theirs.requires_grad, path
    np.testing.assert_allclose(mine.detach().numpy(), theirs.detach().numpy(), rtol=1e-10,
                               atol=1e-12, err_msg=path)


CASES = [
    ("jacobian", one_to_one, X, (), {}),
    ("jacobian", two_to_two, (X, Y), (), {}),
    ("jacobian", two_to_two, (X, Y), (), {"create_graph": True}),
    ("jacobian", two_to_two, (X, Y), (), {"vectorize": True}),
    ("jacobian", two_to_two, (X, Y), (), {"vectorize": True, "strategy": "forward-mode"}),
    ("jacobian", one_to_one, X, (), {"vectorize": True, "strategy": "forward-mode"}),
    ("hessian", scalar_one, X, (), {}),
    ("hessian", scalar_two, (X, Y), (), {}),
    ("hessian", scalar_two, (X, Y), (), {"create_graph": True}),
    ("vjp", one_to_one, X, (VX,), {}),
    ("vjp", two_to_two, (X, Y), (VOUT,), {}),
    ("vjp", two_to_two, (X, Y), (VOUT,), {"create_graph": True}),
    ("vjp", scalar_one, X, (), {}),
    ("jvp", one_to_one, X, (VX,), {}),
    ("jvp", two_to_two, (X, Y), ((VX, VY),), {}),
    ("jvp", two_to_two, (X, Y), ((VX, VY),), {"create_graph": True}),
    ("hvp", scalar_one, X, (VX,), {}),
    ("hvp", scalar_two, (X, Y), ((VX, VY),), {}),
    ("hvp", scalar_two, (X, Y), ((VX, VY),), {"create_graph": True}),
    ("vhp", scalar_one, X, (VX,), {}),
    ("vhp", scalar_two, (X, Y), ((VX, VY),), {"create_graph": True}),
]


@pytest.mark.parametrize("name, fn, inputs, args, kwargs", CASES)
def test_against_torch(name, fn, inputs, args, kwargs):
    pytest.importorskip("torch")
    _same(_run(dtrain, name, fn, inputs, *args, **kwargs),
          _run(__import__("torch"), name, fn, inputs, *args, **kwargs))


def test_forward_mode_hessian_values_match_torch():
    """torch leaves its forward-mode Hessian attached to a graph; the values are what count."""
    torch = pytest.importorskip("torch")
    mine = _run(dtrain, "hessian", scalar_two, (X, Y), vectorize=True,
                outer_jacobian_strategy="forward-mode")
    theirs = _run(torch, "hessian", scalar_two, (X, Y), vectorize=True,
                  outer_jacobian_strategy="forward-mode")
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(mine[i][j].numpy(), theirs[i][j].detach().numpy(),
                                       rtol=1e-10, atol=1e-12)


def _numpy_fn(fn, k, arrays):
    """``fn`` as a function of its k-th input array, flattened outputs concatenated."""
    def f(a):
        args = [a if i == k else b for i, b in enumerate(arrays)]
        out = fn(dtrain, *[dtrain.tensor(v) for v in args])
        outs = out if isinstance(out, tuple) else (out,)
        return np.concatenate([o.numpy().reshape(-1) for o in outs])
    return f


def test_jacobian_matches_finite_differences():
    jac = AF.jacobian(lambda x, y: two_to_two(dtrain, x, y), (dtrain.tensor(X), dtrain.tensor(Y)))
    for k, a in enumerate((X, Y)):
        f = _numpy_fn(two_to_two, k, [X, Y])
        for row in range(8):
            expected = numeric_grad(lambda v, f=f, row=row: f(v)[row], a.copy())
            out_i, flat = (0, row) if row < 2 else (1, row - 2)
            got = jac[out_i][k].numpy().reshape(-1 if out_i == 0 else 6, *a.shape)[flat]
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_hessian_matches_finite_differences_of_the_gradient():
    hess = AF.hessian(lambda x, y: scalar_two(dtrain, x, y), (dtrain.tensor(X), dtrain.tensor(Y)))
    for i, a in enumerate((X, Y)):
        for j, b in enumerate((X, Y)):
            def grad_i(v, i=i, j=j):
                args = [dtrain.tensor(v if k == j else c, requires_grad=True)
                        for k, c in enumerate((X, Y))]
                (g,) = dtrain.autograd.grad(scalar_two(dtrain, *args), args[i])
                return g.numpy()

            for e in range(a.size):
                expected = numeric_grad(lambda v, g=grad_i, e=e: g(v).reshape(-1)[e], b.copy())
                np.testing.assert_allclose(hess[i][j].numpy().reshape(a.size, *b.shape)[e],
                                           expected, rtol=1e-6, atol=1e-7)


def test_jvp_and_hvp_match_jacobian_and_hessian_products():
    x, y = dtrain.tensor(X), dtrain.tensor(Y)
    jac = AF.jacobian(lambda a, b: two_to_two(dtrain, a, b)[0], (x, y))
    expected = jac[0].numpy() @ VX + np.einsum("oij,ij->o", jac[1].numpy(), VY)
    got = AF.jvp(lambda a, b: two_to_two(dtrain, a, b)[0], (x, y),
                 (dtrain.tensor(VX), dtrain.tensor(VY)))[1]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    hess = AF.hessian(lambda a: scalar_one(dtrain, a), x).numpy()
    _, hv = AF.hvp(lambda a: scalar_one(dtrain, a), x, dtrain.tensor(VX))
    _, vh = AF.vhp(lambda a: scalar_one(dtrain, a), x, dtrain.tensor(VX))
    np.testing.assert_allclose(hv.numpy(), hess @ VX, rtol=1e-10)
    np.testing.assert_allclose(vh.numpy(), VX @ hess, rtol=1e-10)


def test_independent_inputs_give_zeros_or_strict_errors():
    x, y = dtrain.tensor(X), dtrain.tensor(Y)
    _, (_, gy) = AF.vjp(lambda a, b: (a * 2).sum(), (x, y))
    assert not gy.numpy().any() and gy.shape == y.shape
    with pytest.raises(RuntimeError, match="independent of input 1"):
        AF.vjp(lambda a, b: (a * 2).sum(), (x, y), strict=True)
    with pytest.raises(RuntimeError, match="independent of input 1"):
        AF.jacobian(lambda a, b: a * 2, (x, y), strict=True)
    hess = AF.hessian(lambda a: (a * 2).sum(), x)
    assert not hess.numpy().any()
    with pytest.raises(RuntimeError, match="jacobian of the user-provided function"):
        AF.hessian(lambda a: (a * 2).sum(), x, strict=True)


def test_argument_errors_as_torch():
    x = dtrain.tensor(X)
    with pytest.raises(TypeError, match="must be either a Tensor or a tuple of Tensors"):
        AF.jacobian(lambda a: a, [x])
    with pytest.raises(RuntimeError, match="v can only be None"):
        AF.vjp(lambda a: a * 2, x)
    with pytest.raises(RuntimeError, match="v has invalid size"):
        AF.vjp(lambda a: a * 2, x, dtrain.tensor(np.ones(2)))
    with pytest.raises(RuntimeError, match="should return a single Tensor"):
        AF.hvp(lambda a: (a.sum(), a.sum()), x, x)
    with pytest.raises(RuntimeError, match="should contain a single element"):
        AF.hessian(lambda a: a * 2, x)
    with pytest.raises(NotImplementedError, match="create_graph"):
        AF.jacobian(lambda a: a * 2, x, create_graph=True, strategy="forward-mode")
    with pytest.raises(NotImplementedError, match="vectorize=True"):
        AF.jacobian(lambda a: a * 2, x, strategy="forward-mode")
    with pytest.raises(AssertionError, match="forward-mode"):
        AF.jacobian(lambda a: a * 2, x, strategy="sideways")


def test_inputs_are_not_modified_and_results_are_detached():
    x = dtrain.tensor(X, requires_grad=True)
    jac = AF.jacobian(lambda a: a ** 2, x)
    assert not jac.requires_grad and x.grad is None
    jac = AF.jacobian(lambda a: a ** 2, x, create_graph=True)
    assert jac.requires_grad
    (g,) = dtrain.autograd.grad(jac.sum(), x)  # differentiable with respect to the caller's x
    np.testing.assert_allclose(g.numpy(), np.full(3, 2.0))


def test_function_forms_still_live_beside_the_derivatives():
    assert AF.add(dtrain.tensor([1.0]), dtrain.tensor([2.0]), alpha=3).item() == 7.0
    assert dtrain.autograd.functional is AF
