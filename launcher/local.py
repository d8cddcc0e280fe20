"""Start and supervise worker processes on this machine, and make sure none outlive the run.

Workers run ``python -m dtrain worker --rank N ...`` (so ``ps`` names them), each in its own
session; BLAS is pinned to the job's thread count. They are forked from the launcher before it
starts any thread (``prefork``: no second interpreter start and import of dtrain), or started
as new interpreters (``start_method="spawn"``, the fallback when forking is unsafe, and how
crashed workers are restarted). The supervisor reaps them at the end, on an exception and on
Ctrl-C (SIGINT/SIGTERM are turned into an orderly shutdown), escalating from SIGTERM to SIGKILL
after a grace period. A worker that crashes is restarted up to ``max_restarts`` times, like
torchrun.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from dtrain.process import die_with_parent

from .prefork import Prefork, fork_hazard

log = logging.getLogger("dtrain.launcher")

GRACE_SECONDS = 3.0
START_METHODS = ("fork", "spawn")
START_METHOD_VARIABLE = "DTRAIN_START_METHOD"  # the default of dtrain.fit and dtrain launch
WORKER_MODULES = ("dtrain.cli", "dtrain.workers.worker")  # what a worker runs, imported once


def start_method(choice: str | None = None) -> str:
    """``choice``, else DTRAIN_START_METHOD, else "fork"; ValueError for anything else."""
    method = choice or os.environ.get(START_METHOD_VARIABLE) or "fork"
    if method not in START_METHODS:
        raise ValueError(f"start method {method!r}: expected one of {', '.join(START_METHODS)}")
    return method


def prefork_workers(count: int, method: str) -> Prefork | None:
    """``count`` worker processes forked now, waiting for LocalWorkers to start them; None
    (LocalWorkers spawns new interpreters) for the spawn method or when forking is unsafe."""
    if count <= 0 or method != "fork":
        return None
    for name in WORKER_MODULES:
        importlib.import_module(name)
    hazard = fork_hazard()
    if hazard is not None:
        log.debug("local workers start as new interpreters instead of forked: %s", hazard)
        return None
    return Prefork(count)


def worker_env(threads: int, extra: dict | None = None) -> dict:
    """The environment of a worker: BLAS pinned, unbuffered output, no inherited torch threads."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def worker_argv(python: list, rank: int, connect: str, job_id: str, script: str, *,
                job_name: str | None = None, insecure: bool = False,
                extra_args: list = ()) -> list:
    """The ``dtrain worker`` command line of one rank (``python`` runs the interpreter)."""
    argv = [*python, "-m", "dtrain", "worker", "--rank", str(rank), "--connect", connect,
            "--job-id", job_id]
    if job_name:
        argv += ["--job", job_name]
    if insecure:
        argv.append("--insecure")
    return argv + list(extra_args) + [script]


@dataclass
class WorkerProcess:
    """One supervised worker process (for remote workers: its local ssh client)."""

    rank: int
    argv: list
    env: dict | None = None
    host: str = ""
    popen: subprocess.Popen | None = None
    restarts: int = 0
    log_thread: threading.Thread | None = None


def pump_output(popen: subprocess.Popen, prefix: str) -> None:
    """Copy a child's output to our stderr, line by line, with a prefix naming the child."""
    for line in iter(popen.stdout.readline, b""):
        sys.stderr.write(prefix + line.decode(errors="replace"))
        sys.stderr.flush()
    popen.stdout.close()


class Supervisor:
    """Restart budget and bookkeeping shared by the local and the hostfile launchers.

    Subclasses set ``procs``, ``failed``, ``exited`` and ``max_restarts`` and define
    ``_spawn(proc)``; ``_label``, ``_exit_hint`` and ``_ended`` adapt the messages and cleanup.
    """

    def _label(self, proc: WorkerProcess) -> str:
        return f"worker {proc.rank}"

    def _exit_hint(self, code: int) -> str:
        return ""

    def _ended(self, proc: WorkerProcess) -> None:
        """Called once for every process that ended, before any restart."""

    def poll(self) -> list[tuple[int, int]]:
        """Restart crashed workers within the restart budget; returns (pid, code) of the dead."""
        dead = []
        for proc in self.procs:
            code = proc.popen.poll() if proc.popen else None
            if code is None or proc in self.failed or proc in self.exited:
                continue
            dead.append((proc.popen.pid, code))
            self._ended(proc)
            if code == 0:
                self.exited.append(proc)
            elif proc.restarts < self.max_restarts:
                proc.restarts += 1
                log.warning("%s exited with code %d: restarting (%d/%d)", self._label(proc),
                            code, proc.restarts, self.max_restarts)
                self._spawn(proc)
            else:
                log.error("%s exited with code %d%s", self._label(proc), code,
                          self._exit_hint(code))
                self.failed.append(proc)
        return dead

    def pids(self) -> list[int]:
        """PIDs of the processes started here."""
        return [p.popen.pid for p in self.procs if p.popen is not None]

    def _start_pump(self, proc: WorkerProcess, prefix: str) -> None:
        proc.log_thread = threading.Thread(target=pump_output, args=(proc.popen, prefix),
                                           daemon=True, name=f"dtrain-log-{proc.rank}")
        proc.log_thread.start()


@dataclass
class LocalWorkers(Supervisor):
    """N worker processes on this machine, restarted on crashes, all reaped on close()."""

    count: int
    connect: str
    script: str
    job_id: str
    job_name: str | None = None
    threads: int = 1
    max_restarts: int = 0
    log_prefix: bool = True
    extra_args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)  # extra environment (e.g. the CURVE keys)
    insecure: bool = False
    forks: Prefork | None = None  # children forked early (prefork_workers), used first
    procs: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    exited: list = field(default_factory=list)

    def argv(self, rank: int) -> list:
        return worker_argv([sys.executable], rank, self.connect, self.job_id, self.script,
                           job_name=self.job_name, insecure=self.insecure,
                           extra_args=self.extra_args)

    def start(self) -> None:
        for rank in range(self.count):
            proc = WorkerProcess(rank=rank, argv=self.argv(rank),
                                 env=worker_env(self.threads, self.env))
            self.procs.append(proc)
            self._spawn(proc)

    def _spawn(self, proc: WorkerProcess) -> None:
        child = self.forks.take() if self.forks is not None else None
        if child is not None:
            child.start(proc.argv, proc.env, self.threads)
            proc.popen = child
        else:  # threads may run by now: a new interpreter, never a fork
            proc.popen = subprocess.Popen(proc.argv, env=proc.env, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True,
                                          preexec_fn=die_with_parent)  # noqa: PLW1509 - prctl
        self._start_pump(proc, f"[worker {proc.rank}] " if self.log_prefix else "")

    def close(self, grace: float = GRACE_SECONDS) -> None:
        """Stop every worker: wait for a clean exit, then SIGTERM, then SIGKILL the group."""
        deadline = time.monotonic() + grace
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in self.procs if p.popen is not None and p.popen.poll() is None]
            if not alive:
                break
            for p in alive:
                if sig is not None:
                    try:
                        os.killpg(p.popen.pid, sig)
                    except ProcessLookupError:
                        pass
            for p in alive:
                try:
                    p.popen.wait(timeout=max(deadline - time.monotonic(), 0.05))
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + grace
        for p in self.procs:
            if p.log_thread is not None:
                p.log_thread.join(timeout=1)


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) arrived: unwind and clean up."""


def install_signal_handlers() -> dict:
    """Turn SIGTERM into KeyboardInterrupt so the same cleanup runs; returns the old handlers."""
    old = {}

    def handler(signum, frame):
        raise Interrupted(f"received signal {signum}")

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM,):
            old[sig] = signal.signal(sig, handler)
    return old


def restore_signal_handlers(old: dict) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)
