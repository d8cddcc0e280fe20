"""Fused recurrences: one graph node per layer and direction of an RNN, LSTM or GRU.

The input projection of every time step is one GEMM before the loop; the loop over time does
one (N, H) x (H, gates) product per step and keeps the gate activations. The backward runs the
loop in reverse (backpropagation through time) collecting the gradients of the gate
pre-activations, then gets the input and weight gradients with one GEMM each. Gate order is
PyTorch's: LSTM (input, forget, cell, output), GRU (reset, update, new).

A kernel returns one array: the hidden state of every step, (T, N, H), and for the LSTM one more
row holding the last cell state. The caller slices the outputs it needs; autograd adds the
gradients of the slices back into the one node.
"""

from __future__ import annotations

import numpy as np

from ..autograd import tensor as _t
from ..autograd.graph_engine import vjp_via
from ..autograd.tensor import Tensor, _op

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _sigmoid(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + exp(-a)) as (1 + tanh(a / 2)) / 2: stable, and tanh is the fast ufunc."""
    out = np.multiply(a, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1])


def recurrence(mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
               b_ih: Tensor | None, b_hh: Tensor | None, reverse: bool = False) -> Tensor:
    """Run one layer and direction over time-major ``x`` (T, N, I) from ``h0`` (N, H).

    ``mode`` is 'RNN_TANH', 'RNN_RELU', 'LSTM' (needs ``c0``) or 'GRU'. ``reverse`` reads the
    sequence backwards (the second direction of a bidirectional layer); the output rows stay in
    input order.
    """
    if mode not in GATES:
        raise ValueError(f"recurrence: mode must be one of {sorted(GATES)}, got {mode!r}")
    if mode == "LSTM" and c0 is None:
        raise ValueError("recurrence: the LSTM needs an initial cell state c0")
    X = x._data[::-1] if reverse else x._data
    Wih, Whh = w_ih._data, w_hh._data
    XW = (_flat(X) @ Wih.T).reshape(X.shape[:2] + (Wih.shape[0],))  # one GEMM for all steps
    if b_ih is not None:
        XW += b_ih._data
    Bhh = b_hh._data if b_hh is not None else None
    if mode == "GRU":
        out, backward = _gru(XW, h0._data, Whh, Bhh)
    elif mode == "LSTM":
        out, backward = _lstm(XW if Bhh is None else XW + Bhh, h0._data, c0._data, Whh)
    else:
        out, backward = _rnn(XW if Bhh is None else XW + Bhh, h0._data, Whh, mode == "RNN_RELU")
    T = X.shape[0]
    named = [("x", x), ("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih),
             ("b_hh", b_hh)]
    named = [(k, t) for k, t in named if t is not None]

    def node_backward(g):
        G = g[:T][::-1] if reverse else g[:T]
        grads = backward(np.ascontiguousarray(G), g[T] if mode == "LSTM" else None)
        dXW = _flat(grads.pop("xw"))
        if x._requires_grad:
            gx = (dXW @ Wih).reshape(X.shape)
            grads["x"] = gx[::-1] if reverse else gx
        if w_ih._requires_grad:
            grads["w_ih"] = dXW.T @ _flat(X)
        if b_ih is not None and b_ih._requires_grad:
            grads["b_ih"] = dXW.sum(axis=0)
        return tuple(grads.get(k) if t._requires_grad else None for k, t in named)

    def decomposition(*tensors):
        return _recurrence_ops(mode, reverse, **dict(zip((k for k, _ in named), tensors)))

    if reverse:  # a new array: the backward closures keep the states in processing order
        out = np.concatenate([out[:T][::-1], out[T:]])
    names = {"LSTM": "LstmBackward0", "GRU": "GruBackward0"}
    inputs = tuple(t for _, t in named)
    return _op(out, inputs, node_backward, names.get(mode, "RnnBackward0"),
               graph=lambda g: vjp_via(decomposition, inputs, g))


def _thirds(a):
    """The three gate blocks of a GRU pre-activation (last dimension)."""
    size = a.shape[-1] // 3
    return tuple(_t.getitem(a, (Ellipsis, slice(k * size, (k + 1) * size))) for k in range(3))


def _recurrence_ops(mode: str, reverse: bool, x, h0, w_ih, w_hh, c0=None, b_ih=None, b_hh=None):
    """The recurrence step by step in differentiable ops (its double backward); the same
    equations and output layout as the fused kernel."""
    steps = x.shape[0]
    order = np.arange(steps)[::-1] if reverse else np.arange(steps)
    xw = _t.matmul(_t.getitem(x, order), _t.transpose(w_ih, 0, 1))
    if b_ih is not None:
        xw = _t.add(xw, b_ih)
    h, c, states = h0, c0, []
    for step in range(steps):
        hw = _t.matmul(h, _t.transpose(w_hh, 0, 1))
        if b_hh is not None:
            hw = _t.add(hw, b_hh)
        a = _t.getitem(xw, step)
        if mode == "GRU":
            (ar, az, an), (hr, hz, hn) = _thirds(a), _thirds(hw)
            r, z = _t.sigmoid(_t.add(ar, hr)), _t.sigmoid(_t.add(az, hz))
            n = _t.tanh(_t.add(an, _t.mul(r, hn)))
            h = _t.add(_t.mul(_t.sub(1, z), n), _t.mul(z, h))
        elif mode == "LSTM":
            i, f, g, o = (_t.getitem(_t.add(a, hw), (Ellipsis, slice(k * h0.shape[-1],
                                                                      (k + 1) * h0.shape[-1])))
                          for k in range(4))
            c = _t.add(_t.mul(_t.sigmoid(f), c), _t.mul(_t.sigmoid(i), _t.tanh(g)))
            h = _t.mul(_t.sigmoid(o), _t.tanh(c))
        else:
            pre = _t.add(a, hw)
            h = _t.relu(pre) if mode == "RNN_RELU" else _t.tanh(pre)
        states.append(h)
    out = _t.stack(states[::-1] if reverse else states, 0)
    return _t.cat([out, _t.unsqueeze(c, 0)], 0) if mode == "LSTM" else out


def _rnn(A_in: np.ndarray, H0: np.ndarray, Whh: np.ndarray, relu: bool):
    """h_t = act(A_in[t] + h_{t-1} W_hh^T), biases already in ``A_in``."""
    T = A_in.shape[0]
    Hs = np.empty(A_in.shape[:2] + (Whh.shape[1],), dtype=A_in.dtype)
    h = H0
    for t in range(T):
        a = A_in[t] + h @ Whh.T
        h = np.maximum(a, 0, out=Hs[t]) if relu else np.tanh(a, out=Hs[t])

    def backward(G, _):
        dA = np.empty_like(Hs)
        gh = np.zeros_like(H0)
        for t in range(T - 1, -1, -1):
            gh = gh + G[t]
            dA[t] = gh * (Hs[t] > 0) if relu else gh * (1 - Hs[t] * Hs[t])
            gh = dA[t] @ Whh
        H_prev = np.concatenate([H0[None], Hs[:-1]])
        return {"xw": dA, "h0": gh, "w_hh": _flat(dA).T @ _flat(H_prev),
                "b_hh": _flat(dA).sum(axis=0)}

    return Hs, backward


def _lstm(A_in: np.ndarray, H0: np.ndarray, C0: np.ndarray, Whh: np.ndarray):
    """LSTM steps; the output has T hidden-state rows and the last cell state as row T."""
    T, N = A_in.shape[:2]
    H = Whh.shape[1]
    out = np.empty((T + 1, N, H), dtype=A_in.dtype)
    gates = np.empty((T, N, 4 * H), dtype=A_in.dtype)  # i, f, g, o after their activations
    Cs = np.empty((T, N, H), dtype=A_in.dtype)
    TCs = np.empty((T, N, H), dtype=A_in.dtype)  # tanh of the cell states
    h, c = H0, C0
    for t in range(T):
        a = A_in[t] + h @ Whh.T
        act = gates[t]
        _sigmoid(a[:, :2 * H], out=act[:, :2 * H])
        np.tanh(a[:, 2 * H:3 * H], out=act[:, 2 * H:3 * H])
        _sigmoid(a[:, 3 * H:], out=act[:, 3 * H:])
        c = np.multiply(act[:, H:2 * H], c, out=Cs[t])
        c += act[:, :H] * act[:, 2 * H:3 * H]
        h = np.multiply(act[:, 3 * H:], np.tanh(c, out=TCs[t]), out=out[t])
    out[T] = c
    Hs = out[:T]

    def backward(G, gc_last):
        # every factor that does not depend on the incoming gradients, for all steps at once
        i, f, g, o = (gates[..., k * H:(k + 1) * H] for k in range(4))
        C_prev = np.concatenate([C0[None], Cs[:-1]])
        through_c = o * (1 - TCs * TCs)  # d h / d c
        ifg = np.stack([g * i * (1 - i), C_prev * f * (1 - f), i * (1 - g * g)], axis=2)
        d_o = TCs * o * (1 - o)
        dA = np.empty_like(gates)
        dA3 = dA.reshape(T, N, 4, H)[:, :, :3]  # a view: the i, f, g blocks of every step
        gh = np.zeros_like(H0)
        gc = np.array(gc_last, dtype=A_in.dtype)
        for t in range(T - 1, -1, -1):
            gh += G[t]
            gc += gh * through_c[t]
            np.multiply(gc[:, None, :], ifg[t], out=dA3[t])
            np.multiply(gh, d_o[t], out=dA[t, :, 3 * H:])
            gc *= f[t]
            gh = dA[t] @ Whh
        H_prev = np.concatenate([H0[None], Hs[:-1]])
        return {"xw": dA, "h0": gh, "c0": gc, "w_hh": _flat(dA).T @ _flat(H_prev),
                "b_hh": _flat(dA).sum(axis=0)}

    return out, backward


def _gru(XW: np.ndarray, H0: np.ndarray, Whh: np.ndarray, Bhh: np.ndarray | None):
    """GRU steps: the hidden projection keeps its own bias inside the reset gate's product."""
    T, N = XW.shape[:2]
    H = Whh.shape[1]
    Hs = np.empty((T, N, H), dtype=XW.dtype)
    gates = np.empty((T, N, 3 * H), dtype=XW.dtype)  # r, z, n after their activations
    HWn = np.empty((T, N, H), dtype=XW.dtype)  # W_hn h + b_hn, which r multiplies
    h = H0
    for t in range(T):
        hw = h @ Whh.T
        if Bhh is not None:
            hw += Bhh
        act = gates[t]
        _sigmoid(XW[t, :, :2 * H] + hw[:, :2 * H], out=act[:, :2 * H])
        r, z = act[:, :H], act[:, H:2 * H]
        HWn[t] = hw[:, 2 * H:]
        n = np.tanh(XW[t, :, 2 * H:] + r * HWn[t], out=act[:, 2 * H:])
        h = n + z * (h - n)
        Hs[t] = h

    def backward(G, _):
        dXW = np.empty_like(gates)
        dHW = np.empty_like(gates)
        gh = np.zeros_like(H0)
        for t in range(T - 1, -1, -1):
            act = gates[t]
            r, z, n = act[:, :H], act[:, H:2 * H], act[:, 2 * H:]
            h_prev = Hs[t - 1] if t else H0
            gh = gh + G[t]
            dn = gh * (1 - z) * (1 - n * n)
            dr = dn * HWn[t] * r * (1 - r)
            dz = gh * (h_prev - n) * z * (1 - z)
            dXW[t, :, :H], dXW[t, :, H:2 * H], dXW[t, :, 2 * H:] = dr, dz, dn
            dHW[t, :, :2 * H] = dXW[t, :, :2 * H]
            dHW[t, :, 2 * H:] = dn * r
            gh = gh * z + dHW[t] @ Whh
        H_prev = np.concatenate([H0[None], Hs[:-1]])
        return {"xw": dXW, "h0": gh, "w_hh": _flat(dHW).T @ _flat(H_prev),
                "b_hh": _flat(dHW).sum(axis=0)}

    return Hs, backward
