"""Workers on other machines, started over ssh from a hostfile, supervised and stopped with the run.

A hostfile lists one host per line with its worker count (``node1 slots=4``; Horovod's and
DeepSpeed's convention; ``node1:4``, the form of Horovod's ``-H``, is accepted too). Each worker runs as ``ssh HOST 'cd WORKDIR && exec PYTHON -m
dtrain.launcher.hostfile --serve -- PYTHON -m dtrain worker ...'``. The small ``--serve`` wrapper on
the remote side reads one JSON line of environment (the CURVE keys of this run and the BLAS
thread pins) from its stdin, starts the worker with it, and kills the worker as soon as stdin
reaches end-of-file.

Why stdin: the keys never appear on a command line (``ps`` shows every process's arguments to
every user) and never touch the remote disk; they are fresh for every run, so no key
distribution step is needed, and ssh already encrypts and authenticates the channel. The same
pipe makes remote cleanup reliable: it stays open for the whole run and closes when the ssh
client ends for any reason (a normal stop, Ctrl-C, the launcher killed by SIGKILL, which
takes ssh along through the parent-death signal), so the remote worker never outlives the run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from dtrain.process import die_with_parent

from .env import is_number
from .local import GRACE_SECONDS, Supervisor, WorkerProcess, worker_argv

log = logging.getLogger("dtrain.launcher")

DEFAULT_SSH = "ssh -o BatchMode=yes"
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_HOST = re.compile(r"^[A-Za-z0-9_.@:%\[\]-]+$")
_HOST_SLOTS = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+)):(?P<slots>[0-9]+)$")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class HostfileError(ValueError):
    """The hostfile cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class HostSlots:
    """One hostfile entry: where to ssh and how many workers to run there."""

    host: str
    slots: int
    line: int = 0


def parse_hostfile(text: str, name: str = "hostfile") -> list[HostSlots]:
    """Parse ``host [slots=N]`` lines (``#`` comments, blank lines ignored; slots default 1)."""
    entries: list[HostSlots] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{name}:{number}"
        host, slots = words[0], 1
        colon = _HOST_SLOTS.match(host)  # Horovod's -H form, HOST:N, written into a hostfile
        if colon:
            host, slots = colon["v6"] or colon["name"], int(colon["slots"])
            if slots < 1 or any(w.startswith(("slots=", "max_slots=")) for w in words[1:]):
                raise HostfileError(f"{where}: {words[0]!r}: give a positive worker count once, "
                                    f"as {host} slots=N or {host}:N")
        if host.startswith("-") or not _HOST.match(host):
            raise HostfileError(f"{where}: {host!r} is not a host name")
        if host in seen:
            raise HostfileError(f"{where}: host {host!r} is already listed on line {seen[host]}")
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if key not in ("slots", "max_slots") or not sep:
                raise HostfileError(f"{where}: unknown field {word!r} (expected slots=N)")
            if not is_number(value) or int(value) < 1:
                raise HostfileError(f"{where}: {key} must be a positive integer, got {value!r}")
            if key == "slots":
                slots = int(value)
        seen[host] = number
        entries.append(HostSlots(host, slots, number))
    if not entries:
        raise HostfileError(f"{name}: no hosts (one per line: 'HOST slots=N')")
    return entries


def read_hostfile(path: str) -> list[HostSlots]:
    """Parse the hostfile at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise HostfileError(f"cannot read hostfile {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise HostfileError(f"hostfile {path} is not UTF-8 text (byte {e.start}): write it as "
                            "plain text, one 'HOST slots=N' per line") from None
    return parse_hostfile(text, path)


def reachable_address(address: str, hosts: list[HostSlots]) -> str:
    """The address remote workers should dial: a wildcard bind becomes this machine's name."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if host in ("0.0.0.0", "*", "[::]", "::"):
        return f"{scheme}://{socket.gethostname()}:{port}"
    remote = [h.host for h in hosts if h.host.rpartition("@")[2] not in _LOCAL_HOSTS]
    if host.startswith("127.") and remote:
        log.warning("the coordinator listens on %s, which %s cannot reach; pass --bind "
                    "tcp://ADDRESS:PORT with an address the hosts can reach", address,
                    ", ".join(remote))
    return address


def remote_command(worker_argv: list[str], workdir: str, python: str = "python3") -> str:
    """The shell command ssh runs on the host: the stdin-watching wrapper around the worker."""
    py = shlex.join(shlex.split(python))
    return (f"cd {shlex.quote(workdir)} && exec {py} -m dtrain.launcher.hostfile --serve -- "
            + shlex.join(worker_argv))


@dataclass
class HostfileWorkers(Supervisor):
    """Workers on the hostfile's hosts, over ssh; the run's ``starter`` (see launcher.run)."""

    hosts: list[HostSlots]
    script: str
    job_name: str | None = None
    ssh_command: str = DEFAULT_SSH
    remote_python: str = "python3"
    remote_workdir: str | None = None
    insecure: bool = False
    max_restarts: int = 0
    extra_args: list = field(default_factory=list)  # e.g. ["-v"]: the workers log joins
    procs: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    exited: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ssh_argv = shlex.split(self.ssh_command)
        if not self.ssh_argv:
            raise HostfileError("--ssh-command is empty")
        self.env_line = b"{}\n"

    @property
    def count(self) -> int:
        """Workers this starter runs (the coordinator waits for them)."""
        return sum(h.slots for h in self.hosts)

    def worker_argv(self, rank: int, connect: str, job_id: str) -> list[str]:
        """The ``dtrain worker`` command of one rank, as run on its host."""
        return worker_argv(shlex.split(self.remote_python), rank, connect, job_id, self.script,
                           job_name=self.job_name, insecure=self.insecure,
                           extra_args=self.extra_args)

    def start(self, address: str, job_id: str, keys=None, threads: int = 1) -> None:
        """Start every worker: ssh to each host once per slot, send the environment on stdin."""
        connect = reachable_address(address, self.hosts)
        env = {var: str(threads) for var in BLAS_VARIABLES}
        env["PYTHONUNBUFFERED"] = "1"
        if keys is not None:
            env.update(keys.env())
        self.env_line = (json.dumps(env) + "\n").encode()
        workdir = self.remote_workdir or os.getcwd()
        rank = 0
        for entry in self.hosts:
            for _ in range(entry.slots):
                command = remote_command(self.worker_argv(rank, connect, job_id), workdir,
                                         self.remote_python)
                proc = WorkerProcess(rank, [*self.ssh_argv, entry.host, command], host=entry.host)
                self.procs.append(proc)
                self._spawn(proc)
                rank += 1
        log.info("started %d workers on %d hosts over %r", rank, len(self.hosts),
                    self.ssh_command)

    def _spawn(self, proc: WorkerProcess) -> None:
        try:
            proc.popen = subprocess.Popen(proc.argv, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True,
                                          preexec_fn=die_with_parent)  # noqa: PLW1509
        except OSError as e:
            raise HostfileError(f"cannot run the ssh command {self.ssh_argv[0]!r}: "
                                f"{e.strerror}") from None
        try:
            proc.popen.stdin.write(self.env_line)
            proc.popen.stdin.flush()
        except BrokenPipeError:
            pass  # ssh already gone: poll() reports its exit code
        self._start_pump(proc, f"[{proc.host}:{proc.rank}] ")

    def _label(self, proc: WorkerProcess) -> str:
        return f"worker {proc.rank} on {proc.host}"

    def _exit_hint(self, code: int) -> str:
        return " (ssh could not connect or run the command)" if code == 255 else ""

    def _ended(self, proc: WorkerProcess) -> None:
        _close_stdin(proc.popen)  # lets a wrapper still running on the host notice

    def close(self, grace: float = GRACE_SECONDS) -> None:
        """Stop every remote worker: let it finish, then close its stdin, then signal ssh."""
        steps = (None, "eof", signal.SIGTERM, signal.SIGKILL)
        for step in steps:
            alive = [p for p in self.procs if p.popen is not None and p.popen.poll() is None]
            if not alive:
                break
            for p in alive:
                if step == "eof":
                    _close_stdin(p.popen)
                elif step is not None:
                    try:
                        os.killpg(p.popen.pid, step)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + (grace if step is not None else grace / 3)
            for p in alive:
                try:
                    p.popen.wait(timeout=max(deadline - time.monotonic(), 0.05))
                except subprocess.TimeoutExpired:
                    pass
        for p in self.procs:
            if p.popen is not None:
                _close_stdin(p.popen)
            if p.log_thread is not None:
                p.log_thread.join(timeout=1)


def _close_stdin(popen: subprocess.Popen) -> None:
    try:
        if popen.stdin is not None and not popen.stdin.closed:
            popen.stdin.close()
    except OSError:
        pass


# ---------------------------------------------------------------------- remote side


def _read_env_line(fd: int) -> dict:
    """The one JSON line the launcher sends first: {NAME: value} strings only."""
    # byte by byte from the raw descriptor: nothing past the line is buffered away, and the
    # watcher thread later blocks in os.read, which (unlike a buffered reader) never holds a
    # lock that interpreter shutdown would wait for
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            raise SystemExit("launcher.hostfile --serve: stdin closed before the environment "
                             "line")
        line += byte
    env = json.loads(line)
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in env.items()):
        raise SystemExit("launcher.hostfile --serve: the environment line is not a JSON "
                         "object of strings")
    return env


def serve(argv: list[str], stdin_fd: int = 0) -> int:
    """Remote wrapper: run ``argv`` with the env from stdin; stop it when stdin closes."""
    env = {**os.environ, **_read_env_line(stdin_fd)}
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                             preexec_fn=die_with_parent)  # noqa: PLW1509 - prctl only
    stopping = threading.Event()

    def stop(*_):
        if stopping.is_set():
            return
        stopping.set()
        if child.poll() is None:
            child.terminate()
            timer = threading.Timer(GRACE_SECONDS, lambda: child.poll() is None and child.kill())
            timer.daemon = True
            timer.start()

    def watch_stdin():
        while os.read(stdin_fd, 4096):
            pass
        stop()

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop)
    threading.Thread(target=watch_stdin, daemon=True, name="dtrain-stdin-watch").start()
    code = child.wait()
    return 128 - code if code < 0 else code


def main(args: list[str]) -> int:
    """``python -m dtrain.launcher.hostfile --serve -- COMMAND...`` (run by ssh on each host)."""
    if len(args) < 3 or args[:2] != ["--serve", "--"]:
        print("usage: python -m dtrain.launcher.hostfile --serve -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return serve(args[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
