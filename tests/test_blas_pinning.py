"""A run holds BLAS at the job's ``threads`` from its start to its end, in every process.

Only each step's computation used to run under the job's count; between steps the coordinator
(the job's ``before_step`` hook, clipping, the optimizer) and a worker building its replica ran
on whatever the process had, all the machine's cores by default. A hook multiplying matrices
then gave different bits on coordinators with different core counts. The hooks below run
outside any computation, so they see the count the run holds; after the run the caller's count
is back.
"""

import os
import threading
from typing import ClassVar

import pytest

import dtrain
from dtrain import nn, optim

if dtrain.process._blas_controller() is None:  # pragma: no cover - NumPy without a BLAS
    pytest.skip("no BLAS library found by threadpoolctl", allow_module_level=True)


class CountsThreads(dtrain.Job):
    """A small regression whose ``before_step`` notes the BLAS thread count it runs under."""

    batch_size = 16
    epochs = 2
    micro_shards = 4
    threads = 1
    seen: ClassVar[list] = []  # what before_step saw, in order

    def model(self):
        return nn.Linear(8, 1)

    def loss(self, output, target):
        return nn.functional.mse_loss(output, target)

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=0.01)

    def train_data(self):
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 8)).astype(np.float32)
        return x, x.sum(axis=1, keepdims=True)

    def before_step(self, model, optimizer):
        CountsThreads.seen.append(dtrain.get_num_threads())


@pytest.fixture
def two_blas_threads():
    """The caller's count is 2 (not the job's 1), and is put back whatever the test does."""
    before = dtrain.get_num_threads()
    dtrain.set_num_threads(2)
    CountsThreads.seen = []
    try:
        yield
    finally:
        dtrain.set_num_threads(before)


def test_an_in_process_run_holds_the_jobs_count_between_steps_and_gives_it_back(
        two_blas_threads):
    dtrain.fit(CountsThreads, workers=0)
    assert len(CountsThreads.seen) == 8
    assert set(CountsThreads.seen) == {1}
    assert dtrain.get_num_threads() == 2


def test_a_coordinator_and_its_worker_hold_the_jobs_count_and_give_it_back(
        two_blas_threads):
    """The worker runs in a thread of this process here, so its hold on the process-wide count
    has to end with its run, as the coordinator's does (a worker process just exits)."""
    from dtrain.launcher.run import RunConfig, run
    from dtrain.workers.worker import Worker, WorkerConfig
    from test_faults import _free_port

    address = f"tcp://127.0.0.1:{_free_port()}"
    worker = Worker(WorkerConfig(connect=address, script=__file__, job_name="CountsThreads",
                                 name="w0"))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        run(RunConfig(job=CountsThreads, workers=0, remote_workers=1, bind=address,
                      insecure=True))
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(CountsThreads.seen) == 8
    assert set(CountsThreads.seen) == {1}
    assert dtrain.get_num_threads() == 2


class NotesThreadsInModel(CountsThreads):
    """Writes "pid count" to $DTRAIN_TEST_THREADS_FILE whenever a process builds its model: a
    worker builds its replica on WELCOME, outside any computation."""

    def model(self):
        import os

        with open(os.environ["DTRAIN_TEST_THREADS_FILE"], "a") as f:
            f.write(f"{os.getpid()} {dtrain.get_num_threads()}\n")
        return super().model()


def test_a_worker_process_holds_the_jobs_count_from_its_welcome(
        two_blas_threads, tmp_path, monkeypatch):
    """A ``dtrain worker`` started on its own (as on another machine) learns the job's count at
    WELCOME; BLAS starts it on 2 threads here, and it builds its replica with the job's 1."""
    import os
    import subprocess
    import sys

    from dtrain.launcher.run import RunConfig, run
    from test_faults import _free_port

    notes = tmp_path / "threads.txt"
    monkeypatch.setenv("DTRAIN_TEST_THREADS_FILE", str(notes))
    address = f"tcp://127.0.0.1:{_free_port()}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "dtrain", "worker", "--insecure", "--connect", address, "--job",
         "NotesThreadsInModel", __file__], env={**os.environ, "OPENBLAS_NUM_THREADS": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run(RunConfig(job=NotesThreadsInModel, workers=0, remote_workers=1, bind=address,
                      insecure=True))
        assert worker.wait(timeout=60) == 0
    finally:
        worker.kill()
        worker.wait()
    seen = dict(line.split() for line in notes.read_text().splitlines())
    assert seen.get(str(worker.pid)) == "1", seen


FORKING_LAUNCHER = """
import json, os, sys
from dtrain.launcher.prefork import Prefork
from dtrain.process import get_num_threads

before = get_num_threads()
forks = Prefork(1)
during = get_num_threads()
child = forks.take()
child.start([sys.executable, "-m", "thread_probe"], dict(os.environ), threads=1)
probe = json.loads(child.stdout.readline())
assert child.wait(timeout=60) == 0
forks.close()
print(json.dumps({"before": before, "during": during, "after": get_num_threads(),
                  "child": probe}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_a_forked_worker_starts_without_restarting_blas_threads():
    """The launcher forks with BLAS on one thread, so a child whose job wants one does not set
    it again: in a forked child, setting any count starts OpenBLAS's pool afresh, and its new
    threads spun about 0.1 s of CPU on the cores the run was starting on. The launcher's own
    count is back after."""
    import json
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", FORKING_LAUNCHER], cwd=here,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "2"}, capture_output=True,
                         text=True, timeout=120, check=True)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen == {"before": 2, "during": 1, "after": 2, "child": {"threads": 1, "blas": 1}}
