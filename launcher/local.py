"""Start and supervise worker processes on this machine, and make sure none outlive the run.

Workers are started as ``python -m dtrain worker --rank N ...`` so ``ps`` names them, in their
own process group; BLAS is pinned to the job's thread count through the environment. The
supervisor reaps them at the end, on an exception and on Ctrl-C (SIGINT/SIGTERM are turned into
an orderly shutdown), escalating from SIGTERM to SIGKILL after a grace period. A worker that
crashes is restarted up to ``max_restarts`` times, like torchrun.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("dtrain.launcher")

GRACE_SECONDS = 3.0


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


try:  # loaded before any fork: the child must not import anything
    _LIBC = ctypes.CDLL(None)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def _die_with_parent() -> None:
    """In the child: ask Linux for SIGTERM when the launcher dies, even by SIGKILL."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


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
        proc.popen = subprocess.Popen(proc.argv, env=proc.env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True,
                                      preexec_fn=_die_with_parent)  # noqa: PLW1509 - prctl only
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
