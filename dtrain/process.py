"""What every dtrain process sets up the same way: its name in ``ps``, its BLAS thread count.

Both live below the library's distributed package, the worker runtime and the launcher, so
every layer can use them without importing a layer above it.
"""

from __future__ import annotations

from contextlib import contextmanager

_blas = []  # the BLAS libraries threadpoolctl found, looked up once per process


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


def set_process_title(title: str) -> None:
    """Name this process for ps/top (Linux prctl), so operators can find and signal it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
