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


def set_process_title(title: str) -> None:
    """Name this process for ps/top (Linux prctl), so operators can find and signal it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
