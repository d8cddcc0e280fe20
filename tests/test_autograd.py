"""The autograd core against PyTorch's semantics: creation, attributes, backward, grad modes.

Every semantic claim is checked by hand-computed values; where torch is installed the same
program also runs under torch and the results are compared.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest

import dtrain
from dtrain.autograd.tensor import Tensor


def both(program: str) -> dict:
    """Run ``program`` with ``m`` bound to dtrain and to torch; their namespaces by name."""
    torch = pytest.importorskip("torch")
    out = {}
    for lib in (dtrain, torch):
        ns = {"m": lib, "np": np}
        exec(program, ns)  # noqa: S102 - the programs are literals in this file
        out[lib.__name__] = ns
    return out


def arr(t) -> np.ndarray:
    """A Tensor of either library as a NumPy array."""
    return t._data if isinstance(t, Tensor) else t.detach().numpy()


# =============================================================================== creation
def test_tensor_infers_dtypes_like_torch():
    assert dtrain.tensor([1, 2]).dtype == dtrain.int64
    assert dtrain.tensor(3).dtype == dtrain.int64
    assert dtrain.tensor([1.0, 2.0]).dtype == dtrain.float32
    assert dtrain.tensor(2.5).dtype == dtrain.float32
    assert dtrain.tensor([1, 2.5]).dtype == dtrain.float32
    assert dtrain.tensor([True, False]).dtype == dtrain.bool
    assert dtrain.tensor(np.zeros(2)).dtype == dtrain.float64  # an array keeps its dtype
    assert dtrain.tensor([1, 2], dtype=dtrain.float64).dtype == dtrain.float64
    assert dtrain.float32 == dtrain.float and dtrain.float64 == dtrain.double


def test_tensor_copies_its_data_and_sets_requires_grad():
    src = np.array([1.0, 2.0])
    t = dtrain.tensor(src, requires_grad=True)
    src[0] = 9.0
    assert t._data[0] == 1.0 and t.requires_grad and t.is_leaf
    with pytest.raises(RuntimeError, match="floating point"):
        dtrain.tensor([1, 2], requires_grad=True)


@pytest.mark.parametrize(
    "make, shape, dtype",
    [
        (lambda: dtrain.zeros(2, 3), (2, 3), dtrain.float32),
        (lambda: dtrain.zeros((2, 3)), (2, 3), dtrain.float32),
        (lambda: dtrain.ones(4), (4,), dtrain.float32),
        (lambda: dtrain.ones(2, 1, dtype=dtrain.float64), (2, 1), dtrain.float64),
        (lambda: dtrain.full((2, 2), 1.5), (2, 2), dtrain.float32),
        (lambda: dtrain.full((3,), 7), (3,), dtrain.int64),
        (lambda: dtrain.arange(5), (5,), dtrain.int64),
        (lambda: dtrain.arange(1, 7, 2), (3,), dtrain.int64),
        (lambda: dtrain.arange(0.0, 1.0, 0.25), (4,), dtrain.float32),
        (lambda: dtrain.rand(3, 2), (3, 2), dtrain.float32),
        (lambda: dtrain.randn((4,)), (4,), dtrain.float32),
        (lambda: dtrain.randn(2, dtype=dtrain.float64), (2,), dtrain.float64),
        (lambda: dtrain.zeros_like(dtrain.arange(3)), (3,), dtrain.int64),
        (lambda: dtrain.ones_like(dtrain.zeros(2, 2, dtype=dtrain.float64)), (2, 2), dtrain.float64),
    ],
)
def test_factories_shapes_and_dtypes(make, shape, dtype):
    t = make()
    assert t.shape == shape and t.dtype == dtype and not t.requires_grad


def test_factory_values():
    np.testing.assert_array_equal(dtrain.zeros(2)._data, [0.0, 0.0])
    np.testing.assert_array_equal(dtrain.ones(2)._data, [1.0, 1.0])
    np.testing.assert_array_equal(dtrain.full((2,), 1.5)._data, [1.5, 1.5])
    np.testing.assert_array_equal(dtrain.arange(1, 7, 2)._data, [1, 3, 5])
    np.testing.assert_array_equal(dtrain.arange(0.0, 1.0, 0.25)._data, [0.0, 0.25, 0.5, 0.75])
    u = dtrain.rand(1000)._data
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.05
    n = dtrain.randn(4000)._data
    assert abs(n.mean()) < 0.1 and abs(n.std() - 1.0) < 0.1
    assert dtrain.ones(2, requires_grad=True).requires_grad


def test_factories_match_torch():
    ns = both("r = [m.zeros(2, 3), m.ones(3), m.full((2,), 2.5), m.arange(5), m.arange(0., 1., .25),"
              " m.arange(1, 7, 2), m.zeros_like(m.arange(3)), m.ones_like(m.ones(2, dtype=m.float64))]")
    for a, b in zip(ns["dtrain"]["r"], ns["torch"]["r"]):
        assert a.dtype == np.dtype(str(b.dtype).removeprefix("torch."))
        np.testing.assert_array_equal(arr(a), arr(b))


def test_from_numpy_shares_memory_both_ways():
    a = np.arange(4.0)
    t = dtrain.from_numpy(a)
    assert t.dtype == dtrain.float64
    a[0] = 10.0
    assert t._data[0] == 10.0
    t._data[1] = -1.0
    assert a[1] == -1.0
    assert np.shares_memory(t.numpy(), a)
    with pytest.raises(TypeError, match="expected np.ndarray"):
        dtrain.from_numpy([1.0, 2.0])


def test_manual_seed_makes_random_tensors_repeat():
    dtrain.manual_seed(123)
    a, b = dtrain.rand(5), dtrain.randn(2, 3)
    dtrain.manual_seed(123)
    np.testing.assert_array_equal(dtrain.rand(5)._data, a._data)
    np.testing.assert_array_equal(dtrain.randn(2, 3)._data, b._data)
    dtrain.manual_seed(124)
    assert not np.array_equal(dtrain.rand(5)._data, a._data)


# ============================================================================= attributes
def test_basic_attributes():
    t = dtrain.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    assert isinstance(t._data, np.ndarray)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == dtrain.float32
    assert t.grad is None and t.grad_fn is None and t.is_leaf and t.requires_grad
    y = t * 2
    assert not y.is_leaf and y.grad_fn.name() == "MulBackward0" and y.requires_grad
    assert t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert t[1, 2].item() == 6.0 and isinstance(t[1, 2].item(), float)
    assert dtrain.tensor([7]).item() == 7 and isinstance(dtrain.tensor([7]).item(), int)
    with pytest.raises(RuntimeError, match="6 elements cannot be converted to Scalar"):
        t.item()
    y.sum().backward()
    assert isinstance(t.grad, Tensor) and t.grad.shape == t.shape


def test_numpy_shares_memory_and_refuses_tensors_that_require_grad():
    t = dtrain.tensor([1.0, 2.0])
    t.numpy()[0] = 5.0
    assert t.tolist() == [5.0, 2.0]
    r = dtrain.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Use tensor.detach\(\).numpy\(\) instead"):
        r.numpy()
    assert np.shares_memory(r.detach().numpy(), r._data)


def test_requires_grad_is_settable_on_leaves_only():
    t = dtrain.tensor([1.0, 2.0])
    t.requires_grad = True
    assert t.requires_grad
    assert t.requires_grad_(False) is t and not t.requires_grad
    assert t.requires_grad_() is t and t.requires_grad
    y = t * 2
    for value in (False, True):
        with pytest.raises(RuntimeError, match="only change requires_grad flags of leaf variables"):
            y.requires_grad = value
    with pytest.raises(RuntimeError, match="var_no_grad = var.detach()"):
        y.requires_grad_(False)
    assert y.requires_grad_(True) is y  # torch allows asking a non-leaf for what it has


def test_requires_grad_rules_match_torch():
    ns = both(
        "x = m.tensor([1., 2.], requires_grad=True); y = x * 2\n"
        "errors = []\n"
        "for stmt in ('y.requires_grad = True', 'y.requires_grad = False',"
        " 'y.requires_grad_(True)', 'y.requires_grad_(False)', 'x.requires_grad = False'):\n"
        "    try:\n"
        "        exec(stmt)\n"
        "        errors.append(None)\n"
        "    except RuntimeError as e:\n"
        "        errors.append(str(e).split('.')[0])\n"
    )
    assert ns["dtrain"]["errors"] == ns["torch"]["errors"]


REPRS = [
    "m.tensor([1., 2.], requires_grad=True)",
    "m.tensor([1., 2.], requires_grad=True).sum()",
    "m.tensor([1., 2.], dtype=m.float64)",
    "m.tensor([1., 2.], dtype=m.float64, requires_grad=True)",
    "m.tensor([1., 2.], dtype=m.float64, requires_grad=True) * 2",
    "m.tensor(3.)",
    "m.tensor(2.5, dtype=m.float64)",
    "m.tensor([1.5, 2.25])",
    "m.tensor([0., -1.5, 100.])",
    "m.tensor([1e-8, 1.])",
    "m.tensor([1., 1e5])",
    "m.tensor([1e10, 1.])",
    "m.tensor([float('nan'), float('inf'), 1.])",
    "m.tensor([float('nan'), -2.5])",
    "m.tensor([0., 0.])",
    "m.tensor([[1., 2.], [3., 4.]])",
    "m.tensor([[1.5, -2.], [3., 40.]], requires_grad=True).exp()",
    "m.arange(12).reshape(3, 4)",
    "m.arange(24).reshape(2, 3, 4)",
    "m.tensor([1, -20, 300])",
    "m.tensor([1, 2], dtype=m.int32)",
    "m.tensor([True, False])",
    "m.arange(30.) / 7",
    "m.arange(2000.)",
    "m.arange(1200.).reshape(40, 30)",
    "m.arange(5000.).reshape(10, 10, 50) / 3",
    "(m.arange(14., dtype=m.float64) / 3).requires_grad_()",
    "m.tensor([-0., 1.])",
    "m.tensor([])",
    "m.zeros(0, 3)",
    "m.tensor([], dtype=m.int64)",
]


@pytest.mark.parametrize("expr", REPRS)
def test_repr_matches_torch(expr):
    ns = both(f"r = repr({expr})")
    assert ns["dtrain"]["r"] == ns["torch"]["r"].replace("torch.", "dtrain.")


def test_repr_by_hand():
    assert repr(dtrain.tensor([1.0, 2.0], requires_grad=True)) == (
        "tensor([1., 2.], requires_grad=True)")
    assert repr(dtrain.tensor([1.0, 2.0], requires_grad=True).sum()) == (
        "tensor(3., grad_fn=<SumBackward0>)")
    assert repr(dtrain.tensor([1.0, 2.0], dtype=dtrain.float64)) == (
        "tensor([1., 2.], dtype=dtrain.float64)")
    assert repr(dtrain.tensor([1.5, 2.25])) == "tensor([1.5000, 2.2500])"
    assert repr(dtrain.tensor([1e-8, 1.0])) == "tensor([1.0000e-08, 1.0000e+00])"
    assert repr(dtrain.tensor([[1, 2], [3, 4]])) == "tensor([[1, 2],\n        [3, 4]])"


# ============================================================================== backward
def test_scalar_backward_needs_no_gradient():
    x = dtrain.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad._data, [2.0, -4.0, 6.0])


def test_non_scalar_backward_without_gradient_raises():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        (x * 2).backward()


def test_backward_with_a_gradient_of_the_wrong_shape_names_both_shapes():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape of \(3,\).*shape of \(2,\)"):
        (x * 2).backward(dtrain.tensor([1.0, 1.0, 1.0]))


def test_backward_with_gradient_is_a_vector_jacobian_product():
    """The classic VJP: y = W x, backward(v) gives x.grad = W^T v and W.grad = v x^T."""
    w = dtrain.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    x = dtrain.tensor([0.5, -1.0], requires_grad=True)
    v = dtrain.tensor([1.0, 0.0, -2.0])
    (w @ x).backward(gradient=v)
    np.testing.assert_allclose(x.grad._data, w._data.T @ v._data)
    np.testing.assert_allclose(w.grad._data, np.outer(v._data, x._data))


def test_backward_accepts_array_and_list_gradients():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).backward(np.array([1.0, 2.0], dtype=np.float32))
    np.testing.assert_array_equal(x.grad._data, [3.0, 6.0])


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad._data, [5.0, 5.0])
    x.grad.zero_()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad._data, [3.0, 3.0])
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad._data, [2.0, 4.0])


def test_second_backward_through_a_freed_graph_raises_unless_retained():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()
    z = (x * x).sum()
    x.grad = None
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_array_equal(x.grad._data, [4.0, 8.0])


def test_backward_on_a_tensor_that_does_not_require_grad_raises():
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad and does "
                                           "not have a grad_fn"):
        dtrain.tensor([1.0, 2.0]).sum().backward()


def test_non_leaf_grad_stays_none_unless_retained():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    z = x * 4
    z.retain_grad()
    (y * z).sum().backward()
    assert y.grad is None
    np.testing.assert_array_equal(z.grad._data, y._data)
    np.testing.assert_array_equal(x.grad._data, 24 * x._data)
    assert z.retains_grad and not y.retains_grad


def test_leaf_grad_does_not_alias_the_upstream_gradient():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    v = dtrain.tensor([1.0, 1.0])
    (x + 0).backward(v)
    x.grad._data += 1
    assert v.tolist() == [1.0, 1.0]


# ============================================================================ grad modes
def test_detach_shares_data_and_has_no_history():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    assert np.shares_memory(d._data, y._data)
    with pytest.raises(RuntimeError, match="does not require grad"):
        d.sum().backward()


def test_detach_stops_gradients():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = x * x.detach()  # only one factor carries gradient
    y.sum().backward()
    np.testing.assert_array_equal(x.grad._data, [1.0, 2.0])


def test_no_grad_context_and_decorator():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    with dtrain.no_grad():
        y = x * 2
        assert not dtrain.is_grad_enabled()
        with dtrain.enable_grad():
            z = x * 2
            assert dtrain.is_grad_enabled()
        assert not dtrain.is_grad_enabled()
    assert dtrain.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None

    @dtrain.no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad and dtrain.is_grad_enabled()


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ValueError), dtrain.no_grad():
        raise ValueError
    assert dtrain.is_grad_enabled()


def test_no_grad_results_do_not_require_grad():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    with dtrain.no_grad():
        outs = [x + 1, x.exp(), x.sum(), x[0], x.reshape(2, 1), x @ x, x.softmax(0)]
    assert all(not o.requires_grad and o.grad_fn is None for o in outs)


def test_no_grad_is_per_thread():
    import threading

    seen = []
    with dtrain.no_grad():
        thread = threading.Thread(target=lambda: seen.append(dtrain.is_grad_enabled()))
        thread.start()
        thread.join(timeout=10)
    assert seen == [True]


# ============================================================================ in-place
def test_in_place_change_of_a_leaf_that_requires_grad_raises():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    for change in (lambda: x.add_(1), lambda: x.mul_(2), lambda: x.zero_(),
                   lambda: x.__setitem__(0, 5.0), lambda: x.__iadd__(1)):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad is being used in "
                                               "an in-place operation"):
            change()
    assert x.tolist() == [1.0, 2.0]


def test_in_place_change_of_a_leaf_under_no_grad_is_allowed():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    with dtrain.no_grad():
        x.add_(1)
        x -= 0.5
        x[0] = 0.0
    assert x.tolist() == [0.0, 2.5] and x.is_leaf and x.requires_grad


def test_in_place_on_a_non_leaf_keeps_gradients_right():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.add_(1)
    (y * y).sum().backward()
    np.testing.assert_array_equal(x.grad._data, 4 * (2 * x._data + 1))


INPLACE_PROGRAMS = [
    "y = x * 2; y.add_(1); (y * y).sum().backward()",
    "y = x * 2; y.add_(x); y.mul_(x); (y * y).sum().backward()",
    "y = x * 2; y.add_(y); y.sum().backward()",
    "y = x * 2; y += y * 2; y.sum().backward()",
    "y = x * 2; z = y * 3; y.mul_(5); (z + y).sum().backward()",
    "y = x * 2; z = y + 1; y.sub_(x); (z * 2 + y).sum().backward()",
    "y = x * x; y.div_(2); y.sum().backward()",
    "y = x * 1; y[0] = x[1] * 5; y.sum().backward()",
    "y = x * 1; y[1:] *= 3; (y * y).sum().backward()",
    "y = x + 0; y.clamp_(min=1.5); y.pow_(2); y.sum().backward()",
]


@pytest.mark.parametrize("program", INPLACE_PROGRAMS)
def test_in_place_on_non_leaves_matches_torch(program):
    ns = both("x = m.tensor([1., 2., 3.], requires_grad=True)\n" + program)
    np.testing.assert_allclose(arr(ns["dtrain"]["x"].grad), arr(ns["torch"]["x"].grad))
    np.testing.assert_allclose(arr(ns["dtrain"]["y"]), arr(ns["torch"]["y"]))


def test_in_place_on_a_tensor_used_before_keeps_the_earlier_use_right():
    """z was computed from y before y changed in place; z's gradient path must not change."""
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    z = y * 3
    y.mul_(5)
    z.sum().backward()
    np.testing.assert_array_equal(x.grad._data, [6.0, 6.0])


def test_in_place_with_itself_as_operand():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.add_(y)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad._data, [4.0, 4.0])


# ===================================================================== iterative backward
def test_a_chain_of_ten_thousand_ops_backpropagates_without_recursion():
    x = dtrain.tensor([1.0, 2.0], dtype=dtrain.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad._data, [1.0001**10_000] * 2, rtol=1e-9)


def test_a_long_chain_frees_the_graph_as_backward_goes():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y, nodes = x, []
    for i in range(10_000):
        y = y + 1.0
        nodes.append(y.grad_fn)
        if i == 10:
            early = y
    last = weakref.ref(nodes[-1])
    freed_when_reached = []
    early.register_hook(lambda g: freed_when_reached.append(last().backward_fn is None))
    y.sum().backward()
    assert freed_when_reached == [True]  # the output end was freed before the input end ran
    assert all(n.backward_fn is None and n.inputs == () for n in nodes)
    np.testing.assert_array_equal(x.grad._data, [1.0, 1.0])
    del y, nodes, early
    assert last() is None  # nothing else holds on to the graph


def test_a_long_chain_with_retain_graph_runs_twice():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y + 1.0
    y.sum().backward(retain_graph=True)
    y.backward(dtrain.ones(2))
    np.testing.assert_array_equal(x.grad._data, [2.0, 2.0])


def test_a_wide_diamond_graph_accumulates_every_path():
    x = dtrain.tensor([1.0], dtype=dtrain.float64, requires_grad=True)
    y = x
    for _ in range(2_000):
        y = y * 0.5 + y * 0.5  # each step has two paths back
    y.backward(dtrain.ones(1, dtype=dtrain.float64))
    np.testing.assert_allclose(x.grad._data, [1.0])


# ========================================================================= autograd.grad
def test_autograd_grad_returns_gradients_without_touching_grad():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    w = dtrain.tensor([3.0, -1.0], requires_grad=True)
    y = (x * w).sum()
    gx, gw = dtrain.autograd.grad(y, [x, w])
    np.testing.assert_array_equal(gx._data, [3.0, -1.0])
    np.testing.assert_array_equal(gw._data, [1.0, 2.0])
    assert x.grad is None and w.grad is None
    assert not gx.requires_grad


def test_autograd_grad_with_grad_outputs_and_intermediate_inputs():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    y = h * 3
    gh, gx = dtrain.autograd.grad(y, (h, x), grad_outputs=dtrain.tensor([1.0, 10.0]))
    np.testing.assert_array_equal(gh._data, [3.0, 30.0])
    np.testing.assert_array_equal(gx._data, [6.0, 120.0])
    assert h.grad is None and x.grad is None


def test_autograd_grad_frees_the_graph_unless_retained():
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    (g1,) = dtrain.autograd.grad(y, x, retain_graph=True)
    (g2,) = dtrain.autograd.grad(y, x)
    np.testing.assert_array_equal(g1._data, g2._data)
    with pytest.raises(RuntimeError, match="second time"):
        dtrain.autograd.grad(y, x)


def test_autograd_grad_unused_input():
    x = dtrain.tensor([1.0], requires_grad=True)
    z = dtrain.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        dtrain.autograd.grad((x * 2).sum(), [x, z])
    gx, gz = dtrain.autograd.grad((x * 2).sum(), [x, z], allow_unused=True)
    assert gx.tolist() == [2.0] and gz is None


AUTOGRAD_GRAD_PROGRAMS = [
    "g = m.autograd.grad((x * x).sum(), x)",
    "h = x.exp(); g = m.autograd.grad((h * x).sum(), [x, h])",
    "y = x.reshape(2, 2) @ x.reshape(2, 2); g = m.autograd.grad(y, x, grad_outputs=m.ones(2, 2))",
    "y = x.softmax(0); g = m.autograd.grad(y, [x], grad_outputs=m.tensor([1., 0., 0., 2.]))",
]


@pytest.mark.parametrize("program", AUTOGRAD_GRAD_PROGRAMS)
def test_autograd_grad_matches_torch(program):
    ns = both("x = m.tensor([1., -2., 3., 0.5], requires_grad=True)\n" + program)
    got, want = ns["dtrain"]["g"], ns["torch"]["g"]
    assert isinstance(got, tuple) and len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(arr(a), arr(b), rtol=1e-6)
    assert ns["dtrain"]["x"].grad is None


# ========================================================================= classic cases
def test_classic_polynomial_gradient():
    """y = sum(x**2 + 2x + 1) has gradient 2x + 2."""
    x = dtrain.tensor([-1.0, 0.0, 2.5], requires_grad=True)
    (x**2 + 2 * x + 1).sum().backward()
    np.testing.assert_allclose(x.grad._data, 2 * x._data + 2)


def test_classic_second_backward_adds_one_everywhere():
    x = dtrain.tensor([-1.0, 0.0, 2.5], requires_grad=True)
    (x**2 + 2 * x + 1).sum().backward()
    dtrain.sum(x).backward()
    np.testing.assert_allclose(x.grad._data, 2 * x._data + 3)


def test_classic_detach_stops_gradients():
    x = dtrain.tensor([3.0], requires_grad=True)
    y = x * x
    (y.detach() * x).sum().backward()
    np.testing.assert_array_equal(x.grad._data, [9.0])


def test_classic_no_grad_gives_requires_grad_false():
    x = dtrain.tensor([3.0], requires_grad=True)
    with dtrain.no_grad():
        y = x * 2
    assert y.requires_grad is False


def test_classic_backward_with_gradient_vector():
    x = dtrain.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).backward(gradient=dtrain.tensor([0.1, 1.0, 10.0]))
    np.testing.assert_allclose(x.grad._data, [0.2, 4.0, 60.0], rtol=1e-6)


def test_classic_repeated_index_gradients_accumulate():
    x = dtrain.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    x[dtrain.tensor([0, 0, 1, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad._data, [[3.0, 3.0], [1.0, 1.0]])
