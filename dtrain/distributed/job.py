"""What a training script defines: a ``Job`` subclass with settings and builder methods.

The same file runs under ``dtrain launch``, under ``dtrain.fit`` and in every worker process,
so a job builds things rather than holding them: the coordinator and each worker call
``model()`` after seeding, open the data themselves with ``train_data()``, and only the
coordinator calls ``optimizer()`` and ``scheduler()``. Settings (declared in ``settings.py``)
and the job's own hyperparameters are plain class attributes that the command line can override;
they travel to the workers with the WELCOME message, and ``apply_settings`` makes every process's
job instance see the effective values.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import os
import sys
import threading
import uuid

from .settings import (  # noqa: F401 - DTYPES and SCHEDULER_CADENCES re-exported
    DTYPES,
    HYPERPARAMETER_TYPES,
    SCHEDULER_CADENCES,
    SPEC_BY_NAME,
    SPECS,
    Settings,
    parse_value,
)

_importing = threading.local()  # set while load_job runs a script's top level


class Job:
    """Subclass this in a training script: set settings as class attributes, define builders.

    Required: ``model()``, ``loss(output, target)``, ``optimizer(model)``, ``train_data()``.
    Optional: ``scheduler(optimizer)``, ``val_data()``, ``metrics(output, target)``,
    ``phases(model)``, ``finish(model, out)`` and the hooks ``before_step(model, optimizer)``
    and ``on_epoch_end(record, model)`` (return True to stop). Plain class attributes that are
    not settings are the job's hyperparameters (overridable like settings).
    Data methods return ``(inputs, targets)`` arrays, a ``dtrain.data.TensorDataset`` or any
    ``Dataset``; arrays may be memory-mapped, since each process opens the data itself.
    """

    def model(self):
        """Build the model (called after ``dtrain.manual_seed(seed)`` in every process)."""
        raise NotImplementedError(f"{type(self).__name__} must define model()")

    def loss(self, output, target):
        """The mean loss over the samples of ``output``/``target`` (a scalar Tensor)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss(output, target)")

    def optimizer(self, model):
        """Build the optimizer over ``model``'s parameters (param groups allowed)."""
        raise NotImplementedError(f"{type(self).__name__} must define optimizer(model)")

    closure = False  # True: the optimizer re-evaluates each mini-batch via step(closure)

    def phases(self, model):
        """Optionally an ordered list of ``dtrain.Phase`` (e.g. a GAN's D then G); None: one
        phase made of ``loss`` and ``optimizer``."""
        return

    def scheduler(self, optimizer):
        """Optionally build a learning-rate scheduler; None for a constant rate."""
        return

    def train_data(self):
        """The training set: (inputs, targets) arrays, a TensorDataset or a Dataset."""
        raise NotImplementedError(f"{type(self).__name__} must define train_data()")

    def val_data(self):
        """Optionally the validation set, evaluated at every epoch end."""
        return

    def metrics(self, output, target) -> dict:
        """Per-batch metric sums; the default counts correct class predictions."""
        if output.ndim == 2 and target.ndim == 1 and target.dtype.kind in "iu":
            correct = int((output._data.argmax(axis=1) == target._data).sum())
            return {"correct": correct}
        return {}

    def before_step(self, model, optimizer) -> None:
        """Optionally act on the mini-batch's mean gradients before ``optimizer.step()``
        (runs in the coordinator after ``clip_grad_norm``; e.g. custom clipping or logging)."""

    def on_epoch_end(self, record: dict, model) -> bool | None:
        """Optionally look at an epoch's record (``train_loss``, ``val_*`` metrics); return
        True to stop training here, e.g. ``dtrain.EarlyStopping`` on a validation metric."""
        return None

    def finish(self, model, out: str | None) -> None:
        """Optionally act on the trained model at the end (e.g. write a picture into ``out``)."""

    def hyperparameters(self) -> dict:
        """The job's own knobs: plain class attributes (numbers, booleans, text) of its subclass.

        They can be overridden like settings (``--set lr=0.05``, a settings file, ``dtrain.fit``
        keywords) and reach every process of the run.
        """
        found = {}
        for cls in reversed(type(self).__mro__):
            if cls is Job or not issubclass(cls, Job):
                continue
            for name, value in vars(cls).items():
                if name.startswith("_") or name in SPEC_BY_NAME or name in vars(Job):
                    continue
                if isinstance(value, HYPERPARAMETER_TYPES):
                    found[name] = getattr(self, name)
        return found

    def settings(self, **overrides) -> Settings:
        """The job's settings with ``overrides`` (None values ignored) applied and validated.

        ``overrides`` may name settings and the job's hyperparameters; anything else is an
        error naming it. Text values (from a command line) are converted to the declared type.
        """
        values = {spec.name: getattr(self, spec.name) for spec in SPECS}
        hyper = self.hyperparameters()
        unknown = sorted(k for k in overrides if k not in values and k not in hyper)
        if unknown:
            known = ", ".join(sorted(hyper)) or "none (declare them as class attributes)"
            raise ValueError(f"unknown settings: {', '.join(unknown)} (the job's "
                             f"hyperparameters: {known}; settings: see dtrain launch --help)")
        for name, value in overrides.items():
            if value is None:
                continue
            if name in values:
                values[name] = SPEC_BY_NAME[name].parse(value)
            else:
                hyper[name] = _hyper_value(name, value, hyper[name])
        return Settings(**values, hyperparameters=hyper).validate()


def _hyper_value(name: str, value, default):
    """``value`` for hyperparameter ``name``, converted to (or checked against) its default's type."""
    kind = type(default)
    value = parse_value(value, kind, f"hyperparameter {name}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise ValueError(f"hyperparameter {name} is {kind.__name__} ({name} = {default!r} in the "
                         f"job), got {value!r}")
    return value


def apply_settings(job: Job, settings: Settings) -> Job:
    """Make the job see the run's effective settings and hyperparameters as its attributes.

    So ``CosineAnnealingLR(T_max=self.epochs)`` schedules for the epochs of ``--epochs``.
    """
    for spec in SPECS:
        setattr(job, spec.name, getattr(settings, spec.name))
    for name, value in settings.hyperparameters.items():
        setattr(job, name, value)
    return job


MAIN_GUARD_FIX = ('put the call under `if __name__ == "__main__":` (every worker imports the '
                  "script to build the job, and would otherwise start a training of its own)")


def _is_main_guard(node: ast.stmt) -> bool:
    """True for ``if __name__ == "__main__":``."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def unguarded_fit_line(path: str) -> int | None:
    """The line of a top-level ``dtrain.fit(...)`` outside ``if __name__ == "__main__":``."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                or _is_main_guard(stmt):
            continue
        for node in ast.walk(stmt):
            func = node.func if isinstance(node, ast.Call) else None
            if (isinstance(func, ast.Name) and func.id == "fit") or (
                    isinstance(func, ast.Attribute) and func.attr == "fit"
                    and isinstance(func.value, ast.Name) and func.value.id == "dtrain"):
                return node.lineno
    return None


def importing_job() -> str | None:
    """The script whose top level load_job is running right now in this thread, else None."""
    return getattr(_importing, "script", None)


for _spec in SPECS:  # the Job's class attributes come from the one declaration
    setattr(Job, _spec.name, _spec.default)


def find_job_class(namespace: dict, job_name: str | None = None, where: str = "script"):
    """The Job subclass a script defines (the only one, or the one named ``job_name``)."""
    found = {name: obj for name, obj in namespace.items()
             if inspect.isclass(obj) and issubclass(obj, Job) and obj is not Job
             and obj.__module__ == namespace.get("__name__")}
    if job_name is not None:
        if job_name not in found:
            raise ValueError(f"{where} defines no Job subclass named {job_name!r} "
                             f"(found: {', '.join(sorted(found)) or 'none'})")
        return found[job_name]
    if not found:
        raise ValueError(f"{where} defines no subclass of dtrain.Job")
    if len(found) > 1:
        raise ValueError(f"{where} defines several Job subclasses ({', '.join(sorted(found))}); "
                         "choose one with --job NAME")
    return next(iter(found.values()))


def file_digest(path: str) -> str:
    """SHA-256 of a script, so workers can prove they run the coordinator's code."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_job(script: str, job_name: str | None = None) -> tuple[Job, str]:
    """Import a training script by path and instantiate its Job; returns (job, digest)."""
    path = os.path.abspath(script)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training script not found: {script}")
    digest = file_digest(path)
    module_name = f"dtrain_job_{digest[:16]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        script_dir = os.path.dirname(path)
        if script_dir not in sys.path:
            sys.path.insert(0, script_dir)
        _importing.script = path
        try:
            spec.loader.exec_module(module)
        except BaseException as e:
            del sys.modules[module_name]
            _explain_import_failure(e, script)
            raise
        finally:
            _importing.script = None
    cls = find_job_class(vars(module), job_name, where=script)
    return cls(), digest


class ScriptError(ValueError):
    """A training script that cannot be imported to build its job; the message names it."""


def _explain_import_failure(e: BaseException, script: str) -> None:
    """Raise ScriptError for failures that are the file's, not a line of its code: not Python
    at all, or a top-level sys.exit() (which used to end ``dtrain launch`` with code 0)."""
    if isinstance(e, SystemExit):
        fix = MAIN_GUARD_FIX.replace("the call", "that call")
        raise ScriptError(f"{script}: the script called sys.exit({e.code!r}) while being "
                          f"imported to build its job: {fix}") from None
    if isinstance(e, SyntaxError):
        where = f"{script}:{e.lineno}" if e.lineno else script
        raise ScriptError(f"{where}: not a valid Python training script ({e.msg})") from None
    if isinstance(e, (UnicodeDecodeError, ValueError)) and "source" in str(e):
        raise ScriptError(f"{script}: not a valid Python training script ({e})") from None


def resolve_job(job, job_name: str | None = None) -> tuple[Job, str, str | None]:
    """Accept a Job instance, a Job class or a script path; returns (job, digest, script)."""
    if isinstance(job, (str, os.PathLike)):
        instance, digest = load_job(os.fspath(job), job_name)
        return instance, digest, os.path.abspath(os.fspath(job))
    if inspect.isclass(job) and issubclass(job, Job):
        job = job()
    if not isinstance(job, Job):
        raise TypeError(f"expected a dtrain.Job, a Job subclass or a script path, got {job!r}")
    source = inspect.getsourcefile(type(job))
    digest = file_digest(source) if source and os.path.isfile(source) else "in-process"
    return job, digest, source


def new_job_id() -> str:
    """A fresh random id for one run; every message carries it."""
    return uuid.uuid4().hex


class EarlyStopping:
    """Stop when ``metric`` has not improved for ``patience`` epochs (for ``on_epoch_end``).

    ``mode`` is ``min`` (losses) or ``max`` (accuracy); ``min_delta`` is the smallest change
    that counts as an improvement. Use one instance per job: ``return self.early(record)``.
    """

    def __init__(self, metric: str = "val_loss", patience: int = 3, mode: str = "min",
                 min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r}")
        self.metric, self.patience, self.mode, self.min_delta = metric, patience, mode, min_delta
        self.best = None
        self.bad_epochs = 0

    def __call__(self, record: dict) -> bool:
        """True when training should stop after the epoch of ``record``."""
        if self.metric not in record:
            raise KeyError(f"EarlyStopping: the epoch record has no {self.metric!r} (it has "
                           f"{', '.join(sorted(record))}); define val_data() for val_* metrics")
        value = record[self.metric]
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience
