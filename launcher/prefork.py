"""Local workers forked from the launcher after it imported dtrain, instead of new interpreters.

A new ``python -m dtrain worker`` process pays the launcher's ~0.3 s of imports again, on the
cores the coordinator needs. So a local run forks its worker processes first, while the
launcher is still single-threaded (no coordinator, ZeroMQ context, log pump or progress bar
yet). Each child takes its own session, closes every descriptor it inherited and waits on a
socket for its orders: the worker's command line and environment, in msgpack. Then it runs that
command line in the interpreter it inherited, as ``python -m`` would, named like it in ``ps``.
A run that ends before sending the orders closes the sockets and the children leave quietly.

``ForkedChild`` is the launcher's handle on one child, with the part of ``subprocess.Popen``
the supervisor uses: ``pid``, ``stdout``, ``poll``, ``wait``, ``returncode``.
"""

from __future__ import annotations

import faulthandler
import fcntl
import io
import logging
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from contextlib import ExitStack

import msgpack

from dtrain import random as _random
from dtrain.process import blas_threads, die_with_parent, get_num_threads, set_num_threads

try:
    import setproctitle
except ImportError:  # pragma: no cover - a dependency; without it workers are spawned
    setproctitle = None

log = logging.getLogger("dtrain.launcher")

ORDERS_FD = 3  # the child's end of its orders socket, after its descriptors are tidied
READY = b"R"  # the child has its own session and closed what it inherited
CANCEL_GRACE = 5.0  # seconds a child that got no orders has to leave before SIGKILL


def fork_hazard() -> str | None:
    """Why forking this process now would be unsafe; None when it is safe.

    A forked child keeps only the thread that forked: locks held by any other thread stay
    locked in it forever. BLAS thread pools survive (OpenBLAS re-creates its pool after fork),
    but torch's OpenMP pool does not.
    """
    if not sys.platform.startswith("linux"):  # macOS system libraries are not fork-safe
        return f"workers are forked on Linux only, this is {sys.platform}"
    if threading.active_count() != 1:
        return f"{threading.active_count()} Python threads are running"
    if _zeromq_threads():
        return "a ZeroMQ context (and its I/O threads) exists"
    if "torch" in sys.modules:
        return "torch is loaded (its OpenMP threads do not survive a fork)"
    if setproctitle is None:
        return "setproctitle is not installed (ps could not show a forked worker's command)"
    return None


def _zeromq_threads() -> bool:
    """True while libzmq's background threads (named ZMQbg/...) run in this process."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                if f.read().startswith("ZMQbg"):
                    return True
        except OSError:
            continue
    return False


class ForkedChild:
    """A forked child waiting for its orders, then a ``subprocess.Popen``-like handle on it."""

    def __init__(self, pid: int, orders: socket.socket, stdout_fd: int):
        self.pid = pid
        self.args = None  # the command line it runs, once started (Popen's name)
        self.returncode = None
        self.stdout = os.fdopen(stdout_fd, "rb")
        self._orders = orders

    def start(self, argv: list, env: dict, threads: int) -> None:
        """Run ``argv`` (``python -m MODULE ARGS...``) with environment ``env`` and BLAS
        pinned to ``threads``."""
        self.args = list(argv)
        orders = msgpack.packb({
            "argv": [os.fsencode(a) for a in argv],
            "env": {os.fsencode(k): os.fsencode(v) for k, v in env.items()},
            "threads": int(threads),
        })
        try:
            if self._orders.recv(1) == READY:  # so killpg reaches it from now on
                self._orders.sendall(orders)
        except OSError:
            pass  # the child is gone: poll() tells how it ended
        finally:
            self._close_orders()

    def cancel(self) -> None:
        """No orders will come: the child leaves with code 0."""
        self._close_orders()

    def _close_orders(self) -> None:
        if self._orders is not None:
            self._orders.close()
            self._orders = None

    def poll(self) -> int | None:
        """The exit code once the child ended (-N: killed by signal N), else None."""
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; raises subprocess.TimeoutExpired after ``timeout`` seconds."""
        if timeout is None:
            while self.returncode is None:
                self._reap(0)
            return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return self.returncode

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): as Popen, say 0
            self.returncode = 0
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)


def fork_child() -> ForkedChild:
    """Fork a child that waits for ``ForkedChild.start``; call only when ``fork_hazard()`` is
    None."""
    parent_end, child_end = socket.socketpair()
    out_r, out_w = os.pipe()
    launcher = os.getpid()
    try:
        with warnings.catch_warnings():  # Python 3.12 counts BLAS pool threads too; see above
            warnings.filterwarnings("ignore", ".*fork.*", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        for fd in (out_r, out_w):
            os.close(fd)
        parent_end.close()
        child_end.close()
        raise
    if pid == 0:
        _child_main(child_end.detach(), out_w, launcher)  # never returns
    child_end.close()
    os.close(out_w)
    return ForkedChild(pid, parent_end, out_r)


class Prefork:
    """``count`` children forked now for the workers a run starts later (check
    ``fork_hazard()`` first)."""

    def __init__(self, count: int):
        self.waiting = []
        # BLAS on one thread while the children are forked, as most jobs want it: a child that
        # sets any other count starts OpenBLAS's thread pool afresh, whose new threads spin
        # for about 0.1 s of CPU on the cores the run starts on. ``close`` gives each BLAS
        # library its own count back.
        self.blas = ExitStack()
        self.blas.enter_context(blas_threads(1))
        try:
            for _ in range(count):
                self.waiting.append(fork_child())
        except BaseException:
            self.close()
            raise

    def take(self) -> ForkedChild | None:
        """A waiting child, or None once all were taken."""
        return self.waiting.pop(0) if self.waiting else None

    def close(self) -> None:
        """Send the children not taken away and reap them."""
        for child in self.waiting:
            child.cancel()
        for child in self.waiting:
            try:
                child.wait(timeout=CANCEL_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("forked worker process %d did not leave when its orders were "
                            "cancelled: killing it", child.pid)
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
            child.stdout.close()
        self.waiting = []
        self.blas.close()


def _child_main(orders_fd: int, output_fd: int, launcher: int):
    """The forked child: wait for the orders, run them, and never return into the caller."""
    code = 1
    try:
        os.setsid()  # its own session, as start_new_session=True gives a spawned worker
        die_with_parent()
        if os.getppid() != launcher:  # it died before the line above took effect
            os._exit(0)
        _reset_signals()
        _keep_only(orders_fd, output_fd)
        orders = _wait_for_orders()
        code = _run(msgpack.unpackb(orders)) if orders else 0
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException:  # noqa: BLE001 - reported on the worker's output, then exit 1
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - nothing left to report it on
                pass
        os._exit(code)


def _reset_signals() -> None:
    """The dispositions a new Python process starts with (the launcher may have its own)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at start-up
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGALRM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


def _keep_only(orders_fd: int, output_fd: int) -> None:
    """stdin from /dev/null, stdout and stderr into the launcher's pipe, the orders socket on
    ORDERS_FD; every other descriptor (the launcher's files and sockets) closed."""
    orders = fcntl.fcntl(orders_fd, fcntl.F_DUPFD, ORDERS_FD + 1)  # above what dup2 replaces
    output = fcntl.fcntl(output_fd, fcntl.F_DUPFD, ORDERS_FD + 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.dup2(orders, ORDERS_FD, inheritable=False)
    os.closerange(ORDERS_FD + 1, os.sysconf("SC_OPEN_MAX"))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = _unbuffered(1)
    sys.stderr = _unbuffered(2, errors="backslashreplace")
    if faulthandler.is_enabled():  # it wrote to a descriptor closed above
        faulthandler.enable(file=sys.stderr)


def _unbuffered(fd: int, errors: str = "strict") -> io.TextIOWrapper:
    """A text stream on ``fd`` that writes at once (PYTHONUNBUFFERED, as spawned workers)."""
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), errors=errors,
                            line_buffering=True, write_through=True)


def _wait_for_orders() -> bytes:
    """Say READY, then read the orders to their end; b"" when they were cancelled."""
    chunks = []
    try:
        os.write(ORDERS_FD, READY)
        while chunk := os.read(ORDERS_FD, 1 << 16):
            chunks.append(chunk)
    except OSError:  # the launcher closed its end before we were ready: cancelled too
        return b""
    finally:
        os.close(ORDERS_FD)
    return b"".join(chunks)


def _run(orders: dict) -> int:
    """Become the process ``python -m MODULE ARGS...`` would start, and run MODULE."""
    argv = [os.fsdecode(a) for a in orders["argv"]]
    env = {os.fsdecode(k): os.fsdecode(v) for k, v in orders["env"].items()}
    if argv[1:2] != ["-m"] or len(argv) < 3:
        raise ValueError(f"a forked child runs 'python -m MODULE ...', not {argv!r}")
    if not _rename(" ".join(argv)):  # ps would show the launcher: run the command afresh
        os.execve(argv[0], argv, env)
    os.environ.clear()
    os.environ.update(env)
    if get_num_threads() != orders["threads"]:  # BLAS is loaded: its variables came too late
        set_num_threads(orders["threads"])  # (in a forked child this starts BLAS's threads)
    _reset_logging()
    _random.reset_process_state()
    sys.argv = [argv[0], *argv[3:]]  # run_module puts the module's path first
    sys.path.insert(0, os.getcwd())  # what python -m puts first
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    return 0


def _rename(title: str) -> bool:
    """Show ``title`` as this process's command line; False when setproctitle could not.

    Called before the environment changes: setproctitle finds the memory of the command line
    from the environment's, which must still be where the launcher found it.
    """
    setproctitle.setproctitle(title)
    with open("/proc/self/cmdline", "rb") as f:
        return f.read().startswith(title.encode())


def _reset_logging() -> None:
    """No handlers and default levels, as in a new process (the launcher's write elsewhere)."""
    logging.disable(logging.NOTSET)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)


def _exit_code(e: SystemExit) -> int:
    """The status ``sys.exit(e.code)`` gives, printing a message code as Python does."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1
