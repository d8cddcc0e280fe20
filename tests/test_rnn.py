"""RNN, LSTM and GRU against PyTorch (torch's state_dict loaded) and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_layers import RNG, numeric_grad

import dtrain
from dtrain import nn
from dtrain.nn import keyed_dropout
from dtrain.onnx.tracing import flat_outputs

TOL = {"float64": {"rtol": 1e-10, "atol": 1e-10}, "float32": {"rtol": 1e-4, "atol": 2e-5}}
OPTIONS = [{}, {"num_layers": 2}, {"bidirectional": True}, {"bias": False},
           {"num_layers": 3, "bidirectional": True, "batch_first": True}]
CASES = ([("RNN", o) for o in OPTIONS + [{"nonlinearity": "relu", "num_layers": 2}]]
         + [("LSTM", o) for o in OPTIONS] + [("GRU", o) for o in OPTIONS])


def torch_pair(cls: str, options: dict, dtype: str, input_size: int = 3, hidden: int = 4):
    """A torch layer and a dtrain layer that loaded torch's state_dict."""
    import torch

    torch.manual_seed(0)
    twin = getattr(torch.nn, cls)(input_size, hidden, **options, dtype=getattr(torch, dtype))
    layer = getattr(nn, cls)(input_size, hidden, **options, dtype=dtype)
    assert list(layer.state_dict()) == list(twin.state_dict())
    assert repr(layer) == repr(twin)
    layer.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    return layer, twin


def initial_state(cls: str, layer, batch: int | None, dtype: str) -> list[np.ndarray]:
    shape = (layer.num_layers * (2 if layer.bidirectional else 1),) + (
        (batch,) if batch else ()) + (layer.hidden_size,)
    return [RNG.standard_normal(shape).astype(dtype) for _ in range(2 if cls == "LSTM" else 1)]


def check_fd(module, x: np.ndarray, states: list, atol: float = 1e-6) -> None:
    """Input, state and parameter gradients of every output equal finite differences."""
    ups = None

    def loss(grad: bool):
        nonlocal ups
        xt = dtrain.tensor(x, requires_grad=grad)
        st = [dtrain.tensor(s, requires_grad=grad) for s in states]
        outs = flat_outputs(module(xt, tuple(st) if len(st) == 2 else st[0]))
        if ups is None:
            ups = [RNG.standard_normal(o.shape) for o in outs]
        return sum((o * dtrain.tensor(u)).sum() for o, u in zip(outs, ups)), xt, st

    total, xt, st = loss(True)
    total.backward()

    def scalar():
        with dtrain.no_grad():
            return float(loss(False)[0].data)

    for name, array, grad in ([("input", x, xt.grad)]
                              + [(f"state{i}", s, t.grad) for i, (s, t) in
                                 enumerate(zip(states, st))]
                              + [(n, p._data, p.grad) for n, p in module.named_parameters()]):
        np.testing.assert_allclose(grad._data, numeric_grad(scalar, array), atol=atol,
                                   err_msg=name)


def run_both(cls, layer, twin, x, states, dtype):
    """Forward and backward with the same upstream gradients; compare everything."""
    import torch

    def run(lib, module):
        xt = lib.tensor(x, requires_grad=True)
        st = [lib.tensor(s, requires_grad=True) for s in states]
        hx = None if not st else (tuple(st) if cls == "LSTM" else st[0])
        outs = flat_outputs(module(xt, hx))
        total = 0
        for i, o in enumerate(outs):
            up = np.cos(np.arange(int(np.prod(o.shape))) * (i + 1.3)).reshape(tuple(o.shape))
            total = total + (o * lib.tensor(up.astype(dtype))).sum()
        total.backward()
        grads = [xt.grad, *(s.grad for s in st)]
        return [o.detach().numpy() for o in outs], [np.asarray(g.numpy()) for g in grads]

    ours, our_grads = run(dtrain, layer)
    theirs, their_grads = run(torch, twin)
    for a, b in zip(ours + our_grads, theirs + their_grads):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, **TOL[dtype])
    tparams = dict(twin.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad._data, tparams[name].grad.numpy(), **TOL[dtype],
                                   err_msg=name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cls,options", CASES)
def test_recurrent_layers_match_torch(cls, options, dtype):
    pytest.importorskip("torch")
    layer, twin = torch_pair(cls, options, dtype)
    shape = (2, 5, 3) if options.get("batch_first") else (5, 2, 3)
    x = RNG.standard_normal(shape).astype(dtype)
    run_both(cls, layer, twin, x, [], dtype)
    run_both(cls, layer, twin, x, initial_state(cls, layer, 2, dtype), dtype)


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_unbatched_input_matches_torch(cls):
    pytest.importorskip("torch")
    layer, twin = torch_pair(cls, {"num_layers": 2, "bidirectional": True}, "float64")
    x = RNG.standard_normal((6, 3))
    run_both(cls, layer, twin, x, [], "float64")
    run_both(cls, layer, twin, x, initial_state(cls, layer, None, "float64"), "float64")


@pytest.mark.parametrize("cls,options", [("RNN", {"bidirectional": True}),
                                         ("RNN", {"nonlinearity": "relu"}),
                                         ("LSTM", {"num_layers": 2, "bidirectional": True}),
                                         ("GRU", {"num_layers": 2, "bidirectional": True}),
                                         ("GRU", {"bias": False})])
def test_recurrent_gradients_match_finite_differences(cls, options):
    dtrain.manual_seed(0)
    layer = getattr(nn, cls)(3, 2, **options, dtype="float64")
    check_fd(layer, RNG.standard_normal((4, 2, 3)), initial_state(cls, layer, 2, "float64"))


def test_parameters_shapes_and_init_follow_torch():
    dtrain.manual_seed(0)
    layer = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert shapes["weight_ih_l0"] == (20, 3) and shapes["weight_hh_l0_reverse"] == (20, 5)
    assert shapes["weight_ih_l1"] == (20, 10) and shapes["bias_hh_l1_reverse"] == (20,)
    assert len(shapes) == 16
    bound = 1 / math.sqrt(5)
    for name, p in layer.named_parameters():
        assert p.dtype == np.float32 and np.abs(p._data).max() <= bound, name
        assert p._data.std() > bound / 3, name
    assert nn.GRU(2, 3).weight_hh_l0.shape == (9, 3) and nn.RNN(2, 3).bias_ih_l0.shape == (3,)
    assert [n for n, _ in nn.RNN(2, 3, bias=False).named_parameters()] == [
        "weight_ih_l0", "weight_hh_l0"]
    assert [[p.shape for p in group] for group in nn.GRU(2, 3, bias=False).all_weights] == [
        [(9, 2), (9, 3)]]
    assert layer.all_weights[1][0] is layer.weight_ih_l0_reverse
    layer.flatten_parameters()  # PyTorch programs call it after moving to the GPU


def test_dropout_between_layers_is_keyed_by_sample():
    dtrain.manual_seed(0)
    layer = nn.GRU(3, 4, num_layers=2, dropout=0.5, batch_first=True)
    x = RNG.standard_normal((4, 6, 3)).astype(np.float32)
    with keyed_dropout(5, 1, [10, 11, 12, 13]):
        full, _ = layer(dtrain.tensor(x))
    with keyed_dropout(5, 1, [12, 13]):
        part, _ = layer(dtrain.tensor(x[2:]))
    np.testing.assert_allclose(full._data[2:], part._data, rtol=1e-6, atol=1e-6)
    with keyed_dropout(6, 1, [12, 13]):
        other, _ = layer(dtrain.tensor(x[2:]))
    assert not np.allclose(other._data, part._data)
    layer.eval()
    evaluated = layer(dtrain.tensor(x))[0]
    layer.train()
    no_drop = nn.GRU(3, 4, num_layers=2, batch_first=True)
    no_drop.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(evaluated._data, no_drop(dtrain.tensor(x))[0].data)
    assert not np.allclose(layer(dtrain.tensor(x))[0].data, evaluated._data)


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.LSTM(3, 4, dropout=0.2)


def test_recurrent_errors():
    layer = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"2D or 3D, got 4D"):
        layer(dtrain.randn(2, 3, 4, 3))
    with pytest.raises(RuntimeError, match="Expected 3, got 5"):
        layer(dtrain.randn(4, 2, 5))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(2, 2, 4\), got \(1, 2, 4\)"):
        layer(dtrain.randn(4, 2, 3), (dtrain.zeros(1, 2, 4), dtrain.zeros(2, 2, 4)))
    with pytest.raises(RuntimeError, match="hx should also be 3-D"):
        layer(dtrain.randn(4, 2, 3), (dtrain.zeros(2, 4), dtrain.zeros(2, 4)))
    with pytest.raises(RuntimeError, match="cx should also be 2-D"):
        layer(dtrain.randn(4, 3), (dtrain.zeros(2, 4), dtrain.zeros(2, 1, 4)))
    with pytest.raises(TypeError, match="tuple"):
        layer(dtrain.randn(4, 2, 3), dtrain.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"input dtype \((dtrain\.)?float64\) does not match weight"):
        layer(dtrain.randn(4, 2, 3, dtype="float64"))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout should be a number"):
        nn.GRU(3, 4, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size"):
        nn.GRU(3, 0)
    with pytest.raises(NotImplementedError, match="proj_size"):
        nn.LSTM(3, 4, proj_size=2)


# ------------------------------------------------------------------------------ cells
CELLS = [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu", "bias": False}),
         ("LSTMCell", {}), ("LSTMCell", {"bias": False}), ("GRUCell", {}),
         ("GRUCell", {"bias": False})]


def run_cell(lib, cell, x, states):
    xt = lib.tensor(x, requires_grad=True)
    st = [lib.tensor(s, requires_grad=True) for s in states]
    hx = None if not st else (tuple(st) if len(st) == 2 else st[0])
    out = cell(xt, hx)
    outs = list(out) if isinstance(out, tuple) else [out]
    total = sum((o * lib.tensor(np.cos(np.arange(o.numel()) + i).reshape(tuple(o.shape))
                                .astype(x.dtype))).sum() for i, o in enumerate(outs))
    total.backward()
    return ([o.detach().numpy() for o in outs]
            + [np.asarray(t.grad.numpy()) for t in [xt, *st]])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cls,options", CELLS)
def test_cells_match_torch(cls, options, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    twin = getattr(torch.nn, cls)(3, 4, **options, dtype=getattr(torch, dtype))
    cell = getattr(nn, cls)(3, 4, **options, dtype=dtype)
    assert repr(cell) == repr(twin) and list(cell.state_dict()) == list(twin.state_dict())
    cell.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    count = 2 if cls == "LSTMCell" else 1
    for batch in ((2,), ()):
        x = RNG.standard_normal(batch + (3,)).astype(dtype)
        for states in ([], [RNG.standard_normal(batch + (4,)).astype(dtype)
                            for _ in range(count)]):
            cell.zero_grad()
            twin.zero_grad()
            ours, theirs = run_cell(dtrain, cell, x, states), run_cell(torch, twin, x, states)
            for a, b in zip(ours, theirs):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, **TOL[dtype])
            tparams = dict(twin.named_parameters())
            for name, p in cell.named_parameters():
                np.testing.assert_allclose(p.grad._data, tparams[name].grad.numpy(),
                                           **TOL[dtype], err_msg=name)


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_gradients_match_finite_differences(cls):
    dtrain.manual_seed(1)
    cell = getattr(nn, cls)(3, 2, dtype="float64")
    states = [RNG.standard_normal((2, 2)) for _ in range(2 if cls == "LSTMCell" else 1)]
    check_fd(cell, RNG.standard_normal((2, 3)), states)


def test_a_cell_loop_equals_the_layer():
    dtrain.manual_seed(2)
    layer, cell = nn.LSTM(3, 4, dtype="float64"), nn.LSTMCell(3, 4, dtype="float64")
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    x = RNG.standard_normal((5, 2, 3))
    out, (_, c) = layer(dtrain.tensor(x))
    state = None
    for t in range(5):
        state = cell(dtrain.tensor(x[t]), state)
        np.testing.assert_allclose(state[0]._data, out._data[t], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state[1]._data, c._data[0], rtol=1e-12, atol=1e-12)


def test_cell_errors():
    cell = nn.LSTMCell(3, 4)
    with pytest.raises(RuntimeError, match="input has inconsistent input_size: got 5 expected 3"):
        cell(dtrain.randn(2, 5))
    with pytest.raises(RuntimeError, match="Input batch size 2 doesn't match hidden0 batch size"):
        cell(dtrain.randn(2, 3), (dtrain.zeros(3, 4), dtrain.zeros(3, 4)))
    with pytest.raises(RuntimeError, match="hidden1 has inconsistent hidden_size: got 5"):
        cell(dtrain.randn(2, 3), (dtrain.zeros(2, 4), dtrain.zeros(2, 5)))
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        cell(dtrain.randn(2, 3, 3))
    with pytest.raises(RuntimeError, match="hidden0 must be 1-D for unbatched"):
        nn.GRUCell(3, 4)(dtrain.randn(3), dtrain.zeros(1, 4))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        nn.RNNCell(3, 4, nonlinearity="gelu")
    with pytest.raises(RuntimeError, match=r"dtype (dtrain\.)?float64 and weight dtype (dtrain\.)?float32"):
        cell(dtrain.randn(2, 3, dtype="float64"))


# ------------------------------------------------------------ one program, two libraries
def sequence_model(m):
    """A small sequence regressor written once against the torch API."""

    class Model(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = m.nn.Conv1d(3, 6, 3, padding="same")
            self.norm = m.nn.GroupNorm(2, 6)
            self.gru = m.nn.GRU(6, 5, num_layers=2, batch_first=True, bidirectional=True)
            self.cell = m.nn.LSTMCell(10, 4)
            self.head = m.nn.Linear(4, 1)

        def forward(self, x):  # x: (N, L, 3)
            h = m.nn.functional.silu(self.norm(self.conv(x.transpose(1, 2))))
            h = m.nn.functional.pad(h, (1, 0), mode="replicate").transpose(1, 2)
            out, _ = self.gru(h)
            state = None
            for t in range(out.shape[1]):
                state = self.cell(out[:, t], state)
            return self.head(m.nn.functional.mish(state[0]))

    return Model()


def test_the_same_training_program_gives_torch_numbers():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = sequence_model(torch).double()
    ours = sequence_model(dtrain).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x, y = RNG.standard_normal((4, 6, 3)), RNG.standard_normal((4, 1))
    losses = []
    for lib, model in ((torch, theirs), (dtrain, ours)):
        opt = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        run = []
        for _ in range(3):
            opt.zero_grad()
            loss = lib.nn.functional.mse_loss(model(lib.tensor(x)), lib.tensor(y))
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)
    assert losses[0][2] < losses[0][0]
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours.state_dict()[name], p.detach().numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


def test_frozen_layer_still_gives_input_gradients():
    dtrain.manual_seed(4)
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64")
    x = RNG.standard_normal((5, 2, 3))
    xt = dtrain.tensor(x, requires_grad=True)
    layer(xt)[0].sum().backward()
    expected = xt.grad._data
    layer.zero_grad()
    layer.requires_grad_(False)
    xt = dtrain.tensor(x, requires_grad=True)
    layer(xt)[0].sum().backward()
    np.testing.assert_allclose(xt.grad._data, expected, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None for p in layer.parameters())
