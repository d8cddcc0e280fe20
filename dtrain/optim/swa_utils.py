"""Weight averaging after torch.optim.swa_utils: ``AveragedModel``, ``SWALR``, ``update_bn``.

Stochastic weight averaging (Izmailov et al.) keeps a running mean of the weights a training
run passes through; an exponential moving average (EMA) keeps a decaying one. The averaging
functions follow PyTorch's CPU arithmetic: the default SWA update is
``avg + (current - avg) / (n + 1)`` per parameter, the ``multi`` variants are lerps.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor, get_default_dtype
from ..nn.module import Module
from ..nn.normalization import _BatchNorm
from .adam import lerp_
from .lr_scheduler import LRScheduler, _per_group

__all__ = ["SWALR", "AveragedModel", "get_ema_avg_fn", "get_ema_multi_avg_fn",
           "get_swa_avg_fn", "get_swa_multi_avg_fn", "update_bn"]

AvgFn = Callable[[Tensor, Tensor, Any], Tensor]
MultiAvgFn = Callable[[list[Tensor], list[Tensor], Any], None]


def _check_decay(decay: float) -> None:
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"Invalid decay value {decay} provided: it must be in [0, 1]")


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    """``avg_fn`` for an EMA: ``decay * ema + (1 - decay) * current``, one parameter at a time."""
    _check_decay(decay)

    def ema_update(ema_param: Tensor, current_param: Tensor, num_averaged) -> Tensor:
        with no_grad():
            return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn() -> AvgFn:
    """``avg_fn`` for SWA: ``avg + (current - avg) / (n + 1)``, one parameter at a time."""

    def swa_update(averaged_param: Tensor, current_param: Tensor, num_averaged) -> Tensor:
        with no_grad():
            return averaged_param + (current_param - averaged_param) / (_count(num_averaged) + 1)

    return swa_update


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    """``multi_avg_fn`` for an EMA over lists of parameters, in place: a lerp towards current."""
    _check_decay(decay)

    def ema_update(ema_params: list[Tensor], current_params: list[Tensor], _) -> None:
        for ema, current in zip(ema_params, current_params):
            if ema._data.dtype.kind in "fc":
                lerp_(ema._data, current._data, 1 - decay, np.empty_like(ema._data))
            else:
                ema._data[...] = ema._data * decay + current._data * (1 - decay)

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    """``multi_avg_fn`` for SWA over lists of parameters, in place: a lerp by ``1 / (n + 1)``."""

    def swa_update(averaged_params: list[Tensor], current_params: list[Tensor],
                   num_averaged) -> None:
        weight = 1 / (_count(num_averaged) + 1)
        if isinstance(num_averaged, Tensor):  # then PyTorch's 1 / (n + 1) has the default dtype
            dtype = get_default_dtype()
            weight = float(dtype.type(1) / dtype.type(_count(num_averaged) + 1))
        for averaged, current in zip(averaged_params, current_params):
            if averaged._data.dtype.kind in "fc":
                lerp_(averaged._data, current._data, weight, np.empty_like(averaged._data))
            else:
                averaged._data[...] = averaged._data + (current._data - averaged._data) * weight

    return swa_update


def _count(num_averaged) -> int:
    return int(num_averaged.item() if isinstance(num_averaged, Tensor) else num_averaged)


class AveragedModel(Module):
    """A copy of ``model`` whose parameters are the average of those it is updated with.

    ``update_parameters(model)`` copies the model's parameters the first time and averages
    them in afterwards: with ``avg_fn(avg, current, n)`` per parameter, ``multi_avg_fn`` over
    all parameters at once, or by default the SWA mean. Buffers (BatchNorm statistics) are
    copied, or averaged too with ``use_buffers=True``. ``n_averaged`` counts the updates.
    """

    def __init__(self, model: Module, device=None, avg_fn: AvgFn | None = None,
                 multi_avg_fn: MultiAvgFn | None = None, use_buffers: bool = False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        if device not in (None, "cpu"):
            raise ValueError(f"dtrain runs on the CPU: device must be None or 'cpu', "
                             f"got {device!r}")
        self.module = copy.deepcopy(model)
        self.register_buffer("n_averaged", Tensor._wrap(np.array(0, dtype=np.int64)))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def forward(self, *args, **kwargs):
        """The averaged model's output."""
        return self.module(*args, **kwargs)

    def update_parameters(self, model: Module) -> None:
        """Average ``model``'s current parameters (and buffers, if asked) into this model."""
        if self.use_buffers:
            ours = list(itertools.chain(self.module.parameters(), self.module.buffers()))
            theirs = list(itertools.chain(model.parameters(), model.buffers()))
        else:
            ours, theirs = list(self.parameters()), list(model.parameters())
        pairs = [(a.detach(), m.detach()) for a, m in zip(ours, theirs)]
        count = _count(self.n_averaged)
        with no_grad():
            if count == 0:
                for averaged, current in pairs:
                    averaged._data[...] = current._data
            elif self.multi_avg_fn is not None:
                self.multi_avg_fn([a for a, _ in pairs], [m for _, m in pairs], self.n_averaged)
            else:
                avg_fn = self.avg_fn or get_swa_avg_fn()
                for averaged, current in pairs:
                    new = avg_fn(averaged, current, self.n_averaged)
                    averaged._data[...] = new._data if isinstance(new, Tensor) else new
            if not self.use_buffers:
                for ours_b, theirs_b in zip(self.module.buffers(), model.buffers()):
                    ours_b._data[...] = theirs_b._data
        self.n_averaged._data += 1


def update_bn(loader: Iterable, model: Module, device=None) -> None:
    """Recompute every BatchNorm's running statistics with one pass over ``loader``.

    Statistics are reset and then accumulated as a cumulative average (momentum None); a
    batch that is a list or tuple feeds the model its first element. The model's training
    flag and the layers' momenta are restored afterwards.
    """
    if device not in (None, "cpu"):
        raise ValueError(f"dtrain runs on the CPU: device must be None or 'cpu', got {device!r}")
    momenta = {}
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None
    try:
        with no_grad():
            for batch in loader:
                model(batch[0] if isinstance(batch, (list, tuple)) else batch)
    finally:
        for module, momentum in momenta.items():
            module.momentum = momentum
        model.train(was_training)


class SWALR(LRScheduler):
    """Anneal each group's learning rate to ``swa_lr`` over ``anneal_epochs``, then hold it.

    The annealing is cosine (``(1 - cos(pi t)) / 2``) or linear in ``t = step / anneal_epochs``,
    applied to the current ``group['lr']`` as PyTorch's chainable form does, so SWALR can take
    over from another scheduler mid-run. ``swa_lr`` is one value or one per param group.
    """

    _unsaved = frozenset({"optimizer", "anneal_func"})

    def __init__(self, optimizer, swa_lr: float | Sequence[float], anneal_epochs: int = 10,
                 anneal_strategy: str = "cos", last_epoch: int = -1):
        for lr, group in zip(_per_group("swa_lr", optimizer, swa_lr), optimizer.param_groups):
            group["swa_lr"] = lr
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', instead got "
                             f"{anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if isinstance(anneal_epochs, bool) or not isinstance(anneal_epochs, int) \
                or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got "
                             f"{anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t: float) -> float:
        return t

    @staticmethod
    def _cosine_anneal(t: float) -> float:
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr: float, swa_lr: float, alpha: float) -> float:
        """The rate before annealing that, blended by ``alpha``, gave ``lr``."""
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else \
            self._linear_anneal

    def get_lr(self) -> list[float]:
        """The next rates: the pre-annealing rate recovered, then blended one step further."""
        self._warn_outside_step()
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_alpha = self.anneal_func(max(0, min(1, (step - 1) / max(1, self.anneal_epochs))))
        prev_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha)
                    for group in self.optimizer.param_groups]
        alpha = self.anneal_func(max(0, min(1, step / max(1, self.anneal_epochs))))
        return [group["swa_lr"] * alpha + lr * (1 - alpha)
                for group, lr in zip(self.optimizer.param_groups, prev_lrs)]

    def load_state_dict(self, state_dict) -> None:
        """Restore the state, then the annealing function its strategy names."""
        super().load_state_dict(state_dict)
        self._set_anneal_func(self._anneal_strategy)
