"""What every dtrain process sets up the same way: its name in ``ps``, its BLAS thread count,
its heap.

Both live below the library's distributed package, the worker runtime and the launcher, so
every layer can use them without importing a layer above it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from contextlib import contextmanager

log = logging.getLogger("dtrain.process")

try:  # loaded now: a child between fork and exec (or a forked worker) must not import anything
    _LIBC = ctypes.CDLL(None)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None

_blas = []  # the BLAS libraries threadpoolctl found, looked up once per process

# glibc mallopt parameters (malloc.h) and the values ``keep_freed_memory`` sets
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
HEAP_MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64 bits: smaller blocks come from the heap
HEAP_TRIM_THRESHOLD = 512 << 20  # free memory at the heap's top kept for the next step up to this


def _blas_controller():
    if not _blas:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            _blas.append(None)
        else:
            _blas.append(ThreadpoolController().select(user_api="blas"))
    return _blas[0]


@contextmanager
def blas_threads(n: int):
    """Pin BLAS to ``n`` threads while computing, so every process sums in the same order.

    Scanning the loaded libraries is slow (it reads /proc/self/maps), so it happens once; when
    BLAS already runs ``n`` threads, as in worker processes started with the job's thread
    count, this costs nothing.
    """
    controller = _blas_controller()
    if controller is None or all(lib.num_threads == n for lib in controller.lib_controllers):
        yield
        return
    with controller.limit(limits=n):
        yield


def set_num_threads(n: int) -> None:
    """torch.set_num_threads: the BLAS thread count from now on (a job's ``threads`` setting
    still pins its own computations)."""
    if int(n) < 1:
        raise RuntimeError(f"set_num_threads expects a positive integer, got {n}")
    controller = _blas_controller()
    if controller is not None:
        controller.limit(limits=int(n))  # applied at once and kept: nothing restores it


def get_num_threads() -> int:
    """torch.get_num_threads: the BLAS thread count (1 when no BLAS library reports one)."""
    controller = _blas_controller()
    counts = [lib.num_threads for lib in controller.lib_controllers] if controller else []
    return max(counts, default=1)


def keep_freed_memory() -> bool:
    """Keep the memory a step frees for the next step's arrays instead of returning it to Linux.

    A training step allocates and frees the same few megabytes of temporaries every time.
    glibc decides from the allocation history so far whether a block comes from the heap or
    from its own mmap, and when free memory at the heap's top goes back to the kernel; in
    worker processes that history left every step's temporaries unmapped on free and faulted
    back in on the next step (1,600 page faults, ~2 ms of a 12 ms pass of the bench MLP).
    Fixed thresholds make the heap serve and keep them whatever the history (a process keeps
    at most its own peak); ``import dtrain`` sets them (see ``keep_freed_memory_by_default``)
    and workers again at start. Values are not changed, only where their memory comes from.
    Returns False where the C library has no ``mallopt`` (not glibc) or refuses the values.
    """
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD))


KEEP_FREED_MEMORY_VARIABLE = "DTRAIN_KEEP_FREED_MEMORY"


def keep_freed_memory_by_default(environ=os.environ) -> bool:
    """``keep_freed_memory()`` unless ``DTRAIN_KEEP_FREED_MEMORY=0``: what ``import dtrain``
    does, so a training loop written by hand (PyTorch's style) is as fast as ``dtrain.fit``'s
    (the bench CNN's step in a plain process: 53 ms with glibc's own thresholds, 38 with these).
    True when the thresholds were set."""
    if environ.get(KEEP_FREED_MEMORY_VARIABLE, "1").strip() == "0":
        return False
    return keep_freed_memory()


def set_process_title(title: str) -> None:
    """Name this process for ps/top (Linux prctl), so operators can find and signal it."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def die_with_parent() -> None:
    """In a child: ask Linux for SIGTERM when its parent dies, even by SIGKILL."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def command_line(pid: int) -> list[str]:
    """The arguments in /proc/PID/cmdline, also of a process that renamed itself.

    A process renamed with setproctitle (a forked worker: ``... dtrain worker --rank N ...``)
    shows one string with spaces where a fresh process shows arguments separated by NULs.
    Raises OSError when the process is gone.
    """
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().rstrip(b"\0").decode(errors="replace").split("\0")
    return argv[0].split() if len(argv) == 1 else argv


def raise_fd_limit() -> tuple[int, int] | None:
    """Raise this process's soft limit of open files to the hard limit; returns (old, new).

    A coordinator holds a descriptor for every connection, including connections from outsiders
    still in their handshake (dropped after a few seconds); the usual soft limit of 1024 let
    about a thousand of them starve the run's own files. The hard limit is the most an
    unprivileged process may take. None where there is no such limit (not POSIX).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        log.warning("could not raise the open-file limit from %d (%s): a flood of connections "
                    "may starve the run's own files", soft, e)
        return soft, soft
    log.info("open-file descriptor limit raised from %d to %d (connections cannot starve the "
             "run's own files)", soft, target)
    return soft, target
