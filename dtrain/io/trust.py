"""What a whole-model file may make the loading process do: which classes, how much memory.

Rebuilding a model calls the ``__init__`` of classes the file names, so the names are checked
before anything is imported. A module is allowed when it is dtrain's own, when it is already
imported (looking a class up in it runs nothing new), or when the caller lists it, or a package
containing it, in ``allowed_modules``. Anything else is refused, naming the module and class.

The constructors' arguments come from the file too, so a tiny file could ask for
``nn.Linear(100000, 100000)``. While they run, every parameter and buffer a module registers
is counted against a budget derived from the weights the file actually holds; the constructor
that goes over it is stopped at that registration, before the layer initializes (fills) it.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import threading
from collections.abc import Iterable, Iterator

import numpy as np

from ..autograd.tensor import Tensor
from .container import CheckpointError

__all__ = ["MemoryBudget", "check_allowed_modules", "memory_budget", "resolve_class"]

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Room for what a model may legitimately hold beyond its saved weights: non-persistent buffers,
# and a model built in float64 and saved after .float() (twice the saved bytes).
BUDGET_FACTOR = 2
BUDGET_SLACK = 64 << 20


def check_allowed_modules(allowed_modules) -> tuple[str, ...]:
    """The caller's ``allowed_modules`` as a tuple of dotted module names (TypeError otherwise)."""
    if allowed_modules is None:
        return ()
    if isinstance(allowed_modules, (str, bytes)) or not isinstance(allowed_modules, Iterable):
        raise TypeError(f"allowed_modules must be a list of module names, got "
                        f"{type(allowed_modules).__name__} {allowed_modules!r:.60}")
    names = tuple(allowed_modules)
    for name in names:
        if not (isinstance(name, str) and NAME_RE.fullmatch(name)):
            raise ValueError(f"allowed_modules: {name!r} is not a module name such as 'mypkg' or "
                             "'mypkg.models'")
    return names


def _covered(module_name: str, packages: Iterable[str]) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in packages)


def _find(namespace, qualname: str):
    """``namespace.a.b`` looked up in the objects' own dicts: no ``__getattr__`` code runs."""
    found = namespace
    for part in qualname.split("."):
        try:
            found = vars(found).get(part)
        except TypeError:  # an object without a __dict__ holds no classes
            return None
        if found is None:
            return None
    return found


def resolve_class(module_name, qualname, where: str, allowed: tuple[str, ...]) -> type:
    """The Module subclass a file names, after checking its module may be imported at all."""
    from ..nn.module import Module

    if not (isinstance(module_name, str) and NAME_RE.fullmatch(module_name)
            and isinstance(qualname, str) and NAME_RE.fullmatch(qualname)):
        raise CheckpointError(f"{where}: invalid class path {module_name!r}, {qualname!r}")
    if not (_covered(module_name, ("dtrain",)) or module_name in sys.modules
            or _covered(module_name, allowed)):
        raise CheckpointError(
            f"{where}: the model names class {qualname} from module {module_name!r}, which is not "
            f"imported in this process; loading would import it and run its code. If you trust "
            f"it, pass allowed_modules=[{module_name!r}] to dtrain.load (with "
            "weights_only=False) or dtrain.load_model, or import it first")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(f"{where}: cannot import module {module_name!r} that defines "
                              f"{qualname}: {e}") from e
    found = _find(module, qualname)
    if found is None:
        raise CheckpointError(f"{where}: the model's class {module_name}.{qualname} is not "
                              f"defined in this process (module {module_name} has no "
                              f"{qualname}; was it renamed, or saved from a script's __main__?)")
    if not (isinstance(found, type) and issubclass(found, Module)):
        raise CheckpointError(f"{where}: {module_name}.{qualname} is not a dtrain.nn.Module "
                              "subclass; load_model only constructs Modules")
    return found


def _nbytes(value) -> int:
    if isinstance(value, Tensor):
        return value.detach().numpy().nbytes
    return value.nbytes if isinstance(value, np.ndarray) else 0


class MemoryBudget(BaseException):
    """Raised inside a constructor that registers more tensor bytes than the budget allows.

    A BaseException, so that a constructor's ``except Exception`` cannot swallow it.
    """

    def __init__(self, module, name: str, nbytes: int, total: int, limit: int):
        super().__init__(f"registering {type(module).__name__}.{name} ({nbytes} bytes) brings "
                         f"the model to {total} bytes, over the budget of {limit} bytes")
        self.total, self.limit = total, limit


@contextlib.contextmanager
def memory_budget(saved_weights: dict) -> Iterator[int]:
    """Count the parameters and buffers registered by this thread against a budget of
    ``BUDGET_FACTOR`` times the saved weights' bytes plus ``BUDGET_SLACK``; yields the budget."""
    from ..nn import module as nn_module

    limit = BUDGET_FACTOR * sum(_nbytes(v) for v in saved_weights.values()) + BUDGET_SLACK
    thread = threading.get_ident()
    counted: dict[int, object] = {}  # holds the tensors, so their ids are not reused
    total = 0

    def count(module, name, tensor):
        nonlocal total
        if tensor is None or threading.get_ident() != thread or id(tensor) in counted:
            return None
        nbytes = _nbytes(tensor)
        if total + nbytes > limit:
            raise MemoryBudget(module, name, nbytes, total + nbytes, limit)
        counted[id(tensor)] = tensor
        total += nbytes
        return None

    handles = [nn_module.register_module_parameter_registration_hook(count),
               nn_module.register_module_buffer_registration_hook(count)]
    try:
        yield limit
    finally:
        for handle in handles:
            handle.remove()
