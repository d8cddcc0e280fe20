"""Issue 14: a worker's step no longer gives its temporaries back to Linux and faults them in again.

A worker's batched pass of the bench MLP (784-512-512-10, 8 micro-shards of 32) took 1,612 minor
page faults every step, about 2 ms of a 12 ms pass, where the same pass in the coordinator took
none: glibc's heap thresholds, adapted to each process's allocation history, had the worker
return the step's freed arrays to the kernel. ``keep_freed_memory`` fixes the thresholds.

The child process below reproduces the pattern (a freed 1 MiB block, then ten 1 MiB arrays
allocated and freed a step); without the call it must fault, so the test cannot pass vacuously.
"""

import os
import platform
import subprocess
import sys

import pytest

CHILD = """
import resource, sys
import numpy as np
from dtrain.process import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
np.ones(1 << 18, np.float32)  # 1 MiB from mmap, freed: glibc adapts its thresholds to it
for step in range(6):
    if step == 3:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(1 << 18, np.float32) for _ in range(10)]
    del arrays
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, by_default: str = "0") -> int:
    """Minor page faults of the child's last three steps (``by_default``: the value of
    DTRAIN_KEEP_FREED_MEMORY, which decides what ``import dtrain`` does)."""
    env = {**os.environ, "DTRAIN_KEEP_FREED_MEMORY": by_default}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         timeout=60, check=True, env=env)
    return int(out.stdout)


GLIBC = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's heap thresholds")


@GLIBC
def test_steps_reuse_freed_memory():
    plain = _faults("plain")
    assert plain > 1000, f"the pattern did not fault without keep_freed_memory ({plain})"
    assert _faults("keep") < 50


@GLIBC
def test_importing_dtrain_keeps_freed_memory_unless_told_not_to():
    """A loop written by hand (no fit, no worker) gets the same heap; =0 leaves glibc's own."""
    assert _faults("plain", by_default="1") < 50
    assert _faults("plain", by_default=" 0") > 1000


def test_worker_processes_keep_freed_memory(monkeypatch):
    from dtrain.workers import worker

    called = []
    monkeypatch.setattr(worker, "keep_freed_memory", lambda: called.append(True))
    monkeypatch.setattr(worker, "Worker", lambda config: type("W", (), {"run": lambda s: 0})())
    monkeypatch.setattr(worker, "set_process_title", lambda title: None)
    monkeypatch.setattr(worker.signal, "signal", lambda *args: None)
    assert worker.main(worker.WorkerConfig(connect="tcp://127.0.0.1:1", script="x.py")) == 0
    assert called == [True]
