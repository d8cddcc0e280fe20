"""What a training script defines: a ``Job`` subclass with settings and builder methods.

The same file runs under ``dtrain launch``, under ``dtrain.fit`` and in every worker process,
so a job builds things rather than holding them: the coordinator and each worker call
``model()`` after seeding, open the data themselves with ``train_data()``, and only the
coordinator calls ``optimizer()`` and ``scheduler()``. Settings are plain class attributes that
the command line can override; they travel to the workers with the WELCOME message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import os
import sys
import uuid
from dataclasses import dataclass

SCHEDULER_CADENCES = ("epoch", "step")
DTYPES = ("float32", "float64")


@dataclass
class Settings:
    """The knobs of a run; every process of a job must agree on them, so they are sent along."""

    batch_size: int = 64
    epochs: int = 1
    micro_shards: int = 8
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False
    scheduler_step: str = "epoch"
    dtype: str = "float32"
    eval_batch_size: int = 1024
    max_steps: int = 0  # 0: no limit; otherwise stop after this many optimizer steps
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    step_timeout: float = 120.0
    min_workers: int = 1
    worker_wait_timeout: float = 60.0
    checkpoint_every: int = 0  # steps; 0: only at epoch ends when a checkpoint dir is set
    threads: int = 1  # BLAS threads per computing process; equal everywhere for equal bits
    shared_memory: bool = True  # same-machine workers exchange arrays through /dev/shm

    def validate(self) -> Settings:
        """Raise ValueError naming the first setting that makes no sense."""
        positive = ("batch_size", "micro_shards", "eval_batch_size", "min_workers", "threads")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"setting {name} must be a positive integer, got {value!r}")
        for name in ("epochs", "seed", "max_steps", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"setting {name} must be a non-negative integer, got {value!r}")
        for name in ("heartbeat_interval", "heartbeat_timeout", "step_timeout",
                     "worker_wait_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"setting {name} must be a positive number, got {value!r}")
        if not isinstance(self.shared_memory, bool):
            raise ValueError(f"setting shared_memory must be True or False, got "
                             f"{self.shared_memory!r}")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"setting heartbeat_timeout ({self.heartbeat_timeout}) must exceed "
                f"heartbeat_interval ({self.heartbeat_interval})")
        if self.scheduler_step not in SCHEDULER_CADENCES:
            raise ValueError(f"setting scheduler_step must be one of {SCHEDULER_CADENCES}, "
                             f"got {self.scheduler_step!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"setting dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.micro_shards > self.batch_size:
            raise ValueError(f"setting micro_shards ({self.micro_shards}) must not exceed "
                             f"batch_size ({self.batch_size})")
        return self

    def to_dict(self) -> dict:
        """Plain data for the wire and for checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        """Rebuild from ``to_dict`` output; unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        return cls(**data).validate()

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


class Job:
    """Subclass this in a training script: set settings as class attributes, define builders.

    Required: ``model()``, ``loss(output, target)``, ``optimizer(model)``, ``train_data()``.
    Optional: ``scheduler(optimizer)``, ``val_data()``, ``metrics(output, target)``.
    Data methods return ``(inputs, targets)`` arrays, a ``dtrain.data.TensorDataset`` or any
    ``Dataset``; arrays may be memory-mapped, since each process opens the data itself.
    """

    batch_size = Settings.batch_size
    epochs = Settings.epochs
    micro_shards = Settings.micro_shards
    seed = Settings.seed
    shuffle = Settings.shuffle
    drop_last = Settings.drop_last
    scheduler_step = Settings.scheduler_step
    dtype = Settings.dtype
    eval_batch_size = Settings.eval_batch_size
    max_steps = Settings.max_steps
    heartbeat_interval = Settings.heartbeat_interval
    heartbeat_timeout = Settings.heartbeat_timeout
    step_timeout = Settings.step_timeout
    min_workers = Settings.min_workers
    worker_wait_timeout = Settings.worker_wait_timeout
    checkpoint_every = Settings.checkpoint_every
    threads = Settings.threads
    shared_memory = Settings.shared_memory

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

    def finish(self, model, out: str | None) -> None:
        """Optionally act on the trained model at the end (e.g. write a picture into ``out``)."""

    def settings(self, **overrides) -> Settings:
        """The job's settings with ``overrides`` (None values ignored) applied and validated."""
        values = {name: getattr(self, name) for name in Settings.names() if hasattr(self, name)}
        unknown = sorted(k for k in overrides if k not in values)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Settings(**values).validate()


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
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    cls = find_job_class(vars(module), job_name, where=script)
    return cls(), digest


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
