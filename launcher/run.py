"""One training run on this machine: coordinator here, N local workers, outputs in a directory.

``run(RunConfig)`` is what ``dtrain launch`` and ``dtrain.fit`` both call. It resolves the job,
starts and supervises the workers, drives the ``Trainer``, shows progress, writes
``metrics.jsonl`` and the final checkpoint, and always reaps every process it started.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field

from dtrain.distributed.job import (
    MAIN_GUARD_FIX,
    apply_settings,
    importing_job,
    new_job_id,
    resolve_job,
    unguarded_fit_line,
)
from dtrain.distributed.trainer import Trainer
from dtrain.records import dumps

from .local import Interrupted, LocalWorkers, prefork_workers, start_method
from .loggers import CsvLog, TensorBoardLog
from .outdir import (
    CHECKPOINTS,
    CSV,
    FINAL,
    METRICS,
    TENSORBOARD,
    OutDirError,
    check_out,
    prepare_out,
    resumed_dir,
    trim_metrics,
    write_settings,
)
from .placement import bind_elsewhere, choose_reduction, hostfile_elsewhere, slurm_elsewhere
from .preflight import check_job
from .progress import Progress

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
    job_id_given: bool = False  # job_id is the user's (--job-id): resume only that job's files
    remote_workers: int = 0  # workers started elsewhere (dtrain worker --connect ...)
    slurm_nodes: tuple = ()  # a Slurm step's nodes (reduction = auto shards over several)
    keys_dir: str | None = None  # coordinator.key_secret (+ allowed *.key) for remote workers
    allow_dir: str | None = None  # allowed workers' public keys, if not in keys_dir
    metrics_port: int | None = None  # serve /metrics and /status on this port (0: any)
    metrics_host: str = "127.0.0.1"
    monitor_address: str | None = None  # set by run(): where the monitor listens
    starter: object | None = None  # more workers (launcher.hostfile): .count, start(address,
    # job_id, client_keys, threads), poll() -> [(pid, code)], .procs, .failed, close()
    overrides: dict = field(default_factory=dict)  # settings and hyperparameters by name
    start_method: str | None = None  # local workers: "fork" or "spawn" (None: the default,
    # DTRAIN_START_METHOD or fork)
    overwrite: bool = False  # replace an earlier run's outputs in ``out``
    tensorboard: bool = False  # also write TensorBoard event files into OUT/tensorboard
    epoch_lines: bool = False  # a line per epoch on stderr even without the progress bar


class MetricsFile:
    """Append-only JSON lines: one per step and one per epoch (strict JSON: ``dtrain.records``).

    The file stays open for reading too, so when the output directory is deleted mid-run
    ``check`` recreates it with every record written so far, and says so. Each line is flushed
    as written (tests and users follow the file live) and handed to ``csv`` (a ``CsvLog``),
    which is told when the lines change otherwise (``rewind``, a recreated file).
    """

    def __init__(self, path: str | None, append: bool = False, on_recreate=None,
                 csv: CsvLog | None = None):
        self.path = path
        self.file = None
        self.identity = None  # (st_dev, st_ino) of the open file
        self.on_recreate = on_recreate  # called after the file had to be recreated
        self.csv = csv
        if path:
            self._open("a+" if append else "w+")

    def _open(self, mode: str) -> None:
        self.file = open(self.path, mode, encoding="utf-8")  # noqa: SIM115
        stat = os.fstat(self.file.fileno())
        self.identity = stat.st_dev, stat.st_ino

    def write(self, kind: str, record: dict) -> None:
        if self.file is not None:
            line = dumps({"type": kind, **record})
            self.check()
            self.file.write(line + "\n")
            self.file.flush()
            if self.csv is not None:
                self.csv.add(line)

    def check(self) -> bool:
        """Recreate the file (and its directory) if it was removed; True when it was."""
        if self.file is None or _names(self.path, self.identity):
            return False
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.file.seek(0)
        old = self.file
        self._open("w+")
        shutil.copyfileobj(old, self.file)
        self.file.flush()
        old.close()
        if self.csv is not None:
            self.csv.invalidate()
        log.warning("%s was removed during the run (was the output directory deleted?): "
                    "recreated with the records so far; earlier checkpoints are lost", self.path)
        if self.on_recreate is not None:
            self.on_recreate()
        return True

    def rewind(self, step: int, epoch: int) -> None:
        """Drop the records from ``step`` and ``epoch`` on: the run rolled back to them
        (sharded reduction: a reducer was lost) and writes them again."""
        if self.file is None:
            return
        self.file.close()
        trim_metrics(self.path, step, epoch)
        self._open("a+")
        if self.csv is not None:
            self.csv.invalidate()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _names(path: str, identity: tuple) -> bool:
    """True while ``path`` still names the file of ``identity`` (st_dev, st_ino): one stat()."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return (stat.st_dev, stat.st_ino) == identity


def _refuse_nested_run() -> None:
    """A script being imported for its job (by a worker, or by dtrain launch) never trains."""
    importing = importing_job()
    if importing is not None:
        raise LaunchError(f"dtrain.fit() was called while {importing} was being imported to "
                          f"build its job: {MAIN_GUARD_FIX}")


def _check_main_guard(script: str | None, workers: int) -> None:
    """Refuse a script whose workers would each start a training of their own on import."""
    if workers and script and os.path.isfile(script):
        line = unguarded_fit_line(script)
        if line is not None:
            raise LaunchError(f"{script}:{line}: dtrain.fit() runs at the top level of the "
                              f"script: {MAIN_GUARD_FIX}")


def run(config: RunConfig):
    """Train; returns (model, history). Raises LaunchError (or the job's error) on failure."""
    _refuse_nested_run()
    try:
        method = start_method(config.start_method)
    except ValueError as e:
        raise LaunchError(str(e)) from None
    forks = prefork_workers(config.workers, method)  # first: no thread may run yet
    try:
        return _train(config, forks)
    finally:
        if forks is not None:
            forks.close()  # the children a failed run never started


def _train(config: RunConfig, forks):
    """``run`` once the local workers are forked (``forks``, None when they are spawned)."""
    job, digest, script = resolve_job(config.job, config.job_name)
    settings = job.settings(**config.overrides)
    auto_reduction = settings.reduction == "auto"
    settings = choose_reduction(settings, _workers_elsewhere(config))
    apply_settings(job, settings)
    if config.workers < 0 or config.remote_workers < 0:
        raise ValueError(f"workers must be >= 0, got {config.workers}/{config.remote_workers}")
    if config.remote_workers and not (config.keys_dir or config.insecure):
        raise LaunchError("remote workers need CURVE keys: pass --keys DIR (dtrain keygen) "
                          "or --insecure")
    if config.workers > 0 and (script is None or not os.path.isfile(script)):
        raise LaunchError("worker processes need the job's source file; define the Job in a "
                          "file (a script or a module), or use workers=0")
    if config.tensorboard and not config.out:
        raise LaunchError("TensorBoard logs go to OUT/tensorboard: give an output directory")
    started = config.starter.count if config.starter is not None else 0
    _check_main_guard(script, config.workers + started)
    resume_state = None
    if config.resume:
        path, resume_state = _find_resume_state(
            config.resume, config.job_id if config.job_id_given else None)
        _check_resumable(path, resume_state, settings, digest, script)
        if config.out is None:
            config.out = resumed_dir(config.resume)
    try:
        if config.out:
            check_out(config.out, config.resume, config.overwrite)
        check_job(job, settings)  # a broken job fails here, in a second, before any worker
        if config.out:
            prepare_out(config.out, config.resume, config.overwrite)
            write_settings(config.out, settings)
    except OutDirError as e:
        raise LaunchError(str(e)) from None
    if config.out and resume_state is not None:
        trim_metrics(os.path.join(config.out, METRICS), resume_state["step"],
                     resume_state["epoch"])
    table = (CsvLog(os.path.join(config.out, METRICS), os.path.join(config.out, CSV))
             if config.out else None)
    metrics = MetricsFile(os.path.join(config.out, METRICS) if config.out else None,
                          append=resume_state is not None,
                          on_recreate=lambda: write_settings(config.out, settings), csv=table)
    procs = None
    executor = None
    monitor = None
    trainer = None
    board = None
    job_id = config.job_id or (resume_state or {}).get("job_id") or new_job_id()
    stopper = GracefulStop(lambda: trainer)
    stopper.install()
    try:
        if config.tensorboard:
            board = TensorBoardLog(os.path.join(config.out, TENSORBOARD))
        if config.metrics_port is not None:
            monitor = _start_monitor(config)
        distributed = config.workers > 0 or config.remote_workers > 0 or started > 0
        if distributed and not _finished(resume_state, settings):
            from dtrain.distributed.coordinator import Coordinator

            server_keys, client_keys = _keys(config)
            expected = config.workers + config.remote_workers + started
            executor = Coordinator(config.bind, expected_workers=expected, job_id=job_id,
                                   digest=digest, settings=settings, keys=server_keys)
            log.info("coordinator of job %s listening on %s; waiting for %d worker(s)", job_id,
                     executor.address, expected)
            if config.workers > 0:
                procs = LocalWorkers(config.workers, executor.address, script, job_id,
                                     job_name=type(job).__name__, threads=settings.threads,
                                     max_restarts=config.max_restarts,
                                     env=client_keys.env() if client_keys else {},
                                     insecure=config.insecure, forks=forks)
                procs.start()
                log.info("started %d local worker process(es) (%s)", config.workers,
                         "forked from this process" if forks else "new interpreters")
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
            if board is not None:
                board.step(r)
            if monitor is not None:
                monitor.on_step(r)
                publish()

        def on_epoch(r):
            metrics.write("epoch", r)
            progress.epoch(r)
            if board is not None:
                board.epoch(r)
            if table is not None:
                _refresh_csv(table)

        checkpoints = os.path.join(config.out, CHECKPOINTS) if config.out else None
        trainer = Trainer(job, settings, executor, on_step=on_step, on_epoch=on_epoch,
                          checkpoint_dir=checkpoints)
        trainer.job_id = job_id  # in-process runs too: checkpoint retention goes by it
        trainer.reduction_auto = auto_reduction
        trainer.on_rollback = metrics.rewind
        trainer.digest = digest  # a resumed run checks it continues the same script
        if resume_state is not None:
            trainer.restore(resume_state)
            log.info("resumed at step %d (epoch %d, batch %d)", trainer.step, trainer.epoch,
                     trainer.batch)
            if trainer.finished():
                log.info("the run in %s already finished at step %d (epoch %d of %d): nothing "
                         "to train; raise --epochs or --max-steps to train further",
                         config.out, trainer.step, trainer.epoch, settings.epochs)
        progress = Progress(config.progress, config.progress or config.epoch_lines,
                            trainer.batches_per_epoch(), settings.epochs)
        if monitor is not None:
            monitor.publish(state="waiting for workers", job=type(job).__name__,
                            steps_per_epoch=trainer.batches_per_epoch(), epochs=settings.epochs)
        try:
            history = trainer.run()
        finally:
            progress.close()
        if monitor is not None:
            monitor.publish(state="finished")
        job.finish(trainer.model, config.out)
        if config.out:
            from dtrain.io import save

            metrics.check()  # the directory may have been deleted since the last record
            save({"format": "dtrain-checkpoint", **trainer.state()},
                 os.path.join(config.out, FINAL))
            metrics.close()
            table.flush()
        return trainer.model, history
    finally:
        stopper.restore()
        metrics.close()
        if board is not None:
            board.close()
        if monitor is not None:
            monitor.close()
        if executor is not None:
            executor.close()  # idempotent: the trainer closed it unless it never started
        if procs is not None:
            procs.close()
        if config.starter is not None:
            config.starter.close()


def _workers_elsewhere(config: RunConfig) -> str | None:
    """Which of the run's workers are on other machines than this one, as text (None: none);
    what ``reduction = auto`` goes by."""
    if config.slurm_nodes:
        return slurm_elsewhere(config.slurm_nodes)
    hosts = getattr(config.starter, "hosts", None)
    if hosts:
        return hostfile_elsewhere(hosts)
    if config.remote_workers:
        return bind_elsewhere(config.bind)
    return None


def _check_resumable(path: str, state: dict, settings, digest: str,
                     script: str | None) -> None:
    """Refuse, before anything starts, a checkpoint of another script or other settings."""
    from dtrain.distributed.checkpoint import ResumeError, check_resumable

    try:
        check_resumable(path, state, settings, digest, script)
    except ResumeError as e:
        raise LaunchError(str(e)) from None


def _refresh_csv(table: CsvLog) -> None:
    """Bring OUT/metrics.csv up to date at an epoch end; a failure (no descriptor or disk space
    left) costs this copy, never the run: the next epoch end and the end of the run write it
    again (``CsvLog`` regenerates it after a failed write)."""
    try:
        table.flush()
    except OSError as e:
        log.warning("%s not updated (%s); the next epoch end tries again", CSV, e)


def _finished(state: dict | None, settings) -> bool:
    """True when a checkpoint's run has nothing left to train (no workers are started then)."""
    if state is None:
        return False
    steps_done = bool(settings.max_steps) and state["step"] >= settings.max_steps
    return bool(state.get("stopped")) or state["epoch"] >= settings.epochs or steps_done


def _start_monitor(config: RunConfig):
    """The metrics/status server; a busy port names the option to change."""
    from dtrain.distributed.monitor import Monitor

    try:
        monitor = Monitor(config.metrics_port, config.metrics_host)
    except OSError as e:
        raise LaunchError(f"--metrics-port {config.metrics_port}: cannot listen on "
                          f"{config.metrics_host}:{config.metrics_port} ({e.strerror or e}); "
                          "pass another port, or --metrics-port 0 for any free one") from None
    config.monitor_address = monitor.address
    return monitor


class GracefulStop:
    """Ctrl-C or SIGTERM: finish the current step, write a checkpoint, then stop.

    A second signal (or one before training started) stops at once. Either way the caller's
    cleanup reaps every process it started.
    """

    def __init__(self, get_trainer):
        self.get_trainer = get_trainer
        self.old = {}

    def handle(self, signum, frame) -> None:
        trainer = self.get_trainer()
        if trainer is None or not trainer.training or trainer.stop_requested:
            raise Interrupted(f"received signal {signum}")
        trainer.stop_requested = True
        log.warning("stopping after step %d and writing a checkpoint (press Ctrl-C again to "
                    "stop at once)", trainer.step + 1)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self.handle)

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def fit(job, workers: int = 0, *, out=None, job_name=None, progress: bool = False,
        max_restarts: int = 0, bind: str = "tcp://127.0.0.1:0", resume=None,
        insecure: bool = False, overwrite: bool = False, tensorboard: bool = False,
        **settings):
    """Train ``job`` (a Job, Job class or script path); returns (model, history).

    ``workers=0`` trains in this process; ``workers=N`` starts a coordinator here and N local
    worker processes. The result is bit-identical for every value of ``workers``. Keyword
    settings override the job's (listed below), as do keywords naming the job's own
    hyperparameters (its plain class attributes); any other keyword is an error naming it.
    With ``out`` a directory gets metrics.jsonl, checkpoints and the final checkpoint; it must
    be new or empty unless ``resume`` (continue from the newest valid checkpoint of such a
    directory) or ``overwrite=True``; ``tensorboard=True`` adds TensorBoard event files
    there. Local workers talk to the coordinator over CURVE with
    ephemeral keys unless ``insecure=True``. A script that calls ``fit`` with workers must do
    so under ``if __name__ == "__main__":``.

    Settings:
    """
    return run(RunConfig(job=job, workers=workers, job_name=job_name, out=out, bind=bind,
                         max_restarts=max_restarts, progress=progress, epoch_lines=progress,
                         resume=resume, insecure=insecure, overwrite=overwrite,
                         tensorboard=tensorboard,
                         overrides=settings))


def _document_settings(func) -> None:
    from dtrain.distributed.settings import SPECS

    lines = [f"        {s.name} ({s.type.__name__}, default {s.default!r}): {s.help}"
             for s in SPECS]
    func.__doc__ = func.__doc__.rstrip() + "\n" + "\n".join(lines) + "\n"


_document_settings(fit)


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


def _find_resume_state(directory: str, job_id: str | None = None) -> tuple[str, dict]:
    """The checkpoint to continue, as (path, state): the highest valid step of the run in
    ``directory`` (its checkpoints/ and its final checkpoint), of job ``job_id`` when given."""
    from dtrain.distributed.checkpoint import ResumeError, list_checkpoints, resume_point

    run_dir = resumed_dir(directory)
    paths = list_checkpoints(os.path.join(run_dir, CHECKPOINTS))
    final = os.path.join(run_dir, FINAL)
    if os.path.isfile(final):
        paths.append(final)
    try:
        path, state = resume_point(paths, job_id)
    except ResumeError as e:
        raise LaunchError(f"--resume {directory}: {e}") from None
    log.info("resuming from %s", path)
    return path, state


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
