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
    "ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
    "CyclicLR", "ExponentialLR", "LRScheduler", "LambdaLR", "LinearLR", "MultiStepLR",
    "MultiplicativeLR", "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau", "SequentialLR",
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
    bound = func is not None and getattr(step, "__self__", None) is optimizer
    # Hold the optimizer weakly: the wrapper lives on the optimizer itself.
    opt_ref = weakref.ref(optimizer)

    @wraps(func if bound else step)
    def wrapper(*args, **kwargs):
        opt = opt_ref()
        opt._opt_step_count = getattr(opt, "_opt_step_count", 0) + 1
        return func(opt, *args, **kwargs) if bound else step(*args, **kwargs)

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


# ---------------------------------------------------------------- cyclical schedules
def _set_momentum(group: dict, momentum: float, use_beta1: bool) -> None:
    """Write momentum into a group: as beta1 for Adam-style groups, else as 'momentum'."""
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def _momentum_mode(optimizer: Any, who: str) -> bool:
    """True when momentum lives in ``betas[0]``; raise if the optimizer has no momentum."""
    defaults = getattr(optimizer, "defaults", {})
    if "momentum" not in defaults and "betas" not in defaults:
        raise ValueError(f"{who} with cycle_momentum=True needs an optimizer with a 'momentum' "
                         "or 'betas' option")
    return "betas" in defaults


class CyclicLR(LRScheduler):
    """Cyclical learning rates (Smith 2017) between base_lr and max_lr, stepped per batch.

    With ``c = floor(1 + t / (up + down))`` and ``x = 1 + t / (up + down) - c`` (position in
    the cycle), the height is ``x / r`` rising and ``(x - 1) / (r - 1)`` falling
    (``r = up / (up + down)``), and ``lr = base_lr + (max_lr - base_lr) * height * scale``
    where scale is 1 (triangular), ``1 / 2**(c - 1)`` (triangular2), ``gamma**t``
    (exp_range) or ``scale_fn``. Momentum, if cycled, moves the opposite way.
    """

    _unsaved = frozenset({"optimizer", "_scale_fn_custom"})

    def __init__(self, optimizer: Optimizer, base_lr: float | list[float],
                 max_lr: float | list[float], step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular",
                 gamma: float = 1.0, scale_fn: Callable[[float], float] | None = None,
                 scale_mode: str = "cycle", cycle_momentum: bool = True,
                 base_momentum: float | list[float] = 0.8,
                 max_momentum: float | list[float] = 0.9, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer, "CyclicLR")
        self.optimizer = optimizer
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)
        if not step_size_up > 0:
            raise ValueError(f"CyclicLR step_size_up must be positive, got {step_size_up!r}")
        if step_size_down is not None and step_size_down < 0:
            raise ValueError(
                f"CyclicLR step_size_down must be non-negative, got {step_size_down!r}")
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(f"CyclicLR mode must be 'triangular', 'triangular2' or 'exp_range' "
                             f"(or give scale_fn), got {mode!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"CyclicLR scale_mode must be 'cycle' or 'iterations', "
                             f"got {scale_mode!r}")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_mode()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _momentum_mode(optimizer, "CyclicLR")
            self.base_momentums = _per_group("base_momentum", optimizer, base_momentum)
            self.max_momentums = _per_group("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for high, low, group in zip(self.max_momentums, self.base_momentums,
                                            optimizer.param_groups):
                    _set_momentum(group, high, self.use_beta1)
                    group["max_momentum"] = high
                    group["base_momentum"] = low
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_mode(self) -> None:
        """The built-in policies fix scale_mode; a custom scale_fn keeps the given one."""
        if self._scale_fn_custom is None:
            self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"

    def scale_fn(self, x: float) -> float:
        """The amplitude scale at cycle number or iteration ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def get_lr(self) -> list[float]:
        """Rates at batch ``last_epoch``; also writes the cycled momentum into the groups."""
        self._warn_outside_step()
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            height = x / self.step_ratio
        else:
            height = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base + (top - base) * height * scale
               for base, top in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            for low, high, group in zip(self.base_momentums, self.max_momentums,
                                        self.optimizer.param_groups):
                _set_momentum(group, high - (high - low) * height * scale, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state; a custom scale_fn is saved as its ``__dict__`` if it is an object."""
        state = super().state_dict()
        fn = self._scale_fn_custom
        state["_scale_fn_custom"] = (
            None if fn is None or isinstance(fn, types.FunctionType)
            else _plain(vars(fn), "_scale_fn_custom"))
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore state and the attributes of a callable-object scale_fn."""
        super().load_state_dict(state_dict)
        saved = state_dict.get("_scale_fn_custom")
        if saved is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(saved)
        self._init_scale_mode()


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin), stepped per batch.

    ``initial_lr = max_lr / div_factor`` rises to ``max_lr`` over the first ``pct_start`` of
    ``total_steps``, then falls to ``min_lr = initial_lr / final_div_factor``; with
    ``three_phase`` it falls back to initial_lr symmetrically first. Each phase anneals with
    ``end + (start - end) / 2 * (1 + cos(pi p))`` ('cos') or ``(end - start) p + start``
    ('linear'), p the fraction of the phase done. Momentum, if cycled, moves the opposite way.
    """

    def __init__(self, optimizer: Optimizer, max_lr: float | list[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | list[float] = 0.85,
                 max_momentum: float | list[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer, "OneCycleLR")
        self.optimizer = optimizer
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR pct_start must be a float in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR anneal_strategy must be 'cos' or 'linear', "
                             f"got {anneal_strategy!r}")
        self._schedule_phases = _one_cycle_phases(self.total_steps, pct_start, three_phase)
        self._anneal_func_type = anneal_strategy
        max_lrs = _per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for top, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _momentum_mode(optimizer, "OneCycleLR")
            highs = _per_group("max_momentum", optimizer, max_momentum)
            lows = _per_group("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for high, low, group in zip(highs, lows, optimizer.param_groups):
                    _set_momentum(group, high, self.use_beta1)
                    group["max_momentum"] = high
                    group["base_momentum"] = low
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        """Move from start to end as pct goes from 0 to 1, by the chosen strategy."""
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        """Rates at batch ``last_epoch``; also writes the cycled momentum into the groups."""
        self._warn_outside_step()
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR stepped {step} times but total_steps is "
                             f"{self.total_steps}")
        lrs = []
        last = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or i == last:
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]],
                                            pct))
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]],
                                                group[phase["end_momentum"]], pct)
                        _set_momentum(group, momentum, self.use_beta1)
                    break
                start_step = end_step
        return lrs


def _total_steps(total_steps: int | None, epochs: int | None,
                 steps_per_epoch: int | None) -> int:
    """OneCycleLR's cycle length: total_steps, or epochs * steps_per_epoch."""
    if total_steps is not None:
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"OneCycleLR total_steps must be a positive integer, "
                             f"got {total_steps!r}")
        return total_steps
    if epochs is None or steps_per_epoch is None:
        raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
    if not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"OneCycleLR epochs must be a positive integer, got {epochs!r}")
    if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
        raise ValueError(f"OneCycleLR steps_per_epoch must be a positive integer, "
                         f"got {steps_per_epoch!r}")
    return epochs * steps_per_epoch


def _one_cycle_phases(total: int, pct_start: float, three_phase: bool) -> list[dict[str, Any]]:
    """Phase table: last step of each phase and the group keys it anneals between."""
    def phase(end_step: float, lr: tuple[str, str], momentum: tuple[str, str]) -> dict:
        return {"end_step": end_step, "start_lr": lr[0], "end_lr": lr[1],
                "start_momentum": momentum[0], "end_momentum": momentum[1]}

    rise = phase(float(pct_start * total) - 1, ("initial_lr", "max_lr"),
                 ("max_momentum", "base_momentum"))
    if not three_phase:
        return [rise, phase(total - 1, ("max_lr", "min_lr"), ("base_momentum", "max_momentum"))]
    return [
        rise,
        phase(float(2 * pct_start * total) - 2, ("max_lr", "initial_lr"),
              ("base_momentum", "max_momentum")),
        phase(total - 1, ("initial_lr", "min_lr"), ("max_momentum", "max_momentum")),
    ]


# ---------------------------------------------------------------- combinators
def _check_children(schedulers: Sequence[LRScheduler], optimizer: Any, who: str) -> None:
    """Children must exist, share the optimizer and not be ReduceLROnPlateau."""
    if len(schedulers) < 1:
        raise ValueError(f"{who} needs at least one scheduler in schedulers, got none")
    for i, child in enumerate(schedulers):
        if not hasattr(child, "optimizer"):
            raise TypeError(f"{who}: schedulers[{i}] ({type(child).__name__}) has no optimizer")
        if isinstance(child, ReduceLROnPlateau):
            raise ValueError(  # noqa: TRY004 - PyTorch raises ValueError here
                f"{who} cannot hold ReduceLROnPlateau (schedulers[{i}]): its step() needs a "
                "metric")
        if child.optimizer is not optimizer:
            raise ValueError(f"{who}: schedulers[{i}] ({type(child).__name__}) belongs to a "
                             "different optimizer")


class _ChildState:
    """state_dict support for schedulers that hold other schedulers in ``_schedulers``."""

    _unsaved = frozenset({"optimizer", "_schedulers"})

    def state_dict(self) -> dict[str, Any]:
        """Own state plus each child's state_dict under '_schedulers'."""
        state = LRScheduler.state_dict(self)
        state["_schedulers"] = [child.state_dict() for child in self._schedulers]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore own state and every child's."""
        children = state_dict.get("_schedulers", [])
        if len(children) != len(self._schedulers):
            raise ValueError(f"state_dict has {len(children)} scheduler states for "
                             f"{len(self._schedulers)} schedulers")
        LRScheduler.load_state_dict(self, state_dict)
        for child, saved in zip(self._schedulers, children):
            child.load_state_dict(saved)


class SequentialLR(_ChildState, LRScheduler):
    """Run ``schedulers[i]`` between ``milestones[i-1]`` and ``milestones[i]``.

    At each milestone the next scheduler restarts at its epoch 0 (closed form where it has
    one), from the rates the previous scheduler left.
    """

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler],
                 milestones: Sequence[int], last_epoch: int = -1) -> None:
        _check_optimizer(optimizer, "SequentialLR")
        _check_children(schedulers, optimizer, "SequentialLR")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR needs one fewer milestones than schedulers, got "
                             f"{len(milestones)} milestones for {len(schedulers)} schedulers")
        if any(isinstance(m, bool) or not isinstance(m, numbers.Integral) for m in milestones):
            raise ValueError(f"SequentialLR milestones must be integers, got {list(milestones)}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"SequentialLR milestones must be increasing, "
                             f"got {list(milestones)}")
        self._schedulers = list(schedulers)
        self._milestones = [int(m) for m in milestones]
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.recursive_undo()
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def recursive_undo(self, sched: Any = None) -> None:
        """Take back the initial step every (nested) child took when it was built."""
        target = self if sched is None else sched
        if hasattr(target, "_schedulers"):
            for child in target._schedulers:
                self.recursive_undo(child)
        elif hasattr(target, "last_epoch"):
            target.last_epoch -= 1

    def step(self) -> None:
        """Step the scheduler whose interval holds the new epoch (restart it at a milestone)."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        child = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            child._update_lr(0)
        else:
            child.step()
        self._last_lr = child.get_last_lr()


class ChainedScheduler(_ChildState, LRScheduler):
    """Step every scheduler in turn on each step(), so their multiplicative effects compose."""

    def __init__(self, schedulers: Sequence[LRScheduler],
                 optimizer: Optimizer | None = None) -> None:
        if len(schedulers) < 1:
            raise ValueError("ChainedScheduler needs at least one scheduler in schedulers, "
                             "got none")
        optimizer = optimizer if optimizer is not None else schedulers[0].optimizer
        _check_children(schedulers, optimizer, "ChainedScheduler")
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = _group_values(optimizer, "lr")

    def step(self) -> None:
        """Step each chained scheduler once, in order."""
        for child in self._schedulers:
            child.step()
        self._last_lr = _group_values(self.optimizer, "lr")


# ---------------------------------------------------------------- metric-driven
class ReduceLROnPlateau(LRScheduler):
    """Multiply the rates by ``factor`` when a metric stops improving for ``patience`` steps.

    A metric improves on ``best`` when it is below ``best * (1 - threshold)`` ('min', 'rel'),
    below ``best - threshold`` ('min', 'abs'), above ``best * (1 + threshold)`` ('max',
    'rel') or above ``best + threshold`` ('max', 'abs'). After a reduction, ``cooldown``
    steps pass before bad steps count again; rates never go below ``min_lr`` and changes
    smaller than ``eps`` are skipped.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | list[float] = 0, eps: float = 1e-8) -> None:
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be < 1.0, got {factor}")
        _check_optimizer(optimizer, "ReduceLROnPlateau")
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group("min_lr", optimizer, min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = _per_group("min_lr", optimizer, min_lr)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _group_values(optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        """Forget the best value and the bad-step and cooldown counters."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: Any, epoch: int | None = None) -> None:
        """Record one value of the monitored metric and reduce the rates if it has plateaued."""
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(_EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self) -> None:
        """Scale every group's rate by factor, floored at its min_lr."""
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"the optimizer now has {len(groups)} param groups but ReduceLROnPlateau "
                    f"was given {len(self.min_lrs)} min_lr values; update `min_lrs`")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, floor in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                group["lr"] = new

    @property
    def in_cooldown(self) -> bool:
        """Whether reductions are paused after a recent one."""
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau threshold_mode must be 'rel' or 'abs', "
                             f"got {threshold_mode!r}")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore state and re-check mode and threshold_mode."""
        super().load_state_dict(state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)
