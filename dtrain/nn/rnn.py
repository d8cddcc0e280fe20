"""Recurrent layers ``RNN``, ``LSTM`` and ``GRU`` with PyTorch's parameters, layout and init.

Parameters are named and ordered as PyTorch's (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, then ``..._reverse`` for the second direction), with PyTorch's
gate order, so a torch state_dict loads unchanged. Each layer and direction is one fused node
(``_recurrent.recurrence``). Dropout between layers is ``nn.functional.dropout`` applied batch
first, so inside ``keyed_dropout`` its masks are keyed by sample like every other dropout.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from ..autograd.tensor import Tensor, cat, get_default_dtype, stack
from . import init
from ._recurrent import GATES, recurrence
from .dropout import dropout
from .module import Module
from .parameter import Parameter


class RNNBase(Module):
    """Shared body of RNN, LSTM and GRU: parameters, argument checks and the layer loop."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(
                dropout, bool):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", UserWarning,
                          stacklevel=3)
        if proj_size:
            raise (ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
                   if mode != "LSTM" else
                   NotImplementedError("LSTM with proj_size > 0 is not supported by dtrain"))
        self.mode, self.input_size, self.hidden_size = mode, int(input_size), int(hidden_size)
        self.num_layers, self.bias, self.batch_first = int(num_layers), bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bidirectional, 0
        dtype = np.dtype(dtype) if dtype is not None else get_default_dtype()
        gates = GATES[mode] * self.hidden_size
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else self.hidden_size * self._directions
            for suffix in self._suffixes:
                name = f"l{layer}{suffix}"
                setattr(self, f"weight_ih_{name}", Parameter(np.empty((gates, width), dtype)))
                setattr(self, f"weight_hh_{name}",
                        Parameter(np.empty((gates, self.hidden_size), dtype)))
                if bias:
                    setattr(self, f"bias_ih_{name}", Parameter(np.empty(gates, dtype)))
                    setattr(self, f"bias_hh_{name}", Parameter(np.empty(gates, dtype)))
        self.reset_parameters()

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self) -> tuple:
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """PyTorch's default: every weight and bias from U(-1/sqrt(hidden), 1/sqrt(hidden))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def flatten_parameters(self) -> None:
        """Nothing to do: PyTorch compacts its cuDNN weight buffer here, dtrain has none."""

    @property
    def all_weights(self) -> list[list]:
        """The parameters of each layer and direction, in PyTorch's order."""
        return [[p for p in self._weights(layer, suffix) if p is not None]
                for layer in range(self.num_layers) for suffix in self._suffixes]

    def _weights(self, layer: int, suffix: str) -> tuple:
        name = f"l{layer}{suffix}"
        return (getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}"),
                getattr(self, f"bias_ih_{name}", None), getattr(self, f"bias_hh_{name}", None))

    def _check_input(self, input: Tensor) -> bool:
        """Validate the input; returns whether it is batched."""
        kind = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{kind}: expected a Tensor input, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(f"{kind}: Expected input to be 2D or 3D, got {input.ndim}D tensor "
                             f"instead (shape {tuple(input.shape)})")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {input.shape[-1]}")
        if input.dtype.kind != "f":
            raise TypeError(f"{kind}: expected a floating input, got dtype {input.dtype}")
        weight = self.weight_ih_l0.dtype
        if input.dtype != weight:
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype "
                             f"({weight}). Convert input: input.to({weight}), or convert model: "
                             f"model.to({input.dtype})")
        return input.ndim == 3

    def _initial(self, hx, batched: bool, batch: int, dtype, what: str = "hx") -> Tensor:
        """The (layers * directions, N, H) initial state (zeros when ``hx`` is None)."""
        shape = (self.num_layers * self._directions, batch, self.hidden_size)
        if hx is None:
            return Tensor._wrap(np.zeros(shape, dtype=dtype))
        if not isinstance(hx, Tensor):
            raise TypeError(f"{type(self).__name__}: {what} must be a Tensor, got "
                            f"{type(hx).__name__}")
        if batched and hx.ndim != 3:
            raise RuntimeError(f"For batched 3-D input, {what} should also be 3-D but got "
                               f"{hx.ndim}-D tensor")
        if not batched and hx.ndim != 2:
            raise RuntimeError(f"For unbatched 2-D input, {what} should also be 2-D but got "
                               f"{hx.ndim}-D tensor")
        if not batched:
            hx = hx.unsqueeze(1)
        if tuple(hx.shape) != shape:
            raise RuntimeError(f"Expected hidden size {shape}, got {tuple(hx.shape)}")
        if hx.dtype != dtype:
            raise RuntimeError(f"{type(self).__name__}: {what} dtype {hx.dtype} differs from "
                               f"input dtype {dtype}")
        return hx

    def _run(self, input: Tensor, h0: Tensor, c0: Tensor | None):
        """Every layer over time-major input; returns (output, h_n, c_n or None)."""
        x = input
        steps = x.shape[0]
        hs, cs = [], []
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes):
                k = layer * self._directions + d
                packed = recurrence(self.mode, x, h0[k], None if c0 is None else c0[k],
                                    *self._weights(layer, suffix), reverse=d == 1)
                out = packed[:steps]
                outs.append(out)
                hs.append(out[0] if d == 1 else out[steps - 1])
                if c0 is not None:
                    cs.append(packed[steps])
            x = outs[0] if len(outs) == 1 else cat(outs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = dropout(x.transpose(0, 1), self.dropout, True).transpose(0, 1)
        return x, stack(hs), (stack(cs) if c0 is not None else None)

    def _forward(self, input: Tensor, hx, cx=None, lstm: bool = False):
        batched = self._check_input(input)
        if not batched:
            x = input.unsqueeze(1)
        elif self.batch_first:
            x = input.transpose(0, 1)
        else:
            x = input
        h0 = self._initial(hx, batched, x.shape[1], input.dtype)
        c0 = self._initial(cx, batched, x.shape[1], input.dtype, "cx") if lstm else None
        out, h_n, c_n = self._run(x, h0, c0)
        if not batched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, h_n, c_n

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + _changed_options(self, (
            ("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0),
            ("bidirectional", False)))


class RNN(RNNBase):
    """Elman RNN, h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             "'relu'.")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, h_n, _ = self._forward(input, hx)
        return out, h_n


class LSTM(RNNBase):
    """Long short-term memory, gates (input, forget, cell, output) as in PyTorch."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, dtype)

    def forward(self, input: Tensor, hx: tuple | None = None) -> tuple[Tensor, tuple]:
        out, h_n, c_n = self._forward(input, *_lstm_state(hx, "LSTM"), lstm=True)
        return out, (h_n, c_n)


class GRU(RNNBase):
    """Gated recurrent unit, gates (reset, update, new) as in PyTorch."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, h_n, _ = self._forward(input, hx)
        return out, h_n


# ------------------------------------------------------------------------------ cells
class RNNCellBase(Module):
    """Shared body of RNNCell, LSTMCell and GRUCell: one time step of the matching layer."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True,
                 dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.mode, self.input_size, self.hidden_size = mode, int(input_size), int(hidden_size)
        self.bias = bias
        dtype = np.dtype(dtype) if dtype is not None else get_default_dtype()
        gates = GATES[mode] * self.hidden_size
        self.weight_ih = Parameter(np.empty((gates, self.input_size), dtype))
        self.weight_hh = Parameter(np.empty((gates, self.hidden_size), dtype))
        if bias:
            self.bias_ih = Parameter(np.empty(gates, dtype))
            self.bias_hh = Parameter(np.empty(gates, dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: every weight and bias from U(-1/sqrt(hidden), 1/sqrt(hidden))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _state(self, state, batch: int, batched: bool, dtype, which: int) -> Tensor:
        """A checked (N, H) state (zeros when None)."""
        if state is None:
            return Tensor._wrap(np.zeros((batch, self.hidden_size), dtype=dtype))
        if not isinstance(state, Tensor):
            raise TypeError(f"{type(self).__name__}: the state must be a Tensor, got "
                            f"{type(state).__name__}")
        if state.ndim != (2 if batched else 1):
            kind = "2-D for batched" if batched else "1-D for unbatched"
            raise RuntimeError(f"{type(self).__name__}: hidden{which} must be {kind} input, got "
                               f"shape {tuple(state.shape)}")
        if not batched:
            state = state.unsqueeze(0)
        if state.shape[0] != batch:
            raise RuntimeError(f"Input batch size {batch} doesn't match hidden{which} batch size "
                               f"{state.shape[0]}")
        if state.shape[1] != self.hidden_size:
            raise RuntimeError(f"hidden{which} has inconsistent hidden_size: got "
                               f"{state.shape[1]}, expected {self.hidden_size}")
        if state.dtype != dtype:
            raise RuntimeError(f"{type(self).__name__}: hidden{which} dtype {state.dtype} differs "
                               f"from input dtype {dtype}")
        return state

    def _step(self, input: Tensor, hx, cx=None, lstm: bool = False):
        """One step; returns (h', c' or None), unbatched like the input."""
        kind = type(self).__name__
        if not isinstance(input, Tensor) or input.ndim not in (1, 2):
            shape = f"{input.ndim}D" if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{kind}: Expected input to be 1D or 2D, got {shape} instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[-1]} "
                               f"expected {self.input_size}")
        if input.dtype.kind != "f":
            raise TypeError(f"{kind}: expected a floating input, got dtype {input.dtype}")
        if input.dtype != self.weight_ih.dtype:
            raise RuntimeError(f"{kind}: input dtype {input.dtype} and weight dtype "
                               f"{self.weight_ih.dtype} must be the same")
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        h = self._state(hx, x.shape[0], batched, input.dtype, 0)
        c = self._state(cx, x.shape[0], batched, input.dtype, 1) if lstm else None
        packed = recurrence(self.mode, x.unsqueeze(0), h, c, self.weight_ih, self.weight_hh,
                            self.bias_ih, self.bias_hh)
        h, c = packed[0], (packed[1] if lstm else None)
        if not batched:
            h, c = h.squeeze(0), (c.squeeze(0) if lstm else None)
        return h, c

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + _changed_options(self, (
            ("bias", True), ("nonlinearity", "tanh")))


class RNNCell(RNNCellBase):
    """One Elman RNN step, h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._step(input, hx)[0]


class LSTMCell(RNNCellBase):
    """One LSTM step; returns (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, dtype)

    def forward(self, input: Tensor, hx: tuple | None = None) -> tuple[Tensor, Tensor]:
        return self._step(input, *_lstm_state(hx, "LSTMCell"), lstm=True)


class GRUCell(RNNCellBase):
    """One GRU step."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._step(input, hx)[0]


def _lstm_state(hx, who: str) -> tuple:
    """``(h_0, c_0)`` from an LSTM's ``hx``: None (both None) or a pair."""
    if hx is None:
        return None, None
    if isinstance(hx, (tuple, list)) and len(hx) == 2:
        h0, c0 = hx
        return h0, c0
    raise TypeError(f"{who}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")


def _changed_options(module: Module, defaults: tuple) -> str:
    """``, name=value`` for each ``(name, default)`` the module does not have at its default,
    compared as PyTorch's repr compares them: flags by identity, other values by ``!=``."""
    s = ""
    for name, default in defaults:
        value = getattr(module, name, default)
        if (value is not default) if isinstance(default, bool) else (value != default):
            s += f", {name}={value}"
    return s
