"""``create_graph=True``: the engine's semantics (torch's), a WGAN-GP gradient penalty and
Hessian-vector products of an MLP loss, against torch and finite differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import numeric_grad

import dtrain
from dtrain import nn
from dtrain.autograd import grad

RNG = np.random.default_rng(5)


def leaf(array) -> dtrain.Tensor:
    return dtrain.tensor(np.array(array, dtype=np.float64), requires_grad=True)


# ------------------------------------------------------------------ engine semantics
def test_grad_with_create_graph_returns_differentiable_gradients():
    x = leaf([1.0, 2.0, 3.0])
    (g,) = grad((x ** 3).sum(), x, create_graph=True)
    assert g.requires_grad and g.grad_fn is not None
    np.testing.assert_allclose(g.detach().numpy(), 3 * x.detach().numpy() ** 2)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.detach().numpy())
    assert x.grad is None


def test_third_order():
    x = leaf([0.5, -1.5])
    (g,) = grad((x ** 4).sum(), x, create_graph=True)
    (h,) = grad(g.sum(), x, create_graph=True)
    (t,) = grad(h.sum(), x)
    np.testing.assert_allclose(t.numpy(), 24 * x.detach().numpy())


def test_gradient_of_a_linear_function_does_not_require_grad():
    x = leaf([1.0, 2.0])
    (g,) = grad((x * 2).sum(), x, create_graph=True)
    assert not g.requires_grad
    np.testing.assert_array_equal(g.numpy(), [2.0, 2.0])


def test_backward_create_graph_warns_and_grad_has_a_graph():
    x = leaf([1.0, 2.0])
    with pytest.warns(UserWarning, match="reference cycle"):
        (x ** 3).sum().backward(create_graph=True)
    assert x.grad.grad_fn is not None and x.grad.grad_fn.name() == "CopyBackwards"
    np.testing.assert_allclose(x.grad.detach().numpy(), [3.0, 12.0])
    first = x.grad
    with pytest.warns(UserWarning):
        (x ** 3).sum().backward(create_graph=True)
    assert x.grad is not first  # accumulated out of place, as torch does with grad mode on
    assert x.grad.grad_fn.name() == "AddBackward0"
    np.testing.assert_allclose(x.grad.detach().numpy(), [6.0, 24.0])
    (h,) = grad(x.grad.sum(), x)
    np.testing.assert_allclose(h.numpy(), [12.0, 24.0])


def test_create_graph_retains_the_graph_by_default():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    grad(y, x, create_graph=True)
    (g,) = grad(y, x)  # the graph survived the first call
    np.testing.assert_allclose(g.numpy(), (np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0]))))
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        grad(y, x)


def test_backward_create_graph_with_inputs_accumulates_only_those():
    x, w = leaf([1.0, 2.0]), leaf([3.0, -1.0])
    with pytest.warns(UserWarning):
        (x * x * w).sum().backward(create_graph=True, inputs=[x])
    assert w.grad is None
    np.testing.assert_allclose(x.grad.detach().numpy(), [6.0, -4.0])
    assert x.grad.requires_grad


def test_grad_outputs_that_require_grad_are_differentiated():
    x, v = leaf([1.0, 2.0]), leaf([0.5, -1.0])
    (g,) = grad(x * x, x, grad_outputs=v, create_graph=True)
    (gv,) = grad(g.sum(), v)
    np.testing.assert_allclose(gv.numpy(), 2 * x.detach().numpy())


def _opaque(a):
    """``a * 2`` as an op with a first-order backward only (no double backward)."""
    from dtrain.autograd.tensor import _op

    return _op(a._data * 2, (a,), lambda g: (g * 2,), "OpaqueBackward0")


def test_grad_stops_at_the_inputs():
    """Only the part of the graph between the outputs and the inputs is differentiated."""
    a = leaf([1.0, 2.0])
    x = _opaque(a)
    (g,) = grad((x ** 3).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), 3 * x.detach().numpy() ** 2)
    with pytest.raises(NotImplementedError, match="OpaqueBackward0"):
        grad((x ** 3).sum(), a, create_graph=True)


def test_unsupported_op_raises_naming_it():
    a = leaf([1.0, 2.0])
    with pytest.raises(NotImplementedError, match="OpaqueBackward0 has no double backward"):
        grad((_opaque(a) ** 2).sum(), a, create_graph=True)
    (g,) = grad((_opaque(a) ** 2).sum(), a)  # first order still works
    np.testing.assert_allclose(g.numpy(), [8.0, 16.0])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_third_derivative_matches_torch(approximate):
    torch = pytest.importorskip("torch")
    values = np.array([0.3, -1.2, 2.0])

    def third(m):
        x = m.tensor(values, requires_grad=True)
        (g,) = m.autograd.grad(m.nn.functional.gelu(x, approximate=approximate).sum(), x,
                               create_graph=True)
        (h,) = m.autograd.grad(g.sum(), x, create_graph=True)
        return m.autograd.grad(h.sum(), x)[0].numpy()

    np.testing.assert_allclose(third(dtrain), third(torch), rtol=1e-10, atol=1e-12)


def test_materialize_grads_and_allow_unused():
    x, z = leaf([1.0, 2.0]), leaf(3.0)
    gx, gz = grad((x * x).sum(), [x, z], create_graph=True, materialize_grads=True)
    assert gz.shape == () and gz.item() == 0.0 and gz.requires_grad
    assert gx.requires_grad
    with pytest.raises(ValueError, match="allow_unused"):
        grad((x * 2).sum(), [x, z], allow_unused=False, materialize_grads=True)
    with pytest.raises(RuntimeError, match="not have been used"):
        grad((x * 2).sum(), [x, z], create_graph=True)
    assert grad((x * 2).sum(), [x, z], allow_unused=True)[1] is None


def test_grad_accepts_a_dict_of_inputs():
    lin = nn.Linear(3, 2).double()
    x = dtrain.tensor(RNG.standard_normal((4, 3)))
    grads = grad(lin(x).pow(2).sum(), dict(lin.named_parameters()), create_graph=True)
    assert list(grads) == ["weight", "bias"]
    assert grads["weight"].shape == (2, 3) and grads["weight"].requires_grad


def test_tensor_hooks_see_graph_gradients():
    x = leaf([1.0, 2.0])
    y = x * x
    seen = []
    y.register_hook(lambda g: seen.append(g) or g * 3)
    (g,) = grad(y.sum() * y.sum(), x, create_graph=True)
    assert len(seen) == 1 and isinstance(seen[0], dtrain.Tensor) and seen[0].requires_grad
    s = (x.detach() ** 2).sum().item()
    np.testing.assert_allclose(g.detach().numpy(), 3 * 2 * s * 2 * x.detach().numpy())


def test_retain_grad_holds_a_graph_gradient():
    x = leaf([1.0, 2.0])
    y = x * x
    y.retain_grad()
    with pytest.warns(UserWarning):
        (y ** 2).sum().backward(create_graph=True)
    assert y.grad.requires_grad
    np.testing.assert_allclose(y.grad.detach().numpy(), 2 * np.array([1.0, 4.0]))


def test_input_modified_in_place_after_use_is_refused():
    x = leaf([1.0, 2.0])
    h = x * 1
    y = h * h
    h.mul_(2)
    with pytest.raises(RuntimeError, match="inplace operation"):
        grad(y.sum(), x, create_graph=True)


def test_dropout_double_backward_uses_the_same_mask():
    x = leaf(RNG.standard_normal(50))
    y = nn.functional.dropout(x, 0.5)
    (g,) = grad((y ** 2).sum(), x, create_graph=True)
    factor = np.where(y.detach().numpy() != 0, 2.0, 0.0)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 2 * factor ** 2)


def test_first_order_path_is_unchanged_by_recording_double_backwards():
    """create_graph=False gives the same bits whether or not a graph backward was run before."""
    torch_free = RNG.standard_normal((8, 5))
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x = dtrain.tensor(torch_free.astype(np.float32))
    target = dtrain.tensor(np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    nn.functional.cross_entropy(model(x), target).backward()
    before = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    grads = grad(nn.functional.cross_entropy(model(x), target), list(model.parameters()),
                 create_graph=True)
    for g, b in zip(grads, before):
        np.testing.assert_allclose(g.detach().numpy(), b, rtol=1e-5, atol=1e-6)
    nn.functional.cross_entropy(model(x), target).backward()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.grad.numpy(), b)


# ------------------------------------------------------------------ WGAN-GP
def _critic(m, kind: str):
    if kind == "linear":
        return m.nn.Sequential(m.nn.Linear(6, 16), m.nn.LeakyReLU(0.2), m.nn.Linear(16, 16),
                               m.nn.LeakyReLU(0.2), m.nn.Linear(16, 1))
    return m.nn.Sequential(m.nn.Conv2d(2, 4, 3, stride=2, padding=1), m.nn.LeakyReLU(0.2),
                           m.nn.Conv2d(4, 8, 3, padding=1), m.nn.LayerNorm([8, 3, 3]),
                           m.nn.LeakyReLU(0.2), m.nn.Flatten(), m.nn.Linear(72, 1))


def _weights(kind: str) -> list:
    rng = np.random.default_rng(3)
    critic = _critic(dtrain, kind).double()
    return [rng.standard_normal(p.shape) * 0.4 for p in critic.parameters()]


def _penalty_step(m, kind, weights, real, fake, eps):
    """The WGAN-GP critic loss; returns (loss value, parameter gradients)."""
    grad_fn = m.autograd.grad
    critic = _critic(m, kind).double()
    with m.no_grad():
        for p, w in zip(critic.parameters(), weights):
            p.copy_(m.tensor(w))
    real, fake, eps = m.tensor(real), m.tensor(fake), m.tensor(eps)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = grad_fn(critic(x_hat).sum(), x_hat, create_graph=True)
    penalty = ((g.reshape(g.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
    loss = critic(fake).mean() - critic(real).mean() + 10 * penalty
    loss.backward()
    return loss.item(), [p.grad.numpy().copy() for p in critic.parameters()]


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_wgan_gp_gradient_penalty_matches_torch(kind):
    torch = pytest.importorskip("torch")
    shape = (5, 6) if kind == "linear" else (5, 2, 5, 5)
    real, fake = RNG.standard_normal(shape), RNG.standard_normal(shape)
    eps = RNG.uniform(size=(5,) + (1,) * (len(shape) - 1))
    weights = _weights(kind)
    loss, grads = _penalty_step(dtrain, kind, weights, real, fake, eps)
    tloss, tgrads = _penalty_step(torch, kind, weights, real, fake, eps)
    assert loss == pytest.approx(tloss, rel=1e-12)
    for g, tg in zip(grads, tgrads):
        np.testing.assert_allclose(g, tg, rtol=1e-9, atol=1e-12)


def test_wgan_gp_penalty_gradient_matches_finite_differences():
    real, fake = RNG.standard_normal((4, 6)), RNG.standard_normal((4, 6))
    eps = RNG.uniform(size=(4, 1))
    weights = _weights("linear")
    _, grads = _penalty_step(dtrain, "linear", weights, real, fake, eps)
    for i in (0, 1, 4):  # the first layer's weight and bias, the last layer's weight

        def loss_at(w, i=i):
            ws = [w if j == i else v for j, v in enumerate(weights)]
            return _penalty_step(dtrain, "linear", ws, real, fake, eps)[0]

        np.testing.assert_allclose(grads[i], numeric_grad(loss_at, weights[i].copy()),
                                   rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ Hessian-vector products
def _mlp_loss(m, params, x, y):
    w1, b1, w2, b2 = params
    h = m.tanh(x @ w1.T + b1)
    return m.nn.functional.cross_entropy(h @ w2.T + b2, y)


def _hvp(m, params_np, vec_np, x, y):
    params = [m.tensor(p, requires_grad=True) for p in params_np]
    loss = _mlp_loss(m, params, m.tensor(x), m.tensor(y))
    grads = m.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * m.tensor(v)).sum() for g, v in zip(grads, vec_np))
    return [h.numpy() for h in m.autograd.grad(dot, params)]


def _mlp_problem():
    rng = np.random.default_rng(9)
    params = [rng.standard_normal((6, 4)), rng.standard_normal(6), rng.standard_normal((3, 6)),
              rng.standard_normal(3)]
    vec = [rng.standard_normal(p.shape) for p in params]
    return params, vec, rng.standard_normal((10, 4)), rng.integers(0, 3, 10)


def test_mlp_hessian_vector_product_matches_torch():
    torch = pytest.importorskip("torch")
    params, vec, x, y = _mlp_problem()
    for h, th in zip(_hvp(dtrain, params, vec, x, y), _hvp(torch, params, vec, x, y)):
        np.testing.assert_allclose(h, th, rtol=1e-10, atol=1e-12)


def test_mlp_hessian_vector_product_matches_finite_differences():
    params, vec, x, y = _mlp_problem()
    hvp = _hvp(dtrain, params, vec, x, y)

    def grad_dot(t):
        ps = [dtrain.tensor(p + t * v, requires_grad=True) for p, v in zip(params, vec)]
        return [g.numpy() for g in grad(_mlp_loss(dtrain, ps, dtrain.tensor(x),
                                                  dtrain.tensor(y)), ps)]

    h = 1e-5
    for got, hi, lo in zip(hvp, grad_dot(h), grad_dot(-h)):  # H v = d/dt grad(p + t v)
        np.testing.assert_allclose(got, (hi - lo) / (2 * h), rtol=1e-5, atol=1e-7)


def test_backward_frees_the_saved_values_of_both_backwards():
    import gc
    import weakref

    x = leaf(RNG.standard_normal(4))
    h = x.exp()
    y = (h * h).sum()
    node = h.grad_fn
    watch = weakref.ref(h)
    del h
    y.backward()
    assert node.backward_fn is None and node.graph_fn is None
    gc.collect()
    assert watch() is None  # nothing but the graph held it, and the graph let it go


@pytest.mark.parametrize("kind, options", [("RNN", {}), ("RNN", {"nonlinearity": "relu"}),
                                           ("LSTM", {"num_layers": 2}),
                                           ("GRU", {"bidirectional": True})])
def test_recurrent_critic_penalty_matches_torch(kind, options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x_np = rng.standard_normal((3, 4, 2))

    def step(m):
        critic = getattr(m.nn, kind)(2, 3, batch_first=True, **options).double()
        with m.no_grad():
            for p in critic.parameters():
                p.copy_(m.tensor(np.random.default_rng(p.numel()).standard_normal(p.shape)))
        x = m.tensor(x_np, requires_grad=True)
        (g,) = m.autograd.grad(critic(x)[0].tanh().sum(), x, create_graph=True)
        ((g.reshape(3, -1).norm(2, dim=1) - 1) ** 2).mean().backward()
        return [p.grad.numpy() for p in critic.parameters()] + [x.grad.numpy()]

    for mine, theirs in zip(step(dtrain), step(torch)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-12)


def test_grads_batched_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x_np, v_np = rng.standard_normal(3), rng.standard_normal((4, 2, 3))

    def batched(m):
        x = m.tensor(x_np, requires_grad=True)
        y = m.stack([x.exp() * x.sum(), x.tanh()])
        (g,) = m.autograd.grad(y, x, m.tensor(v_np), is_grads_batched=True)
        return g.numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's vmap warns about jit
        theirs = batched(torch)
    np.testing.assert_allclose(batched(dtrain), theirs, rtol=1e-12)
