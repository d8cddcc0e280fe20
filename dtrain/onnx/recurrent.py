"""Converters for RNN, LSTM and GRU: one ONNX RNN/LSTM/GRU node per layer.

Both directions of a layer are one node (direction='bidirectional'). ONNX orders the gates
differently from PyTorch, so the weights are stored reordered: LSTM (i, f, g, o) becomes
(i, o, f, c) and GRU (r, z, n) becomes (z, r, h); a GRU node uses linear_before_reset=1, which
is PyTorch's formula (the reset gate multiplies W_hn h + b_hn). Between layers the (T, D, N, H)
output is transposed and merged to (T, N, D*H); nothing in the graph fixes T or N.
"""

from __future__ import annotations

import numpy as np

from .registry import converts_layer

NN = "dtrain.nn"
_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN_TANH": [0], "RNN_RELU": [0]}
_OP = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def _reorder(array: np.ndarray, mode: str) -> np.ndarray:
    """Gate blocks along dim 0 from PyTorch's order to ONNX's."""
    blocks = np.split(array, len(_ORDER[mode]), axis=0)
    return np.concatenate([blocks[i] for i in _ORDER[mode]], axis=0)


def _weights(tr, m, directions: list, tag: str) -> list[str]:
    """W, R and (with biases) B initializers from (w_ih, w_hh, b_ih, b_hh) per direction."""
    ws, rs, bs = [], [], []
    for w_ih, w_hh, b_ih, b_hh in directions:
        ws.append(_reorder(w_ih._data, m.mode))
        rs.append(_reorder(w_hh._data, m.mode))
        if b_ih is not None:
            bs.append(np.concatenate([_reorder(b_ih._data, m.mode), _reorder(b_hh._data, m.mode)]))
    prefix = tr.module_names.get(id(m), type(m).__name__)
    names = [tr.g.const(np.stack(ws), name=f"{prefix}.W{tag}"),
             tr.g.const(np.stack(rs), name=f"{prefix}.R{tag}")]
    if bs:
        names.append(tr.g.const(np.stack(bs), name=f"{prefix}.B{tag}"))
    return names


def _attributes(m, directions: int) -> dict:
    attrs = {"hidden_size": m.hidden_size,
             "direction": "bidirectional" if directions == 2 else "forward"}
    if m.mode.startswith("RNN"):
        attrs["activations"] = ["Relu" if m.mode == "RNN_RELU" else "Tanh"] * directions
    if m.mode == "GRU":
        attrs["linear_before_reset"] = 1
    return attrs


def _node(tr, m, x: str, weights: list, h0: str, c0: str, directions: int) -> list:
    """One RNN/LSTM/GRU node: outputs Y, Y_h (and Y_c for the LSTM)."""
    inputs = [x, *weights] + ([""] if len(weights) == 2 else [])
    inputs += ["", h0] + ([c0] if m.mode == "LSTM" else [])  # no sequence_lens
    while inputs[-1] == "":
        inputs.pop()
    return tr.g.op(_OP[m.mode], inputs, n_outputs=3 if m.mode == "LSTM" else 2,
                   **_attributes(m, directions))


def _state_slice(tr, state: str | None, layer: int, directions: int) -> str:
    """Rows of one layer of a (layers * directions, N, H) state ('' when there is none)."""
    if state is None:
        return ""
    return tr.g.op("Slice", [state, tr.g.ints([layer * directions]),
                             tr.g.ints([(layer + 1) * directions]), tr.g.ints([0])])


def _initial(tr, m, x, hx):
    """Graph values of (h0, c0) in (layers * directions, N, H) layout, or None when absent."""
    if m.mode == "LSTM":
        h0, c0 = (None, None) if hx is None else hx
    else:
        h0, c0 = hx, None
    values = []
    for state in (h0, c0):
        if state is None:
            values.append(None)
            continue
        v = tr.name(state)
        if x.ndim == 2:  # unbatched: (layers * directions, H)
            v = tr.g.op("Unsqueeze", [v, tr.g.ints([1])])
        values.append(v)
    return values


@converts_layer(NN, "RNN", "LSTM", "GRU")
def _recurrent_layer(tr, m, out, x, hx=None):
    v = tr.name(x)
    if x.ndim == 2:
        v = tr.g.op("Unsqueeze", [v, tr.g.ints([1])])
    elif m.batch_first:
        v = tr.g.op("Transpose", [v], perm=[1, 0, 2])
    h0, c0 = _initial(tr, m, x, hx)
    d = m._directions
    hs, cs = [], []
    for layer in range(m.num_layers):
        weights = _weights(tr, m, [m._weights(layer, s) for s in m._suffixes], f"_l{layer}")
        outs = _node(tr, m, v, weights, _state_slice(tr, h0, layer, d),
                     _state_slice(tr, c0, layer, d), d)
        y = tr.g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])
        v = tr.g.op("Reshape", [y, tr.g.ints([0, 0, -1])])
        hs.append(outs[1])
        if m.mode == "LSTM":
            cs.append(outs[2])
    states = [tr.g.op("Concat", group, axis=0) if len(group) > 1 else group[0]
              for group in ([hs, cs] if cs else [hs])]
    if x.ndim == 2:
        axis = tr.g.ints([1])
        v = tr.g.op("Squeeze", [v, axis])
        states = [tr.g.op("Squeeze", [s, axis]) for s in states]
    elif m.batch_first:
        v = tr.g.op("Transpose", [v], perm=[1, 0, 2])
    return [v, *states]


@converts_layer(NN, "RNNCell", "LSTMCell", "GRUCell")
def _cell(tr, m, out, x, hx=None):
    """A sequence of one step: the cell's input and states get the node's leading dims."""
    lead = tr.g.ints([0] if x.ndim == 2 else [0, 1])
    v = tr.g.op("Unsqueeze", [tr.name(x), lead])
    states = (hx if m.mode == "LSTM" else (hx,)) if hx is not None else (None, None)
    states = ["" if s is None else tr.g.op("Unsqueeze", [tr.name(s), lead]) for s in states]
    weights = _weights(tr, m, [(m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh)], "")
    outs = _node(tr, m, v, weights, states[0], states[1] if len(states) > 1 else "", 1)
    return [tr.g.op("Squeeze", [y, lead]) for y in outs[1:]]
