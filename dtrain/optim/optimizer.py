"""``Optimizer``: the bookkeeping every algorithm shares, after PyTorch's torch/optim/optimizer.py.

The base class owns ``defaults``, ``param_groups`` (a bare list of parameters becomes one group;
``setdefault`` fills each group's options; a parameter may belong to one group only), the
per-parameter ``state``, ``zero_grad`` and ``state_dict``/``load_state_dict`` with parameters
numbered by position, as PyTorch lays them out. It also owns what every ``step`` repeats in
PyTorch: per group, the parameters that have a gradient, their state (created on the first
step), the lists of step counters, and writing the counters back. Subclasses validate their
options in ``_check_options``, name their state, and implement ``_update`` (or a ``step`` of
their own); the maths lives in plain functions over NumPy arrays.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..autograd.grad_mode import enable_grad
from ..autograd.tensor import Tensor
from .flags import check_cpu_step, check_flags


class _RequiredParameter:
    """Marks a default that every parameter group must set itself."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class Scratch:
    """Reusable temporary arrays, so a warmed-up step allocates nothing; never part of the state."""

    __slots__ = ("_buffers",)

    def __init__(self):
        self._buffers: dict = {}

    def get(self, like: np.ndarray, slot: int = 0) -> np.ndarray:
        """An uninitialised array shaped and typed like ``like``; one per ``slot`` and dtype."""
        key = (like.dtype, slot)
        buf = self._buffers.get(key)
        if buf is None or buf.size < like.size:
            buf = np.empty(like.size, like.dtype)
            self._buffers[key] = buf
        return buf[: like.size].reshape(like.shape)


_PIECE = 1 << 16  # elements per piece of ``add_scaled``: its scratch stays in cache


def add_scaled(param: np.ndarray, g: np.ndarray, alpha: float, scratch: Scratch) -> None:
    """``param += g * alpha`` in place: each product rounded, then added (PyTorch's ``add_``).

    Contiguous arrays go a cache-sized piece at a time through a small scratch (the same
    operations per element, so the same bits), instead of through a parameter-sized scratch
    that evicts the parameter and gradient from the cache on its way.
    """
    if param.size <= _PIECE or not (param.flags.c_contiguous and g.flags.c_contiguous
                                    and g.shape == param.shape):
        param += np.multiply(g, alpha, out=scratch.get(param, 1))
        return
    flat_param, flat_g = param.reshape(-1), g.reshape(-1)
    piece = scratch.get(flat_param[:_PIECE], 1)
    for start in range(0, flat_param.size, _PIECE):
        g_part = flat_g[start:start + _PIECE]
        product = np.multiply(g_part, alpha, out=piece[:g_part.size])
        flat_param[start:start + _PIECE] += product


def effective_grad(param: np.ndarray, grad: np.ndarray, weight_decay: float, maximize: bool,
                   scratch: Scratch) -> np.ndarray:
    """The gradient an update uses: ``-grad`` when maximizing, plus ``weight_decay * param``.

    Never writes into ``grad``; a changed gradient lives in ``scratch`` slot 0.
    """
    if weight_decay != 0:
        out = scratch.get(param, 0)
        np.multiply(param, weight_decay, out=out)
        if maximize:
            out -= grad  # equals (-grad) + weight_decay * param exactly
        else:
            out += grad
        return out
    if maximize:
        return np.negative(grad, out=scratch.get(param, 0))
    return grad


def each_param(params: list[np.ndarray], grads: list[np.ndarray], steps: list[float],
               weight_decay: float, maximize: bool, scratch: Scratch,
               decoupled_lr: float | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The loop of every single-tensor update: per parameter, ``steps[i] += 1``, then
    ``(i, param, g)`` with ``g`` the gradient the update uses (see ``effective_grad``).

    With ``decoupled_lr`` (decoupled weight decay, as AdamW's), the decay shrinks the parameter
    instead, ``param *= 1 - decoupled_lr * weight_decay``, and ``g`` is not decayed.
    """
    for i, param in enumerate(params):
        steps[i] += 1
        if decoupled_lr is not None and weight_decay != 0:
            param *= 1 - decoupled_lr * weight_decay
            yield i, param, effective_grad(param, grads[i], 0.0, maximize, scratch)
        else:
            yield i, param, effective_grad(param, grads[i], weight_decay, maximize, scratch)


def check_non_negative(options: dict, *names: str) -> None:
    """Raise ValueError naming the first option in ``names`` that is negative."""
    for name in names:
        value = options[name]
        if not 0.0 <= value:
            raise ValueError(f"Invalid {name} value: {value} (must be >= 0)")


def check_betas(options: dict) -> None:
    """Raise ValueError unless ``options['betas']`` is a pair of numbers in [0, 1)."""
    betas = options["betas"]
    if len(betas) != 2:
        raise ValueError(f"Invalid betas value: {betas} (must be a pair)")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid betas[{i}] value: {beta} (must be in [0, 1))")


def check_adam_options(options: dict, *non_negative: str) -> None:
    """The checks of Adam and its relatives: ``lr``, ``eps``, ``weight_decay`` and any of
    ``non_negative`` >= 0, ``betas`` in [0, 1), then the kernel flags (``check_flags``)."""
    check_non_negative(options, "lr", "eps", "weight_decay", *non_negative)
    check_betas(options)
    check_flags(options)


def _as_array(value):
    return value._data if isinstance(value, Tensor) else value


class Optimizer:
    """Base class of all optimizers: parameter groups, per-parameter state and checkpoints."""

    # state entries that count steps: loaded as Python numbers, never cast to the parameter dtype
    _counter_keys: frozenset = frozenset({"step"})
    # state entries that must have the parameter's shape (checked by load_state_dict)
    _shaped_keys: frozenset = frozenset()
    # state arrays a parameter starts with, as zeros shaped like it, after its ``step``
    _zero_state: tuple[str, ...] = ()
    # state entries ``_update`` gets as lists, one each, and replaces (counters and NumPy
    # scalars cannot change in place): in the order of its arguments; ``step`` writes them back
    _rebound_keys: tuple[str, ...] = ("step",)
    # False: every element of a parameter is updated from its own gradient and state elements
    # alone (plus per-parameter scalars), so any element slice can be stepped by itself, as a
    # reducer of one parameter range does; True: the update needs the whole tensor
    updates_whole_tensors: bool = False

    def __init__(self, params, defaults: dict[str, Any]):
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        if isinstance(params, dict):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got a single dict; wrap it in a list")
        self._check_options(defaults)
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._scratch = Scratch()
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join(lines) + "\n)"

    def _check_options(self, options: dict) -> None:
        """Raise ValueError naming any invalid hyperparameter in ``options`` (a group)."""

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own options (unset options take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if names and len(names) != len(params):
            raise ValueError("all optimizer params should be with/without names. "
                             "Some param names are missing")
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        group = dict(param_group)
        group["params"] = params
        if names:
            group["param_names"] = names
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        self._check_options(group)
        ids = [id(p) for p in params]
        if len(ids) != len(set(ids)):
            raise ValueError("a parameter group contains the same parameter more than once")
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        if taken.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        for g in self.param_groups:
            if ("param_names" in g) != bool(names):
                raise ValueError("all optimizer param groups should be with/without names")
        self.param_groups.append(group)

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of every parameter to None (default) or to zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad._data[...] = 0

    def step(self, closure: Callable | None = None):
        """Update every parameter that has a gradient; returns the closure's loss (or None).

        ``closure`` re-evaluates the model and returns the loss. Per group: the parameters with
        a gradient, their state (``_init_state``), one list per ``_rebound_keys`` entry, then
        ``_update`` with the arrays, and the rebound entries written back into the state.
        """
        if type(self)._update is Optimizer._update:
            raise NotImplementedError(f"{type(self).__name__} does not implement step()")
        loss = self._evaluate(closure)
        keys = self._rebound_keys
        for group in self.param_groups:
            params = self._with_grad(group)
            states = [self._init_state(p, group) for p in params]
            rebound = [[s[key] for s in states] for key in keys]
            self._update(group, [p._data for p in params],
                         [self._grad(p, i) for i, p in enumerate(params)], states, *rebound)
            for key, values in zip(keys, rebound):
                for s, value in zip(states, values):
                    s[key] = value
        return loss

    def _update(self, group: dict, params: list[np.ndarray], grads: list[np.ndarray],
                states: list[dict], *rebound: list) -> None:
        """Update the arrays of one group in place (the maths function's call); ``rebound``
        holds one list per ``_rebound_keys`` entry, to be updated in place."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    def _init_state(self, p: Tensor, group: dict) -> dict:
        """The parameter's state, made by ``_new_state`` when it has none (its first step)."""
        state = self.state[p]
        if not state:
            state.update(self._new_state(p, group))
        return state

    def _new_state(self, p: Tensor, group: dict) -> dict:
        """A parameter's first state: ``step`` 0, then a zero array for each ``_zero_state``."""
        state = {"step": 0.0}
        for key in self._zero_state:
            state[key] = np.zeros_like(p._data)
        return state

    @staticmethod
    def _evaluate(closure: Callable | None):
        """Call the closure with gradient recording on (as ``step`` may run under no_grad)."""
        if closure is None:
            return None
        with enable_grad():
            return closure()

    @staticmethod
    def _grad(p: Tensor, index: int) -> np.ndarray:
        """The gradient array of parameter ``p``, checked against the parameter's shape."""
        g = p.grad._data
        if g.shape != p._data.shape:
            raise ValueError(f"gradient of parameter {index} has shape {g.shape}, "
                             f"but the parameter has shape {p._data.shape}")
        return g

    def _with_grad(self, group: dict) -> list[Tensor]:
        """The group's parameters that have a gradient (the others are skipped, as in PyTorch).

        A group with any to update is checked for kernel flags the CPU cannot honour
        (``capturable``, ``differentiable``: see ``dtrain.optim.flags``), as PyTorch's step does.
        """
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            check_cpu_step(group, type(self).__name__)
        return params

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """``{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}``.

        PyTorch's layout: parameters are numbered in group order. State arrays are the live
        NumPy buffers (copy them to keep a snapshot while training goes on); scalars are Python
        numbers, so the dict can be written with ``dtrain.save``.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: _export(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore options and state from ``state_dict()`` output (arrays are copied and cast).

        Everything is checked before anything changes; a mismatch raises ValueError.
        """
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("optimizer state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"the optimizer has {len(self.param_groups)}")
        id_map: dict[int, Tensor] = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if "params" not in saved:
                raise ValueError(f"loaded parameter group {i} has no 'params' entry")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group ({i}) that doesn't match the "
                    f"size of optimizer's group: {len(saved['params'])} parameters saved, "
                    f"{len(group['params'])} in the optimizer")
            for k, p in zip(saved["params"], group["params"]):
                id_map[int(k)] = p
        new_state: defaultdict = defaultdict(dict)
        for key, value in state_dict["state"].items():
            try:
                k = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"loaded state key {key!r} is not a parameter index") from None
            if k not in id_map:
                raise ValueError(f"loaded state refers to parameter {key}, which is in no "
                                 f"parameter group (there are {len(id_map)})")
            if not isinstance(value, dict):
                raise TypeError(f"loaded state of parameter {key} must be a dict")
            p = id_map[k]
            new_state[p] = {name: self._import(v, p, name, k) for name, v in value.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new = copy.deepcopy({k: v for k, v in saved.items() if k != "params"})
            for name, default in self.defaults.items():
                if isinstance(default, tuple) and isinstance(new.get(name), list):
                    new[name] = tuple(new[name])
                new.setdefault(name, default)
            self._check_options(new)
            new["params"] = group["params"]
            if "param_names" in group and "param_names" not in new:
                new["param_names"] = group["param_names"]
            new_groups.append(new)
        self.state = new_state
        self.param_groups = new_groups

    def _import(self, value, param: Tensor, key, index: int):
        """Copy one loaded state value: arrays to the parameter's dtype, counters to numbers."""
        value = _as_array(value)
        if isinstance(value, dict):
            return {k: self._import(v, param, k, index) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._import(v, param, key, index) for v in value)
        if not isinstance(value, (np.ndarray, np.generic)):
            return value
        if key in self._counter_keys:
            if value.size != 1:
                raise ValueError(f"loaded state '{key}' of parameter {index} must be a number, "
                                 f"got shape {value.shape}")
            return value.item()
        dtype = param._data.dtype if value.dtype.kind == "f" else value.dtype
        if isinstance(value, np.generic) or (value.ndim == 0 and key not in self._shaped_keys):
            return np.array(value, dtype=dtype)[()]
        if key in self._shaped_keys and value.shape != param._data.shape:
            raise ValueError(f"loaded state '{key}' of parameter {index} has shape "
                             f"{value.shape}, but the parameter has shape {param._data.shape}")
        return np.array(value, dtype=dtype, copy=True, order="C")


def _export(value):
    """A state value as stored in ``state_dict``: arrays as they are, NumPy scalars as numbers."""
    if isinstance(value, dict):
        return {k: _export(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_export(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


def import_scalar(value, param: Tensor, key: str, index: int) -> np.floating:
    """A loaded scalar state entry (NAdam's ``mu_product``, ASGD's ``eta``/``mu``) as a NumPy
    scalar of the parameter's float dtype, the dtype PyTorch's ``load_state_dict`` casts it to."""
    value = _as_array(value)
    if np.size(value) != 1:
        raise ValueError(f"loaded state '{key}' of parameter {index} must be a number, "
                         f"got shape {np.shape(value)}")
    dtype = param._data.dtype if param._data.dtype.kind == "f" else np.dtype(np.float64)
    return dtype.type(np.asarray(value).item())
