"""Learning-rate schedulers with PyTorch's semantics, float for float.

Each scheduler rewrites ``group['lr']`` in its optimizer's ``param_groups``. The recursive
(chainable) forms are evaluated in the same order as ``torch.optim.lr_scheduler`` so that a
dtrain run and a PyTorch run see bit-identical learning rates; ``step(epoch)`` uses the
closed form where one exists, as PyTorch does. ``state_dict()`` holds only dicts, lists,
numbers, strings and None, so a msgpack checkpoint can store it.
"""

from __future__ import annotations

import math
import numbers
import types
import warnings
import weakref
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .optimizer import Optimizer

__all__ = [
    "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "ExponentialLR",
    "LRScheduler", "LambdaLR", "LinearLR", "MultiStepLR", "MultiplicativeLR", "PolynomialLR",
    "StepLR", "_LRScheduler",
]

_STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. Since PyTorch 1.1.0 the "
    "order is `optimizer.step()` first, then `lr_scheduler.step()`; the other order skips the "
    "first value of the learning-rate schedule."
)
_STEP_REPLACED_WARNING = (
    "`optimizer.step()` seems to have been replaced after the learning-rate scheduler was "
    "created, so the scheduler cannot check that `optimizer.step()` runs before "
    "`lr_scheduler.step()`."
)
_EPOCH_DEPRECATION_WARNING = (
    "Passing an epoch to `scheduler.step()` is deprecated; call `scheduler.step()` without "
    "arguments. While the argument remains, an explicit epoch uses the closed form of the "
    "schedule where one exists instead of the chainable form."
)
_GET_LR_WARNING = "To get the last learning rate computed by the scheduler, use `get_last_lr()`."
_WRAPPED_MARK = "_wrapped_by_lr_sched"


# ---------------------------------------------------------------- helpers
def _check_optimizer(optimizer: Any, who: str) -> None:
    """Reject anything without a ``param_groups`` list and a callable ``step``."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not callable(getattr(optimizer, "step", None)):
        raise TypeError(
            f"{who} needs an optimizer with a `param_groups` list and a `step` method, "
            f"got {type(optimizer).__name__}"
        )


def _per_group(name: str, optimizer: Any, value: Any) -> list:
    """Spread a scalar option over the param groups, or check a list has one per group."""
    count = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"{name} has {len(value)} values but the optimizer has {count} param groups"
            )
        return list(value)
    return [value] * count


def _group_values(optimizer: Any, key: str) -> list:
    """The value of ``key`` in every param group, in order."""
    return [group[key] for group in optimizer.param_groups]


def _plain(value: Any, where: str) -> Any:
    """Copy ``value`` as dicts/lists/numbers/strings/None, or say which entry cannot be stored."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"scheduler state {where!r} has a non-string key {key!r}")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    raise TypeError(
        f"scheduler state {where!r} holds a {type(value).__name__}, which a checkpoint cannot "
        "store (only dicts, lists, numbers, strings and None)"
    )


def _track_optimizer_steps(optimizer: Any) -> None:
    """Wrap ``optimizer.step`` so it counts its calls; schedulers read the count to warn."""
    step = optimizer.step
    if getattr(step, _WRAPPED_MARK, False):
        return
    func = getattr(step, "__func__", None)
    if func is not None and getattr(step, "__self__", None) is optimizer:
        # Hold the optimizer weakly: the wrapper lives on the optimizer itself.
        opt_ref = weakref.ref(optimizer)

        @wraps(func)
        def wrapper(*args, **kwargs):
            opt = opt_ref()
            opt._opt_step_count = getattr(opt, "_opt_step_count", 0) + 1
            return func(opt, *args, **kwargs)
    else:
        opt_ref = weakref.ref(optimizer)

        @wraps(step)
        def wrapper(*args, **kwargs):
            opt = opt_ref()
            opt._opt_step_count = getattr(opt, "_opt_step_count", 0) + 1
            return step(*args, **kwargs)

    setattr(wrapper, _WRAPPED_MARK, True)
    optimizer.step = wrapper


# ---------------------------------------------------------------- base class
class LRScheduler:
    """Base class: owns ``last_epoch``, writes ``group['lr']``, checks step order, saves state.

    Subclasses implement :meth:`get_lr` (the chainable form, from the current ``group['lr']``)
    and optionally ``_get_closed_form_lr`` (from ``base_lrs``, used by ``step(epoch)``).
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False
    _unsaved: frozenset[str] = frozenset({"optimizer"})

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer, type(self).__name__)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param_groups[{i}] has no 'initial_lr': resuming a scheduler with "
                        f"last_epoch={last_epoch} needs the optimizer state saved with it"
                    )
        self.base_lrs: list[float] = _group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        _track_optimizer_steps(optimizer)
        self._initial_step()

    def _initial_step(self) -> None:
        """Reset the step count and take the step that sets the epoch-0 learning rates."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """The learning rates for ``last_epoch``, one per param group (subclasses define it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_lr()")

    def get_last_lr(self) -> list[float]:
        """The learning rates this scheduler last wrote, one per param group."""
        return list(self._last_lr)

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (or jump to ``epoch``, deprecated) and write the new rates."""
        if self._step_count == 1:
            if not hasattr(self.optimizer.step, _WRAPPED_MARK):
                warnings.warn(_STEP_REPLACED_WARNING, UserWarning, stacklevel=2)
            elif getattr(self.optimizer, "_opt_step_count", 0) == 0:
                warnings.warn(_STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(_EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        """Compute the rates for the next (or given) epoch and write them into the groups."""
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        self._write_lrs(values)

    def _write_lrs(self, values: Sequence[float]) -> None:
        """Store one learning rate per param group and remember them for get_last_lr()."""
        groups = self.optimizer.param_groups
        if len(values) != len(groups):
            raise ValueError(
                f"{type(self).__name__} computed {len(values)} learning rates for "
                f"{len(groups)} param groups"
            )
        for group, lr in zip(groups, values):
            group["lr"] = lr
        self._last_lr = _group_values(self.optimizer, "lr")

    def _warn_outside_step(self) -> None:
        """Warn when get_lr() is called by hand: its value depends on being inside step()."""
        if not self._get_lr_called_within_step:
            warnings.warn(_GET_LR_WARNING, UserWarning, stacklevel=3)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer (and functions), as checkpoint-storable plain data."""
        return {k: _plain(v, k) for k, v in self.__dict__.items() if k not in self._unsaved}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the optimizer is restored separately)."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        base_lrs = state_dict.get("base_lrs")
        count = len(self.optimizer.param_groups)
        if base_lrs is not None and len(base_lrs) != count:
            raise ValueError(
                f"state_dict has {len(base_lrs)} base_lrs but the optimizer has {count} "
                "param groups"
            )
        self.__dict__.update(
            {k: _plain(v, k) for k, v in state_dict.items() if k not in self._unsaved}
        )


class _LRScheduler(LRScheduler):
    """The pre-2.0 name of :class:`LRScheduler`, kept so old subclasses still import."""


# ---------------------------------------------------------------- lambda-driven schedulers
def _lambdas(optimizer: Any, lr_lambda: Any, who: str) -> list[Callable[[int], float]]:
    """One callable per param group, from a single callable or a list of them."""
    if isinstance(lr_lambda, (list, tuple)):
        count = len(optimizer.param_groups)
        if len(lr_lambda) != count:
            raise ValueError(
                f"{who} got {len(lr_lambda)} lr_lambda functions for {count} param groups"
            )
        fns = list(lr_lambda)
    else:
        fns = [lr_lambda] * len(optimizer.param_groups)
    for fn in fns:
        if not callable(fn):
            raise TypeError(f"{who}: lr_lambda must be callable, got {type(fn).__name__}")
    return fns


class _LambdaState:
    """state_dict support for schedulers holding ``lr_lambdas``: save callable objects' state.

    Plain functions and lambdas are skipped (saved as None), as in PyTorch.
    """

    _unsaved = frozenset({"optimizer", "lr_lambdas"})

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state; each lambda is None or the ``__dict__`` of a callable object."""
        state = LRScheduler.state_dict(self)
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else _plain(vars(fn), "lr_lambdas")
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore scheduler state and the attributes of callable-object lambdas."""
        LRScheduler.load_state_dict(self, state_dict)
        for fn, saved in zip(self.lr_lambdas, state_dict.get("lr_lambdas", [])):
            if saved is not None:
                fn.__dict__.update(saved)


class LambdaLR(_LambdaState, LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)`` for each group."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | Sequence,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer, "LambdaLR")
        self.optimizer = optimizer
        self.lr_lambdas = _lambdas(optimizer, lr_lambda, "LambdaLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Scale each base rate by its lambda at ``last_epoch``."""
        self._warn_outside_step()
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaState, LRScheduler):
    """``lr = lr * lr_lambda(epoch)`` each epoch after the first."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | Sequence,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer, "MultiplicativeLR")
        self.optimizer = optimizer
        self.lr_lambdas = _lambdas(optimizer, lr_lambda, "MultiplicativeLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Multiply the current rates by the lambdas (unchanged at construction)."""
        self._warn_outside_step()
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [g["lr"] * fn(self.last_epoch)
                for fn, g in zip(self.lr_lambdas, self.optimizer.param_groups)]


# ---------------------------------------------------------------- step-wise decays
class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``, applied as a decay every step_size."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        if not isinstance(step_size, numbers.Integral) or step_size <= 0:
            raise ValueError(f"StepLR step_size must be a positive integer, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Multiply by gamma on every non-zero multiple of step_size."""
        self._warn_outside_step()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _group_values(self.optimizer, "lr")
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size)
                for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """``lr = base_lr * gamma ** (number of milestones <= epoch)``; repeats count twice."""

    _unsaved = frozenset({"optimizer", "milestones"})

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones = _milestone_counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Multiply by gamma ** (times epoch appears in milestones)."""
        self._warn_outside_step()
        if self.last_epoch not in self.milestones:
            return _group_values(self.optimizer, "lr")
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [g["lr"] * factor for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        ordered = sorted(self.milestones.elements())
        return [base * self.gamma ** bisect_right(ordered, self.last_epoch)
                for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state with milestones as a sorted list (repeats kept)."""
        state = super().state_dict()
        state["milestones"] = sorted(self.milestones.elements())
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore state; milestones may be a list or PyTorch's Counter."""
        super().load_state_dict(state_dict)
        if "milestones" in state_dict:
            self.milestones = _milestone_counter(state_dict["milestones"])


def _milestone_counter(milestones: Iterable[int] | Mapping[int, int]) -> Counter:
    """Count integer milestones; a mapping is read as milestone -> multiplicity."""
    items = Counter(milestones)
    for m in items:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral):
            raise ValueError(f"milestones must be integers, got {m!r}")  # noqa: TRY004 - a bad option
    return Counter({int(m): int(n) for m, n in items.items()})


class ConstantLR(LRScheduler):
    """``lr = base_lr * factor`` until epoch total_iters, then ``base_lr``."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = -1) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError(f"ConstantLR factor must be in [0, 1], got {factor}")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Scale by factor at epoch 0 and by 1/factor at total_iters."""
        self._warn_outside_step()
        if self.last_epoch == 0:
            return [g["lr"] * self.factor for g in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _group_values(self.optimizer, "lr")
        return [g["lr"] * (1.0 / self.factor) for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        done = self.last_epoch >= self.total_iters
        return [base * (self.factor + done * (1 - self.factor)) for base in self.base_lrs]


class LinearLR(LRScheduler):
    """``lr = base_lr * (s + (e - s) * min(epoch, total_iters) / total_iters)``, s/e = factors."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError(f"LinearLR start_factor must be in (0, 1], got {start_factor}")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError(f"LinearLR end_factor must be in [0, 1], got {end_factor}")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Scale by start_factor at epoch 0, then by the ratio of consecutive factors."""
        self._warn_outside_step()
        if self.last_epoch == 0:
            return [g["lr"] * self.start_factor for g in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        span = self.end_factor - self.start_factor
        ratio = 1.0 + span / (self.total_iters * self.start_factor
                              + (self.last_epoch - 1) * span)
        return [g["lr"] * ratio for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        span = self.end_factor - self.start_factor
        progress = min(self.total_iters, self.last_epoch)
        return [base * (self.start_factor + span * progress / self.total_iters)
                for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``, applied as one multiplication per epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Multiply the current rates by gamma (unchanged at construction)."""
        self._warn_outside_step()
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    """``lr = base_lr * (1 - min(epoch, total_iters) / total_iters) ** power``."""

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0,
                 last_epoch: int = -1) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Multiply by the ratio of consecutive decay factors until total_iters."""
        self._warn_outside_step()
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        decay = ((1.0 - self.last_epoch / self.total_iters)
                 / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [g["lr"] * decay for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        done = min(self.total_iters, self.last_epoch) / self.total_iters
        return [base * (1.0 - done) ** self.power for base in self.base_lrs]


# ---------------------------------------------------------------- cosine schedules
class CosineAnnealingLR(LRScheduler):
    """Cosine annealing without restarts, in PyTorch's recursive form.

    ``lr_{t+1} = eta_min + (lr_t - eta_min) * (1 + cos(pi (t+1) / T_max)) / (1 + cos(pi t / T_max))``
    which tracks ``eta_min + (base_lr - eta_min) * (1 + cos(pi t / T_max)) / 2``; past T_max
    the cosine keeps going (the rate rises again), as in PyTorch.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        if not T_max > 0:
            raise ValueError(f"CosineAnnealingLR T_max must be positive, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The next rate from the current one (closed form on a resumed first step)."""
        self._warn_outside_step()
        groups = self.optimizer.param_groups
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        if self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base - self.eta_min)
                    * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                    for base in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            # At the trough the ratio below is 0/0: add the first step of the rise instead.
            return [g["lr"] + (base - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base, g in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (g["lr"] - self.eta_min) + self.eta_min
                for g in groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [self.eta_min + (base - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi T_cur / T_i)) / 2``.

    T_cur counts epochs since the last restart (fractional with ``step(epoch)``); after each
    restart T_i is multiplied by T_mult.
    """

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1,
                 eta_min: float = 0.0, last_epoch: int = -1) -> None:
        if not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"CosineAnnealingWarmRestarts T_0 must be a positive integer, "
                             f"got {T_0!r}")
        if not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"CosineAnnealingWarmRestarts T_mult must be an integer >= 1, "
                             f"got {T_mult!r}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(  # noqa: TRY004 - PyTorch raises ValueError here
                f"CosineAnnealingWarmRestarts eta_min must be a number, got {eta_min!r}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The closed form at the current position T_cur / T_i in the cycle."""
        self._warn_outside_step()
        return [self.eta_min + (base - self.eta_min)
                * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        """Advance one epoch, or move to ``epoch`` (may be fractional, e.g. ``e + i / iters``)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"epoch must be non-negative, got {epoch}")
            self._seek(epoch)
        self.last_epoch = math.floor(epoch)
        self._get_lr_called_within_step = True
        try:
            values = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        self._write_lrs(values)

    def _seek(self, epoch: float) -> None:
        """Set T_cur and T_i for an absolute epoch."""
        if epoch < self.T_0:
            self.T_i = self.T_0
            self.T_cur = epoch
        elif self.T_mult == 1:
            self.T_cur = epoch % self.T_0
        else:
            # Cycle n starts at T_0 (T_mult**n - 1) / (T_mult - 1).
            n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
            self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
            self.T_i = self.T_0 * self.T_mult ** n
