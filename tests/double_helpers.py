"""Check an op's double backward (``create_graph=True``) against PyTorch and finite differences.

One line per case, as ``helpers.check``: ``check_double(lambda m, x, y: x * y, (3, 4), (4,))``.
For random upstream ``u`` and probes ``v_i`` the first derivatives ``g_i = d(u . f)/dx_i`` are
taken with ``create_graph=True``; then the second derivatives ``h_j = d(sum_i v_i . g_i)/dx_j``.
Both are compared with torch, and ``h_j`` with central finite differences of the first-order
gradients (``create_graph=False``), so the check means something without torch too.
"""

from __future__ import annotations

import numpy as np
from helpers import _differentiable, _wrap, make_inputs, numeric_grad, torch

import dtrain


def _grads(lib, fn, arrays, upstream, probes):
    """(first derivatives with a graph, second derivatives) of ``fn`` with ``lib``."""
    grad = dtrain.autograd.grad if lib is dtrain else torch.autograd.grad
    tensors = [_wrap(lib, a, _differentiable(a)) for a in arrays]
    diff = [t for t, a in zip(tensors, arrays) if _differentiable(a)]
    out = fn(lib, *tensors)
    firsts = grad(out, diff, lib.tensor(upstream), create_graph=True, allow_unused=True)
    total = None
    for g, v in zip(firsts, probes):
        if g is not None and g.requires_grad:
            term = (g * lib.tensor(v)).sum()
            total = term if total is None else total + term
    if total is None:
        seconds = [None] * len(diff)
    else:
        seconds = list(grad(total, diff, allow_unused=True))
    diff_arrays = [a for a in arrays if _differentiable(a)]
    return ([_dense(g, a) for g, a in zip(firsts, diff_arrays)],
            [_dense(h, a) for h, a in zip(seconds, diff_arrays)])


def _dense(t, like: np.ndarray) -> np.ndarray:
    return np.zeros_like(like) if t is None else t.detach().numpy().copy()


def _first_order(fn, arrays, upstream) -> list:
    """The gradients by the ordinary (create_graph=False) backward."""
    tensors = [_wrap(dtrain, a, _differentiable(a)) for a in arrays]
    diff = [t for t, a in zip(tensors, arrays) if _differentiable(a)]
    out = fn(dtrain, *tensors)
    grads = dtrain.autograd.grad(out, diff, dtrain.tensor(upstream), allow_unused=True)
    return [_dense(g, a) for g, a in zip(grads, [a for a in arrays if _differentiable(a)])]


def check_double(fn, *specs, vs_torch: bool = True, fd: bool = True, atol: float = 1e-7,
                 rtol: float = 1e-7, fd_atol: float = 1e-5, seed: int = 0) -> None:
    """Assert first and second derivatives of ``fn(m, *inputs)`` agree with torch and with
    finite differences of the first-order gradients (float64 inputs)."""
    rng = np.random.default_rng(seed)
    arrays = make_inputs(specs, rng)
    with dtrain.no_grad():
        shape = fn(dtrain, *[_wrap(dtrain, a, False) for a in arrays]).shape
    upstream = rng.standard_normal(tuple(shape))
    diff_arrays = [a for a in arrays if _differentiable(a)]
    probes = [rng.standard_normal(a.shape) for a in diff_arrays]
    firsts, seconds = _grads(dtrain, fn, arrays, upstream, probes)
    plain = _first_order(fn, arrays, upstream)
    for g, p in zip(firsts, plain):  # the create_graph path computes the same gradient
        np.testing.assert_allclose(g, p, atol=1e-10, rtol=1e-10)
    if vs_torch and torch is not None:
        tfirsts, tseconds = _grads(torch, fn, arrays, upstream, probes)
        for mine, theirs in zip(firsts + seconds, tfirsts + tseconds):
            np.testing.assert_allclose(mine, theirs, atol=atol, rtol=rtol)
    if fd:
        positions = [i for i, a in enumerate(arrays) if _differentiable(a)]
        for j, i in enumerate(positions):

            def probe_dot(x, i=i):
                args = [x if k == i else b for k, b in enumerate(arrays)]
                gs = _first_order(fn, args, upstream)
                return float(sum((g * v).sum() for g, v in zip(gs, probes)))

            expected = numeric_grad(probe_dot, arrays[i].copy())
            np.testing.assert_allclose(seconds[j], expected, atol=fd_atol, rtol=1e-4)
