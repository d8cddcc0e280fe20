"""Issue 18.8: a run that fails before its first step leaks nothing.

Each failure used to leave the coordinator's bound socket, the CURVE authenticator's thread,
zmq contexts, the monitor's server and shared-memory files behind (13 descriptors per failed
``dtrain.fit``); a service that retries would run out of descriptors.
"""

import os
import sys
import threading
import time

import pytest

import dtrain
from dtrain.distributed.security import keygen
from dtrain.launcher.run import RunConfig, run

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs


class ModelRaises(dist_jobs.MomentumGroups):
    """A job whose model() raises: it fails in the preflight check, before any worker."""

    def model(self):
        raise RuntimeError("deliberate failure in model()")


def _no_workers(tmp_path, i):
    """A CURVE coordinator (authenticator thread) that waits for workers nobody starts."""
    keys = tmp_path / "keys"
    if not keys.is_dir():
        keygen(str(keys))
    return RunConfig(job=dist_jobs.MomentumGroups, workers=0, remote_workers=1,
                     keys_dir=str(keys), metrics_port=0, out=str(tmp_path / f"r{i}"),
                     overrides={"worker_wait_timeout": 0.3})


def _bad_seed(tmp_path, i):
    """A seed no message can carry (2**200)."""
    return RunConfig(job=dist_jobs.MomentumGroups, workers=1, overrides={"seed": 2**200})


def _model_raises(tmp_path, i):
    return RunConfig(job=ModelRaises, workers=1, metrics_port=0)


def _fds() -> set:
    return set(os.listdir("/proc/self/fd"))


def _shm_files() -> set:
    """This process's shared-memory files (named dtrain-KIND-PID-...; others run tests too)."""
    mine = f"-{os.getpid()}-"
    found = set()
    for dirpath, _, files in os.walk("/dev/shm"):
        if "dtrain" in dirpath and mine in dirpath:
            found.update(os.path.join(dirpath, f) for f in files)
    return found


def _settled(before_fds: set, before_threads: int) -> tuple[set, int]:
    """Descriptors and threads left over, waiting (bounded) for threads already ending."""
    deadline = time.monotonic() + 5
    while True:
        extra = _fds() - before_fds
        threads = threading.active_count() - before_threads
        if (not extra and threads <= 0) or time.monotonic() > deadline:
            return extra, threads
        time.sleep(0.05)


@pytest.mark.parametrize("failing", [_no_workers, _bad_seed, _model_raises],
                         ids=["no-workers", "bad-seed", "model-raises"])
def test_failed_runs_leak_no_descriptor_thread_or_file(tmp_path, failing):
    with pytest.raises(Exception):  # noqa: B017 - the first failure loads what loads once
        run(failing(tmp_path, 0))
    fds, threads, shm = _fds(), threading.active_count(), _shm_files()
    for i in range(1, 4):
        with pytest.raises(Exception) as caught:
            run(failing(tmp_path, i))
        assert "Traceback" not in str(caught.value)
    extra, more_threads = _settled(fds, threads)
    leaked = {fd: _target(fd) for fd in extra}
    assert not leaked, f"descriptors leaked by 3 failed runs: {leaked}"
    assert more_threads <= 0, f"threads leaked: {[t.name for t in threading.enumerate()]}"
    assert _shm_files() - shm == set()


def test_fit_whose_workers_all_fail_leaks_nothing(monkeypatch):
    """The same through the public API, the way the issue measured it: a coordinator with
    CURVE, a shared-memory board and a local worker that exits before joining."""
    monkeypatch.setenv("DTRAIN_TEST_FAIL_IN_WORKERS", "1")

    def attempt():
        with pytest.raises(Exception, match="workers exited"):
            dtrain.fit(dist_jobs.FailsInWorkers, workers=1)

    attempt()
    fds, threads, shm = _fds(), threading.active_count(), _shm_files()
    for _ in range(3):
        attempt()
    extra, more_threads = _settled(fds, threads)
    assert not {fd: _target(fd) for fd in extra} and more_threads <= 0
    assert _shm_files() - shm == set()


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"
