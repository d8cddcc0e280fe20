"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay (PyTorch's SGD)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .flags import check_flags
from .optimizer import Optimizer, Scratch, add_scaled, check_non_negative, effective_grad


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum; PyTorch's update, step for step.

    With gradient :math:`g_t` of parameter :math:`\theta_{t-1}`:

    .. code-block:: text

        g  = -g                               if maximize
        g  = g + weight_decay * theta         if weight_decay != 0
        if momentum != 0:
            b = g                             on the first step (a copy, undamped)
            b = momentum * b + (1 - dampening) * g    afterwards
            g = g + momentum * b              if nesterov, else g = b
        theta = theta - lr * g

    The state of a parameter is ``momentum_buffer`` (only when momentum != 0). ``foreach``,
    ``fused`` and ``differentiable`` mean what they mean on PyTorch's CPU path (see
    ``dtrain.optim.flags``).
    """

    _shaped_keys = frozenset({"momentum_buffer"})

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False,
                 fused: bool | None = None):
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "foreach": foreach, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)

    def _check_options(self, options: dict) -> None:
        check_non_negative(options, "lr", "momentum", "weight_decay")
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            raise ValueError("Invalid nesterov: Nesterov momentum requires a momentum and zero "
                             f"dampening (momentum={options['momentum']}, "
                             f"dampening={options['dampening']})")
        check_flags(options)

    def step(self, closure: Callable | None = None):
        """Update every parameter that has a gradient; returns the closure's loss (or None)."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            params = self._with_grad(group)
            momentum = float(group["momentum"])
            buffers = ([self.state[p].get("momentum_buffer") for p in params]
                       if momentum != 0 else [])
            sgd([p._data for p in params], [self._grad(p, i) for i, p in enumerate(params)],
                buffers, lr=float(group["lr"]), momentum=momentum,
                dampening=float(group["dampening"]), weight_decay=float(group["weight_decay"]),
                nesterov=bool(group["nesterov"]), maximize=bool(group["maximize"]),
                scratch=self._scratch)
            for p, buf in zip(params, buffers):
                self.state[p]["momentum_buffer"] = buf
        return loss


def sgd(params: list[np.ndarray], grads: list[np.ndarray],
        momentum_buffers: list[np.ndarray | None], *, lr: float, momentum: float,
        dampening: float, weight_decay: float, nesterov: bool, maximize: bool,
        scratch: Scratch | None = None) -> None:
    """SGD on NumPy arrays, in place; see ``SGD`` for the rule.

    ``momentum_buffers`` (one per parameter when momentum != 0; None before the first step) is
    updated in place, new buffers included. The operation order is PyTorch's single-tensor one.
    """
    scratch = scratch if scratch is not None else Scratch()
    for i, (param, grad) in enumerate(zip(params, grads)):
        g = effective_grad(param, grad, weight_decay, maximize, scratch)
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = momentum_buffers[i] = np.array(g, copy=True)
            else:
                buf *= momentum
                if dampening == 0:
                    buf += g
                else:
                    buf += np.multiply(g, 1 - dampening, out=scratch.get(param, 1))
            if nesterov:
                tmp = np.multiply(buf, momentum, out=scratch.get(param, 1))
                tmp += g
                g = tmp
            else:
                g = buf
        add_scaled(param, g, -lr, scratch)
