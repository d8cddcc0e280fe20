"""Custom Module classes at module level, so ``save_model``/``load_model`` tests can import them."""

from __future__ import annotations

import itertools

import numpy as np

import dtrain
from dtrain import nn


class MLP(nn.Module):
    """An MLP built from a tuple of sizes, with a named activation and a persistent buffer."""

    def __init__(self, sizes: tuple, activation: str = "tanh", *, scale: float = 1.0):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.act = {"tanh": nn.Tanh(), "relu": nn.ReLU()}[activation]
        self.register_buffer("scale", dtrain.tensor(np.full(sizes[-1], scale, np.float32)))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x * self.scale


class Residual(nn.Module):
    """``x + inner(x)``: takes a Module as an ``__init__`` argument."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


class Outer:
    """Namespace to check that nested qualnames resolve."""

    class Scaled(nn.Module):
        """``factor * linear(x)``: a class whose qualname has a dot."""

        def __init__(self, n: int, factor: float, dtype=None):
            super().__init__()
            self.linear = nn.Linear(n, n, dtype=dtype)
            self.factor = factor

        def forward(self, x):
            return self.linear(x) * self.factor


class WithCallable(nn.Module):
    """Takes a function argument, which ``save_model`` cannot store."""

    def __init__(self, n: int, fn):
        super().__init__()
        self.linear = nn.Linear(n, n)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.linear(x))
