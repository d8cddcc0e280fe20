"""One training run on this machine: coordinator here, N local workers, outputs in a directory.

``run(RunConfig)`` is what ``dtrain launch`` and ``dtrain.fit`` both call. It resolves the job,
starts and supervises the workers, drives the ``Trainer``, shows progress, writes
``metrics.jsonl`` and the final checkpoint, and always reaps every process it started.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from dtrain.distributed.job import new_job_id, resolve_job
from dtrain.distributed.trainer import Trainer

from .local import LocalWorkers, install_signal_handlers, restore_signal_handlers

log = logging.getLogger("dtrain.launcher")


class LaunchError(RuntimeError):
    """The run could not complete; the message says why."""


@dataclass
class RunConfig:
    """Everything a local run needs; the CLI and ``dtrain.fit`` both build one."""

    job: object  # script path, Job class or Job instance
    workers: int = 2
    job_name: str | None = None
    out: str | None = None
    bind: str = "tcp://127.0.0.1:0"
    max_restarts: int = 0
    progress: bool = False  # a bar (or periodic step lines) on stderr
    epoch_lines: bool = False  # one line per epoch on stderr even without progress (the CLI's)
    resume: str | None = None  # an earlier run's --out directory (or its checkpoints/)
    insecure: bool = False  # local runs use ephemeral CURVE keys unless this is set
    job_id: str | None = None  # fixed id (so restarted coordinators keep their workers)
    remote_workers: int = 0  # workers started elsewhere (dtrain worker --connect ...)
    keys_dir: str | None = None  # coordinator.key_secret (+ allowed *.key) for remote workers
    allow_dir: str | None = None  # allowed workers' public keys, if not in keys_dir
    metrics_port: int | None = None  # serve /metrics and /status on this port (0: any)
    metrics_host: str = "127.0.0.1"
    monitor_address: str | None = None  # set by run(): where the monitor listens
    starter: object | None = None  # more workers (launcher.hostfile): .count, start(address,
    # job_id, client_keys, threads), poll() -> [(pid, code)], .procs, .failed, close()
    overrides: dict = field(default_factory=dict)


class MetricsFile:
    """Append-only JSON lines: one per step and one per epoch."""

    def __init__(self, path: str | None, append: bool = False):
        mode = "a" if append else "w"
        self.file = open(path, mode, encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, kind: str, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"type": kind, **record}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class Progress:
    """A one-line progress display on stderr (a bar when it is a terminal, else periodic lines),
    and one line per epoch, which batch logs (Slurm, kubectl logs) keep with or without it."""

    def __init__(self, enabled: bool, steps_per_epoch: int, epochs: int,
                 epoch_lines: bool = False):
        self.enabled = enabled
        self.epoch_lines = enabled or epoch_lines
        self.per_epoch = steps_per_epoch
        self.epochs = epochs
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0
        self.epoch_samples = [0, 0.0]  # samples and step seconds so far, for the epoch line

    def step(self, r: dict) -> None:
        self.epoch_samples[0] += r["samples"]
        self.epoch_samples[1] += r["seconds"]
        if not self.enabled:
            return
        done = r["batch"] + 1
        width = 24
        filled = int(width * done / max(self.per_epoch, 1))
        text = (f"epoch {r['epoch'] + 1}/{self.epochs} [{'#' * filled}{'.' * (width - filled)}] "
                f"step {r['step'] + 1} loss {r['loss']:.4f} {r['samples_per_s']:.0f} samples/s")
        if self.tty:
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
        elif time.monotonic() - self.last_line > 5:
            sys.stderr.write(text + "\n")
            self.last_line = time.monotonic()

    def epoch(self, r: dict) -> None:
        samples, seconds = self.epoch_samples
        self.epoch_samples = [0, 0.0]
        if not self.epoch_lines:
            return
        parts = [f"epoch {r['epoch'] + 1}/{self.epochs}", f"train_loss {r['train_loss']:.4f}"]
        if "val_loss" in r:
            parts.append(f"val_loss {r['val_loss']:.4f}")
        if "val_accuracy" in r:
            parts.append(f"val_acc {100 * r['val_accuracy']:.2f}%")
        lr = r["lr"]
        parts.append("lr " + ", ".join(f"{v:.4g}" for v in lr))
        if seconds > 0:
            parts.append(f"{samples / seconds:.0f} samples/s")
        sys.stderr.write(("\r" if self.tty else "") + "  ".join(parts) + "\n")
        sys.stderr.flush()


def run(config: RunConfig):
    """Train; returns (model, history). Raises LaunchError (or the job's error) on failure."""
    job, digest, script = resolve_job(config.job, config.job_name)
    settings = job.settings(**config.overrides)
    if config.workers < 0 or config.remote_workers < 0:
        raise ValueError(f"workers must be >= 0, got {config.workers}/{config.remote_workers}")
    if config.remote_workers and not (config.keys_dir or config.insecure):
        raise LaunchError("remote workers need CURVE keys: pass --keys DIR (dtrain keygen) "
                          "or --insecure")
    if config.workers > 0 and (script is None or not os.path.isfile(script)):
        raise LaunchError("worker processes need the job's source file; define the Job in a "
                          "file (a script or a module), or use workers=0")
    resume_state = None
    if config.resume:
        resume_state = _find_resume_state(config.resume)
        if config.out is None:
            config.out = config.resume
    if config.out:
        os.makedirs(config.out, exist_ok=True)
    metrics = MetricsFile(os.path.join(config.out, "metrics.jsonl") if config.out else None,
                          append=resume_state is not None)
    procs = None
    executor = None
    monitor = None
    old_handlers = install_signal_handlers()
    try:
        if config.metrics_port is not None:
            from dtrain.distributed.monitor import Monitor

            monitor = Monitor(config.metrics_port, config.metrics_host)
            config.monitor_address = monitor.address
        started = config.starter.count if config.starter is not None else 0
        if config.workers > 0 or config.remote_workers > 0 or started > 0:
            from dtrain.distributed.coordinator import Coordinator

            job_id = config.job_id or (resume_state or {}).get("job_id") or new_job_id()
            server_keys, client_keys = _keys(config)
            executor = Coordinator(config.bind, expected_workers=config.workers
                                   + config.remote_workers + started, job_id=job_id,
                                   digest=digest, settings=settings, keys=server_keys)
            log.info("coordinator of job %s listening on %s", job_id, executor.address)
            if config.workers > 0:
                procs = LocalWorkers(config.workers, executor.address, script, job_id,
                                     job_name=type(job).__name__, threads=settings.threads,
                                     max_restarts=config.max_restarts,
                                     env=client_keys.env() if client_keys else {},
                                     insecure=config.insecure)
                procs.start()
            if config.starter is not None:
                config.starter.start(executor.address, job_id, client_keys, settings.threads)
            groups = [g for g in (procs, config.starter) if g is not None]
            if groups:
                executor.idle_hook = lambda: _supervise(groups, executor)
        progress = None

        def publish(kind=None, info=None):
            if monitor is not None:
                monitor.publish(**(executor.snapshot() if executor is not None else {}))

        if executor is not None:
            executor.on_event = publish

        def on_step(r):
            metrics.write("step", r)
            progress.step(r)
            if monitor is not None:
                monitor.on_step(r)
                publish()

        def on_epoch(r):
            metrics.write("epoch", r)
            progress.epoch(r)

        checkpoints = os.path.join(config.out, "checkpoints") if config.out else None
        trainer = Trainer(job, settings, executor, on_step=on_step, on_epoch=on_epoch,
                          checkpoint_dir=checkpoints)
        if resume_state is not None:
            trainer.restore(resume_state)
            log.warning("resumed at step %d (epoch %d, batch %d)", trainer.step, trainer.epoch,
                        trainer.batch)
        progress = Progress(config.progress, trainer.batches_per_epoch(), settings.epochs,
                            config.epoch_lines)
        if monitor is not None:
            monitor.publish(state="waiting for workers", job=type(job).__name__,
                            steps_per_epoch=trainer.batches_per_epoch(), epochs=settings.epochs)
        history = trainer.run()
        if monitor is not None:
            monitor.publish(state="finished")
        job.finish(trainer.model, config.out)
        if config.out:
            from dtrain.io import save

            save({"format": "dtrain-checkpoint", **trainer.state()},
                 os.path.join(config.out, "checkpoint.dtrain"))
        return trainer.model, history
    finally:
        restore_signal_handlers(old_handlers)
        metrics.close()
        if monitor is not None:
            monitor.close()
        if executor is not None:
            executor.close()  # idempotent: the trainer closed it unless it never started
        if procs is not None:
            procs.close()
        if config.starter is not None:
            config.starter.close()


def fit(job, workers: int = 0, *, out=None, job_name=None, progress: bool = False,
        max_restarts: int = 0, bind: str = "tcp://127.0.0.1:0", resume=None,
        insecure: bool = False, **settings):
    """Train ``job`` (a Job, Job class or script path); returns (model, history).

    ``workers=0`` trains in this process; ``workers=N`` starts a coordinator here and N local
    worker processes. Keyword settings (epochs, batch_size, micro_shards, seed, ...) override
    the job's. The result is bit-identical for every value of ``workers``. With ``out`` a
    directory gets metrics.jsonl, checkpoints and the final checkpoint; ``resume`` continues
    from the newest valid checkpoint of such a directory. Local workers talk to the
    coordinator over CURVE with ephemeral keys unless ``insecure=True``.
    """
    return run(RunConfig(job=job, workers=workers, job_name=job_name, out=out, bind=bind,
                         max_restarts=max_restarts, progress=progress, resume=resume,
                         insecure=insecure, overrides=settings))


def _keys(config: RunConfig):
    """(server keys, keys for local workers): ephemeral unless a key directory is given."""
    if config.insecure:
        return None, None
    from dtrain.distributed.security import ephemeral_pair, server_keys_from_dir

    server, local_client = ephemeral_pair()
    if config.keys_dir:
        from_dir = server_keys_from_dir(config.keys_dir, config.allow_dir)
        local_client.server = from_dir.public
        from_dir.allowed.add(local_client.public)
        server = from_dir
    return server, local_client


def _find_resume_state(directory: str) -> dict:
    """The newest valid checkpoint under ``directory`` (a run's out dir or its checkpoints/)."""
    from dtrain.distributed.checkpoint import latest_checkpoint

    for candidate in (os.path.join(directory, "checkpoints"), directory):
        found = latest_checkpoint(candidate)
        if found is not None:
            log.info("resuming from %s", found[0])
            return found[1]
    raise LaunchError(f"no valid checkpoint to resume from in {directory}")


def _supervise(groups: list, executor) -> str | None:
    """Called while the coordinator waits: restart crashed workers; when none can run any
    more, the reason to give up (the coordinator raises it)."""
    for procs in groups:
        for pid, code in procs.poll():
            executor.evict_pid(pid, f"process exited with code {code}")
    everyone = [p for procs in groups for p in procs.procs]
    failed = [p for procs in groups for p in procs.failed]
    if len(failed) == len(everyone) and not executor.workers:
        codes = ", ".join(str(p.popen.returncode) for p in failed)
        return f"all {len(everyone)} workers exited (codes {codes}); see their output above"
    return None
