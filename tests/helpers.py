"""Check an op's forward and gradients against PyTorch and central finite differences (float64).

One line per case: ``check(lambda m, x, y: x * y, (3, 4), (4,))``. The op is written once for
both libraries: ``m`` is ``dtrain`` or ``torch``, the other arguments are tensors of that library.
An input given as a shape becomes a random float64 array that requires grad; a float array is
used as given and requires grad; integer and boolean arrays (indices, masks) become tensors
without grad; anything else (Python scalars, tuples) is passed through unchanged.
"""

from __future__ import annotations

import importlib

import numpy as np

import dtrain

try:
    torch = importlib.import_module("torch")
except ImportError:  # the finite-difference half of every check still runs
    torch = None

TORCH_MISSING = ("torch is not installed: compared with finite differences only, not with "
                 "torch (pip install torch to run the comparison)")
# Set by ``check`` when it could not compare with torch; conftest.py then reports the test as
# skipped with TORCH_MISSING (after the whole test, finite differences included, has passed),
# so a run without torch says so instead of passing quietly on half the checks.
torch_skipped: list = []


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar function ``f`` at ``x`` (changed and restored)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f(x)
        flat[i] = old - eps
        lo = f(x)
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return grad


def make_inputs(specs, rng: np.random.Generator) -> list:
    """Random float64 arrays for shape specs; arrays and scalars kept as given."""
    out = []
    for s in specs:
        if isinstance(s, tuple) and all(isinstance(n, int) for n in s):
            out.append(rng.standard_normal(s))
        else:
            out.append(s)
    return out


def _differentiable(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def _wrap(lib, a, requires_grad: bool):
    if not isinstance(a, np.ndarray):
        return a
    if lib is dtrain:
        return dtrain.tensor(a, requires_grad=requires_grad)
    return torch.tensor(a, requires_grad=requires_grad)


def _forward(lib, fn, arrays, grad: bool):
    """``fn`` on fresh ``lib`` tensors; returns (output, input tensors)."""
    tensors = [_wrap(lib, a, grad and _differentiable(a)) for a in arrays]
    return fn(lib, *tensors), tensors


def _backward(lib, out, tensors, arrays, upstream: np.ndarray) -> list:
    """Backpropagate ``upstream``; the gradient of each differentiable input (None for others)."""
    out.backward(lib.tensor(upstream))
    return [t.grad if _differentiable(a) else None for t, a in zip(tensors, arrays)]


def _numpy(t) -> np.ndarray:
    return t.detach().numpy()


def check(fn, *specs, grad: bool = True, fd: bool = True, vs_torch: bool = True,
          atol: float = 1e-6, rtol: float = 1e-6, fd_atol: float = 1e-5, seed: int = 0) -> None:
    """Assert ``fn(m, *inputs)`` agrees between dtrain and torch, and with finite differences.

    The output's gradient is a random upstream array, so the whole vector-Jacobian product is
    checked, not only the gradient of a sum. The inputs are float64 so differences are exact to
    about 1e-9.
    """
    rng = np.random.default_rng(seed)
    arrays = make_inputs(specs, rng)
    out, tensors = _forward(dtrain, fn, arrays, grad)
    upstream = rng.standard_normal(out.shape)
    grads = _backward(dtrain, out, tensors, arrays, upstream) if grad else []
    for a, g in zip(arrays, grads):
        if _differentiable(a):
            assert g is not None, "an input that requires grad received no gradient"
            assert g.shape == a.shape, (g.shape, a.shape)
            assert g.dtype == a.dtype, (g.dtype, a.dtype)
    if vs_torch and torch is None:
        torch_skipped.append(True)
    if vs_torch and torch is not None:
        tout, ttensors = _forward(torch, fn, arrays, grad)
        tgrads = _backward(torch, tout, ttensors, arrays, upstream) if grad else []
        assert tuple(out.shape) == tuple(tout.shape), (out.shape, tuple(tout.shape))
        assert out.dtype == np.dtype(str(tout.dtype).removeprefix("torch.")), (out.dtype,
                                                                                 tout.dtype)
        np.testing.assert_allclose(out._data, _numpy(tout), atol=atol, rtol=rtol)
        for g, tg in zip(grads, tgrads):
            assert (g is None) == (tg is None)
            if g is not None:
                np.testing.assert_allclose(g._data, _numpy(tg), atol=atol, rtol=rtol)
    if grad and fd:
        for i, a in enumerate(arrays):
            if not _differentiable(a):
                continue

            def scalar(x, i=i):
                args = [x if j == i else b for j, b in enumerate(arrays)]
                with dtrain.no_grad():
                    value = fn(dtrain, *[_wrap(dtrain, b, False) for b in args])
                return float((value._data * upstream).sum())

            expected = numeric_grad(scalar, a.copy())
            np.testing.assert_allclose(grads[i]._data, expected, atol=fd_atol, rtol=1e-4)
