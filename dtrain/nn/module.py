"""``Module``: the base of every layer and model, with PyTorch's registration and state_dict rules.

Parameters, buffers and submodules are registered by attribute assignment; ``state_dict`` walks
them in registration order with dotted names, so checkpoints read like PyTorch's. Each instance
also records the arguments of its outermost ``__init__`` call (``_init_args``/``_init_kwargs``),
which lets ``dtrain.save_model`` rebuild the architecture without pickle.
"""

from __future__ import annotations

import functools
from collections import OrderedDict, namedtuple
from collections.abc import Iterator

import numpy as np

from ..autograd.device import check_device, parse_to
from ..autograd.tensor import Tensor
from .parameter import Parameter

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

_global_parameter_registration_hooks: OrderedDict = OrderedDict()
_global_buffer_registration_hooks: OrderedDict = OrderedDict()


def register_module_parameter_registration_hook(hook):
    """Call ``hook(module, name, param)`` whenever any module registers a parameter (torch's global
    hook); a non-None result is registered instead. Returns a removable handle."""
    return _Handle(_global_parameter_registration_hooks, hook)


def register_module_buffer_registration_hook(hook):
    """Call ``hook(module, name, buffer)`` whenever any module registers or assigns a buffer
    (torch's global hook); a non-None result is stored instead. Returns a removable handle."""
    return _Handle(_global_buffer_registration_hooks, hook)


def _run_registration_hooks(hooks: OrderedDict, module, name: str, value):
    for hook in list(hooks.values()):
        result = hook(module, name, value)
        if result is not None:
            value = result
    return value


def _record_init(init):
    """Wrap a subclass ``__init__`` so the outermost call's arguments are kept on the instance."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "_init_args" not in self.__dict__:
            object.__setattr__(self, "_init_args", args)
            object.__setattr__(self, "_init_kwargs", dict(kwargs))
        init(self, *args, **kwargs)

    wrapper._dtrain_records_init = True
    return wrapper


class Module:
    """Base class for layers and models: owns parameters, buffers and submodules."""

    training: bool

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_dtrain_records_init", False):
            cls.__init__ = _record_init(init)

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(
                f"{type(self).__name__}.__init__() got unexpected arguments; Module.__init__ "
                "takes none"
            )
        d = self.__dict__
        d.setdefault("_init_args", ())
        d.setdefault("_init_kwargs", {})
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent_buffers"] = set()
        d["_modules"] = OrderedDict()
        d["_forward_hooks"] = OrderedDict()
        d["_forward_pre_hooks"] = OrderedDict()

    # --------------------------------------------------------------- registration
    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._forget(name)
            params[name] = _run_registration_hooks(_global_parameter_registration_hooks, self,
                                                   name, value)
        elif isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._forget(name)
            d["_modules"][name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(dtrain.nn.Parameter or None expected)"
                )
            params[name] = None
        elif params is not None and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                    "(dtrain.Tensor or None expected)"
                )
            d["_buffers"][name] = _run_registration_hooks(_global_buffer_registration_hooks,
                                                          self, name, value)
        elif params is not None and name in d["_modules"]:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as child module '{name}' "
                    "(dtrain.nn.Module or None expected)"
                )
            d["_modules"][name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str) -> None:
        d = self.__dict__
        d.pop(name, None)
        for registry in ("_parameters", "_buffers", "_modules"):
            d[registry].pop(name, None)
        d["_non_persistent_buffers"].discard(name)

    def __getattr__(self, name: str):
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            table = d.get(registry)
            if table is not None and name in table:
                return table[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if name in d[registry]:
                del d[registry][name]
                d["_non_persistent_buffers"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        keys = set(super().__dir__())
        for registry in ("_parameters", "_buffers", "_modules"):
            keys.update(self.__dict__[registry])
        return sorted(keys)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a None placeholder, e.g. ``bias=False``) under ``name``."""
        self._check_name(name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(dtrain.nn.Parameter or None required)"
            )
        self._forget(name)
        if param is not None:
            param = _run_registration_hooks(_global_parameter_registration_hooks, self, name, param)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add state that is saved in state_dict but not trained (e.g. BatchNorm running stats)."""
        self._check_name(name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                "(dtrain.Tensor or None required)"
            )
        self._forget(name)
        self._buffers[name] = _run_registration_hooks(_global_buffer_registration_hooks, self, name,
                                                      tensor)
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module under ``name``."""
        self._check_name(name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._forget(name)
        self._modules[name] = module

    register_module = add_module

    def _check_name(self, name: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot register before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"name should be a string. Got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"name can't be empty or contain \".\", got: {name!r}")

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """Yield (dotted name, module) for this module and all below it, each once."""
        memo = set() if memo is None else memo
        if self in memo and remove_duplicate:
            return
        memo.add(self)
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                               remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and child not in seen:
                seen.add(child)
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True):
        """Yield (dotted name, Parameter), shared parameters once."""
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, p in module._parameters.items():
                if p is None or (remove_duplicate and p in seen):
                    continue
                seen.add(p)
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, b in module._buffers.items():
                if b is None or b in seen:
                    continue
                seen.add(b)
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), b

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> Module:
        """The submodule at a dotted path such as ``'features.0'``."""
        module = self
        if not target:
            return module
        for part in target.split("."):
            if part not in module._modules or module._modules[part] is None:
                raise AttributeError(f"{type(module).__name__} has no attribute `{part}`")
            module = module._modules[part]
        return module

    def get_parameter(self, target: str) -> Parameter:
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._parameters:
            raise AttributeError(f"{type(module).__name__} has no parameter `{name}`")
        return module._parameters[name]

    def apply(self, fn) -> Module:
        """Call ``fn`` on every submodule (children first) and on self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------- state
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """Parameters and persistent buffers by dotted name, as detached Tensors sharing memory.

        As in torch, the values track later training (they share memory); ``clone()`` one to
        keep a snapshot. ``keep_vars=True`` gives the Parameters and buffers themselves.
        """
        out = OrderedDict() if destination is None else destination
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else Tensor._wrap(p._data)
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                out[prefix + name] = b if keep_vars else Tensor._wrap(b._data)
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(out, prefix + name + ".", keep_vars)
        return out

    def _state_targets(self) -> dict:
        """Name → tensor for every entry ``state_dict`` would hold."""
        return self.state_dict(keep_vars=True)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy values into the parameters and buffers; checks everything before changing anything.

        Missing and unexpected keys raise with ``strict=True`` (and are returned either way);
        a shape mismatch always raises. Values are copied into the existing arrays, so an
        optimizer holding the parameters keeps working.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}.")
        targets = self._state_targets()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        errors = []
        if strict:
            if unexpected:
                errors.append("Unexpected key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.append("Missing key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in missing) + ". ")
        arrays = {}
        for key, target in targets.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            value = value._data if isinstance(value, Tensor) else value
            try:
                value = np.asarray(value)
            except Exception:  # noqa: BLE001 - report any unconvertible value by key
                errors.append(f'While copying the parameter named "{key}", expected an array, '
                              f"got {type(value).__name__}.")
                continue
            if value.shape != target.shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} "
                    f"from checkpoint, the shape in current model is {tuple(target.shape)}."
                )
                continue
            if value.dtype.kind not in "fiub":
                errors.append(f"dtype {value.dtype} for {key} is not numeric.")
                continue
            arrays[key] = value
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(errors)
            )
        for key, value in arrays.items():
            target = targets[key]
            if assign:
                target._data = np.array(value, dtype=target.dtype)
            else:
                np.copyto(target._data, value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # ----------------------------------------------------------- mode and grads
    def train(self, mode: bool = True) -> Module:
        """Set training mode (dropout active, batch norm uses batch statistics) recursively."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")  # noqa: TRY004 - as torch
        for module in self.modules():
            module.__dict__["training"] = mode
        return self

    def eval(self) -> Module:
        """Set evaluation mode recursively; same as ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze (True) every parameter."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient to None (default) or to zeros."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad._data[...] = 0

    def _cast(self, dtype) -> Module:
        dtype = np.dtype(dtype)
        for t in list(self.parameters()) + list(self.buffers()):
            if t.dtype.kind == "f" and t.dtype != dtype:
                t._data = t._data.astype(dtype)
                if t.grad is not None:
                    t.grad._data = t.grad._data.astype(dtype)
        return self

    def to(self, *args, **kwargs) -> Module:
        """Cast floating parameters and buffers, in place: ``to(dtype)``, ``to(device)``,
        ``to(device, dtype)``, ``to(tensor)`` as torch; devices other than the CPU raise."""
        dtype, like, _ = parse_to(args, kwargs)
        if like is not None:
            dtype = like.dtype if like.is_floating_point() else None
        if dtype is not None and not np.dtype(dtype).kind == "f":
            raise TypeError(f"nn.Module.to only accepts floating point or complex dtypes, but got "
                            f"desired dtype={dtype}")
        return self if dtype is None else self._cast(dtype)

    def double(self) -> Module:
        return self._cast(np.float64)

    def float(self) -> Module:
        return self._cast(np.float32)

    def cpu(self) -> Module:
        """This module: its tensors are on the CPU already."""
        return self

    def cuda(self, device=None) -> Module:
        """Refused with a clear error: dtrain has no GPU backend."""
        check_device("cuda" if device is None else device if isinstance(device, str)
                     else f"cuda:{device}")
        return self

    # ----------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function'
        )

    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks or self._forward_hooks:
            return self._call_with_hooks(args, kwargs)
        return self.forward(*args, **kwargs)

    def _call_with_hooks(self, args, kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward; returns a removable handle."""
        return _Handle(self._forward_hooks, hook)

    def register_forward_pre_hook(self, hook):
        """Call ``hook(module, inputs)`` before every forward; returns a removable handle."""
        return _Handle(self._forward_pre_hooks, hook)

    # ------------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        """Layer-specific text shown inside the parentheses of ``repr``."""
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        main = type(self).__name__ + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


class _Handle:
    """Removable registration of a hook."""

    _next_id = 0

    def __init__(self, table: OrderedDict, hook):
        _Handle._next_id += 1
        self.id = _Handle._next_id
        self.table = table
        table[self.id] = hook

    def remove(self) -> None:
        self.table.pop(self.id, None)
