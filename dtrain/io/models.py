"""Whole models as plain data: the record ``dtrain.save(model)`` writes and its rebuilding.

A record stores a model as its class's import path, the arguments of its ``__init__`` call
(recorded by ``Module``; nested Modules encoded the same way), its ``state_dict`` and its mode
flags; it is saved as an ordinary checkpoint. Trust model: ``build_model`` calls the
``__init__`` of the classes named in the file, as ``torch.load`` of a whole model would, but
only of ``dtrain.nn.Module`` subclasses from modules the caller allows (see ``trust``), within a
memory budget; it runs no code carried in the file's data.
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np

from .. import random as _random
from ..autograd.device import device as _Device
from ..autograd.dtypes import dtype as _DType
from ..autograd.tensor import Tensor
from .container import CheckpointError
from .trust import MemoryBudget, check_allowed_modules, memory_budget, resolve_class

__all__ = ["build_model", "is_model_record", "model_record"]

_MODEL_FORMAT = "dtrain.model"
_MODEL_VERSION = 1
_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, np.dtype, np.generic,
               np.ndarray, Tensor, _Device, _DType)


def _class_path(cls: type) -> tuple[str, str]:
    """(module, qualname) of a class, checked to resolve back to it so load can import it."""
    module_name, qualname = cls.__module__, cls.__qualname__
    if "<locals>" in qualname:
        raise TypeError(f"dtrain.save_model: class {qualname} is defined inside a function; "
                        "load_model imports classes by name, so define it at module level")
    found = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not cls:
        raise TypeError(f"dtrain.save_model: class {module_name}.{qualname} cannot be found "
                        "again by that name (was it created dynamically or renamed?)")
    return module_name, qualname


class _ArchEncoder:
    """Encodes a module's recorded ``__init__`` arguments as a tagged tree, Modules recursively.

    Tags: ``["module", index, module_name, qualname, args, kwargs]``, ``["ref", index]`` for a
    Module seen before (so shared submodules stay shared), ``["list"|"tuple", items]``,
    ``["dict", [[key, value], ...]]`` and ``["value", v]`` for plain values.
    """

    def __init__(self):
        self.memo: dict[int, int] = {}

    def module(self, m, where: str = "") -> list:
        if id(m) in self.memo:
            return ["ref", self.memo[id(m)]]
        index = self.memo[id(m)] = len(self.memo)
        cls = type(m)
        module_name, qualname = _class_path(cls)
        args = m.__dict__.get("_init_args", ())
        kwargs = m.__dict__.get("_init_kwargs", {})
        where = f"{where} > {qualname}.__init__" if where else f"{qualname}.__init__"
        args_out = [self.value(a, f"{where} argument {i}") for i, a in enumerate(args)]
        kwargs_out = [[k, self.value(v, f"{where} argument {k!r}")] for k, v in kwargs.items()]
        return ["module", index, module_name, qualname, args_out, kwargs_out]

    def value(self, v, where: str) -> list:
        from ..nn.module import Module

        if isinstance(v, Module):
            return self.module(v, where)
        if isinstance(v, (list, tuple)):
            tag = "list" if isinstance(v, list) else "tuple"
            return [tag, [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]]
        if isinstance(v, dict):
            items = []
            for k, x in v.items():
                if type(k) not in (str, int, bool):
                    raise TypeError(f"dtrain.save_model: cannot save {where}: dict key {k!r} of "
                                    f"type {type(k).__name__} (str and int keys only)")
                items.append([k, self.value(x, f"{where}[{k!r}]")])
            return ["dict", items]
        if isinstance(v, _LEAF_TYPES) or (isinstance(v, type) and issubclass(v, np.generic)):
            return ["value", v]
        raise TypeError(f"dtrain.save_model: cannot save {where}: {type(v).__qualname__} values "
                        "cannot be stored (numbers, strings, None, bytes, dtypes, arrays, "
                        "Tensors, Modules and lists/tuples/dicts of those can)")


def model_record(model) -> dict:
    """The plain-data record of a whole model: class paths, ``__init__`` arguments, weights, modes.

    Raises TypeError naming the first ``__init__`` argument that cannot be stored (a lambda,
    an open file, ...) or a class that cannot be imported again by name.
    """
    from ..nn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"dtrain.save_model expects a dtrain.nn.Module, got {type(model).__name__}")
    return {
        "format": _MODEL_FORMAT,
        "version": _MODEL_VERSION,
        "arch": _ArchEncoder().module(model),
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "state_dict": dict(model.state_dict()),
    }


def is_model_record(obj) -> bool:
    """Whether a loaded object is a whole-model record (which only ``build_model`` turns into a
    model) rather than plain data."""
    return isinstance(obj, dict) and obj.get("format") == _MODEL_FORMAT


class _ArchDecoder:
    """Rebuilds modules from the tagged tree written by ``_ArchEncoder``."""

    def __init__(self, where: str, allowed: tuple[str, ...], budget: int):
        self.where = where
        self.allowed = allowed
        self.budget = budget
        self.built: dict[int, object] = {}

    def bad(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: malformed model architecture: {what}")

    def value(self, node):
        if not (isinstance(node, list) and node and node[0] in
                ("module", "ref", "list", "tuple", "dict", "value")):
            raise self.bad(f"unexpected node {node!r:.80}")
        tag = node[0]
        if tag == "module":
            return self.module(node)
        if len(node) != 2:
            raise self.bad(f"{tag} node of length {len(node)}")
        if tag == "ref":
            if node[1] not in self.built:
                raise self.bad(f"reference to unknown module {node[1]!r}")
            return self.built[node[1]]
        if tag == "value":
            return node[1]
        if tag == "dict":
            if not isinstance(node[1], list) or not all(
                    isinstance(kv, list) and len(kv) == 2 for kv in node[1]):
                raise self.bad("dict node is not a list of pairs")
            return {k: self.value(v) for k, v in node[1]}
        if not isinstance(node[1], list):
            raise self.bad(f"{tag} node without items")
        items = [self.value(x) for x in node[1]]
        return items if tag == "list" else tuple(items)

    def module(self, node):
        if len(node) != 6 or not isinstance(node[4], list) or not isinstance(node[5], list):
            raise self.bad("module node is not [module, index, path, qualname, args, kwargs]")
        _, index, module_name, qualname, args, kwargs = node
        if index in self.built:
            raise self.bad(f"module index {index!r} used twice")
        cls = resolve_class(module_name, qualname, self.where, self.allowed)
        args = [self.value(a) for a in args]
        if not all(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], str)
                   for kv in kwargs):
            raise self.bad(f"keyword arguments of {qualname} are not [name, value] pairs")
        kwargs = {k: self.value(v) for k, v in kwargs}
        what = f"{self.where}: constructing {module_name}.{qualname} from its saved arguments"
        try:
            module = cls(*args, **kwargs)
        except MemoryBudget as e:
            raise CheckpointError(f"{what} was stopped: {e} (the file's weights justify no more; "
                                  "a file that asks for more memory than it holds is refused)"
                                  ) from None
        except MemoryError as e:
            raise CheckpointError(f"{what} ran out of memory (budget {self.budget} bytes from the "
                                  f"file's weights): {e}") from None
        except Exception as e:
            raise CheckpointError(f"{what} failed: {type(e).__name__}: {e}") from e
        self.built[index] = module
        return module


@contextlib.contextmanager
def _private_rng():
    """Run constructors on a throwaway generator so loading leaves the global RNG as it was."""
    saved = _random._generator[0]
    _random._generator[0] = np.random.Generator(np.random.PCG64(0))
    try:
        yield
    finally:
        _random._generator[0] = saved


def _restore_state(model, record: dict, where: str) -> None:
    state = record["state_dict"]
    for key, target in model.state_dict(keep_vars=True).items():
        saved = state.get(key)
        saved = saved.detach().numpy() if isinstance(saved, Tensor) else saved
        # a model cast after construction (e.g. .double()) keeps its saved dtype
        if (isinstance(saved, np.ndarray) and saved.shape == target.shape
                and saved.dtype != target.dtype):
            target._data = target._data.astype(saved.dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: the model rebuilt from its saved __init__ arguments does "
                              f"not match the saved weights (was it changed after construction?)"
                              f": {e}") from e
    for name, flag in record["training"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError as e:
            raise CheckpointError(f"{where}: saved mode for unknown submodule {name!r}") from e
        module.training = bool(flag)
    for name, flag in record["requires_grad"].items():
        try:
            model.get_parameter(name).requires_grad = bool(flag)
        except AttributeError as e:
            raise CheckpointError(f"{where}: saved requires_grad for unknown parameter "
                                  f"{name!r}") from e


def _check_record(record, where: str) -> None:
    if not is_model_record(record):
        raise CheckpointError(f"{where}: not a dtrain.save_model file (use dtrain.load for "
                              "state_dicts and other objects)")
    if record.get("version") != _MODEL_VERSION:
        raise CheckpointError(f"{where}: unsupported save_model version {record.get('version')!r}"
                              f" (this dtrain reads version {_MODEL_VERSION})")
    missing = {"arch", "training", "requires_grad", "state_dict"} - record.keys()
    if missing or not isinstance(record["training"], dict) or not isinstance(
            record["requires_grad"], dict):
        raise CheckpointError(f"{where}: malformed save_model record (missing or invalid "
                              f"{sorted(missing) or 'mode fields'})")
    if not isinstance(record["arch"], list) or record["arch"][:1] != ["module"]:
        raise CheckpointError(f"{where}: malformed save_model record (arch is not a module)")
    if not isinstance(record["state_dict"], dict):
        raise CheckpointError(f"{where}: model state_dict is not a dict")


def build_model(record, where: str, allowed_modules=None):
    """The model a record describes: check and import its classes, construct, load weights.

    Only classes from dtrain, from modules already imported, or from ``allowed_modules`` (names
    of modules or packages) are imported, and only ``dtrain.nn.Module`` subclasses constructed;
    constructors are held to a memory budget (see ``trust``). The global RNG is left untouched.
    """
    allowed = check_allowed_modules(allowed_modules)
    _check_record(record, where)
    with _private_rng(), memory_budget(record["state_dict"]) as budget:
        model = _ArchDecoder(where, allowed, budget).value(record["arch"])
    _restore_state(model, record, where)
    return model
