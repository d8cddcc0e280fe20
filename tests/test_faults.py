"""Faults during training: killed, hung and late workers, a killed coordinator. Surviving a fault
may cost time but never changes the result: every run ends bit-identical to the fault-free one.

The faults that cost the sharded reduction something of its own (a killed or hung worker is a
lost reducer: the run rolls back and re-cuts the ranges; a joining worker re-cuts them after a
gather; a restarted coordinator loads them again) also run with ``reduction = sharded``
(``with_sharded``)."""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import dtrain
from dtrain.process import command_line

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import dist_jobs
from conftest import SHARDED, assert_reduced_as_asked, with_sharded
from procs import dtrain_processes, steps_done

JOBS = dist_jobs.__file__
STEPS = 60


pytestmark = pytest.mark.usefixtures("array_channel")

def _worker_pid(rank: int, deadline: float = 20.0) -> int:
    """The live worker process of ``rank`` started for the test jobs file."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for pid in dtrain_processes(JOBS, settle=0):
            try:
                argv = command_line(pid)
            except OSError:
                continue
            if "worker" in argv and argv[argv.index("--rank") + 1] == str(rank):
                return pid
        time.sleep(0.02)
    raise TimeoutError(f"no worker of rank {rank}")


def _start_worker(address: str, rank: int, *options: str,
                  job: str = "SlowSteps") -> subprocess.Popen:
    """A ``dtrain worker`` of the SlowSteps job (or ``job``), started by the test itself."""
    return subprocess.Popen([sys.executable, "-m", "dtrain", "worker", *options, "--rank",
                             str(rank), "--connect", address, "--job", job, JOBS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class FaultInjector(threading.Thread):
    """Runs ``actions`` [(at_step, callable)] as the run's metrics file reaches each step."""

    def __init__(self, metrics: str, actions: list):
        super().__init__(daemon=True)
        self.metrics, self.actions = metrics, list(actions)
        self.done, self.error = [], None

    def run(self):
        try:
            deadline = time.monotonic() + 120
            for at_step, action in self.actions:
                while steps_done(self.metrics) < at_step:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"run never reached step {at_step}")
                    time.sleep(0.005)
                self.done.append((steps_done(self.metrics), action()))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def _reference():
    """The fault-free single-process run (which reduces in its one process whatever the
    fixture asks)."""
    model, history = dtrain.fit(dist_jobs.SlowSteps, workers=0, max_steps=STEPS,
                                reduction="coordinator")
    return [a.clone() for a in model.state_dict().values()], [r["loss"] for r in history.steps]


def _assert_same(model, history, reference):
    params, losses = reference
    assert all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), params))
    assert [r["loss"] for r in history.steps] == losses


def _kill(rank, sig=signal.SIGKILL):
    def action():
        pid = _worker_pid(rank)
        os.kill(pid, sig)
        return pid
    return action


@with_sharded
def test_sigkill_two_workers_mid_epoch_result_unchanged(tmp_path, caplog, array_channel):
    reference = _reference()
    out = str(tmp_path)
    injector = FaultInjector(os.path.join(out, "metrics.jsonl"),
                             [(10, _kill(1)), (30, _kill(2))])
    injector.start()
    with caplog.at_level(logging.INFO, logger="dtrain"):
        model, history = dtrain.fit(dist_jobs.SlowSteps, workers=3, out=out, max_steps=STEPS,
                                    max_restarts=1)
    injector.join(timeout=10)
    assert injector.error is None, injector.error
    assert len(injector.done) == 2
    assert caplog.text.count("evicted") >= 2
    assert "restarting (1/1)" in caplog.text
    assert_reduced_as_asked(array_channel, caplog.text)
    _assert_same(model, history, reference)
    assert dtrain_processes(JOBS) == []


@with_sharded
def test_hung_worker_is_evicted_and_rejoins_when_it_wakes(tmp_path, caplog, array_channel):
    reference = _reference()
    out = str(tmp_path)
    stopped = []

    def stop():
        stopped.append(_worker_pid(1))
        os.kill(stopped[0], signal.SIGSTOP)
        return stopped[0]

    def wake():
        os.kill(stopped[0], signal.SIGCONT)

    injector = FaultInjector(os.path.join(out, "metrics.jsonl"), [(8, stop), (25, wake)])
    injector.start()
    with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
        model, history = dtrain.fit(dist_jobs.SlowSteps, workers=2, out=out, max_steps=STEPS)
    injector.join(timeout=10)
    assert injector.error is None, injector.error
    assert "silent for" in caplog.text  # evicted by heartbeat timeout
    assert caplog.text.count("joined") >= 3  # two workers, then the woken one again
    assert_reduced_as_asked(array_channel, caplog.text)
    _assert_same(model, history, reference)
    assert dtrain_processes(JOBS) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@with_sharded
def test_below_min_workers_pauses_until_a_new_worker_joins(tmp_path, caplog, array_channel):
    reference = _reference()
    out = str(tmp_path)
    address = f"tcp://127.0.0.1:{_free_port()}"
    late = []

    def start_new_worker():
        late.append(_start_worker(address, 7, "--insecure"))
        return late[0].pid

    injector = FaultInjector(os.path.join(out, "metrics.jsonl"),
                             [(10, _kill(1)), (10, start_new_worker)])
    injector.start()
    try:
        with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
            model, history = dtrain.fit(dist_jobs.SlowSteps, workers=2, out=out,
                                        max_steps=STEPS, min_workers=2, bind=address,
                                        insecure=True, worker_wait_timeout=60.0)
    finally:
        for p in late:
            p.wait(timeout=20)
    injector.join(timeout=10)
    assert injector.error is None, injector.error
    assert "below min_workers=2" in caplog.text
    assert late[0].returncode == 0  # told to stop at the end
    assert_reduced_as_asked(array_channel, caplog.text)
    _assert_same(model, history, reference)


def test_below_min_workers_fails_clearly_after_the_timeout(tmp_path):
    from dtrain.distributed.coordinator import NotEnoughWorkers

    out = str(tmp_path)
    injector = FaultInjector(os.path.join(out, "metrics.jsonl"), [(5, _kill(1))])
    injector.start()
    with pytest.raises(NotEnoughWorkers, match="below min_workers=2"):
        dtrain.fit(dist_jobs.SlowSteps, workers=2, out=out, max_steps=STEPS, min_workers=2,
                   worker_wait_timeout=2.0)
    injector.join(timeout=10)
    assert dtrain_processes(JOBS) == []


@with_sharded
def test_killed_coordinator_resumes_on_another_worker_count_bit_identical(tmp_path,
                                                                          array_channel):
    reference = _reference()
    out = str(tmp_path / "run")
    argv = [sys.executable, "-m", "dtrain", "launch", "--no-progress", "--job", "SlowSteps",
            "--max-steps", str(STEPS), "--checkpoint-every", "5", "--out", out, JOBS]
    launcher = subprocess.Popen(argv + ["--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.monotonic() + 60
    while steps_done(metrics) < 23:
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.005)
    launcher.kill()  # SIGKILL: no cleanup code runs in the coordinator
    launcher.wait(timeout=10)
    assert dtrain_processes(JOBS) == []  # its workers followed it (parent-death signal)
    resumed = subprocess.run(argv + ["--workers", "3", "--resume", out], capture_output=True,
                             text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step" in resumed.stderr
    assert_reduced_as_asked(array_channel, resumed.stderr)
    final = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    params, _ = reference
    assert final["step"] == STEPS
    assert all(np.array_equal(a, b) for a, b in zip(final["model"].values(), params))


def test_processes_are_named_in_ps(tmp_path):
    out = str(tmp_path)
    names = {}

    def look():
        pid = _worker_pid(0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            names["cmdline"] = f.read().replace(b"\0", b" ").decode()
        with open(f"/proc/{pid}/comm") as f:
            names["comm"] = f.read().strip()

    injector = FaultInjector(os.path.join(out, "metrics.jsonl"), [(3, look)])
    injector.start()
    dtrain.fit(dist_jobs.SlowSteps, workers=1, out=out, max_steps=10)
    injector.join(timeout=10)
    assert injector.error is None, injector.error
    assert "dtrain worker --rank 0" in names["cmdline"]
    assert names["comm"] == "dtrain-w0"


@with_sharded
def test_workers_outlive_a_lost_coordinator_and_rejoin_its_successor(tmp_path, array_channel):
    """Cluster mode: keys from dtrain keygen, coordinator killed, restarted with --resume on the
    same address; the same worker processes reconnect and the result is unchanged."""
    reference = _reference()
    keys = str(tmp_path / "keys")
    subprocess.run([sys.executable, "-m", "dtrain", "keygen", keys], check=True,
                   capture_output=True)
    out = str(tmp_path / "run")
    address = f"tcp://127.0.0.1:{_free_port()}"
    coordinator = [sys.executable, "-m", "dtrain", "coordinator", "--bind", address,
                   "--workers", "2", "--keys", keys, "--job", "SlowSteps", "--no-progress",
                   "--max-steps", str(STEPS), "--checkpoint-every", "5", "--out", out, JOBS]
    first = subprocess.Popen(coordinator, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = [_start_worker(address, r, "--keys", keys) for r in range(2)]
    try:
        metrics = os.path.join(out, "metrics.jsonl")
        deadline = time.monotonic() + 60
        while steps_done(metrics) < 17:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.005)
        first.kill()
        first.wait(timeout=10)
        time.sleep(0.5)  # the workers notice the silence and start retrying
        assert all(w.poll() is None for w in workers)
        second = subprocess.run(coordinator + ["--resume", out], capture_output=True, text=True,
                                timeout=120, check=False)
        assert second.returncode == 0, second.stderr
        assert_reduced_as_asked(array_channel, second.stderr)
        for w in workers:
            assert w.wait(timeout=20) == 0
    finally:
        for p in [first, *workers]:
            if p.poll() is None:
                p.kill()
                p.wait()
    final = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    params, _ = reference
    assert final["step"] == STEPS
    assert all(np.array_equal(a, b) for a, b in zip(final["model"].values(), params))


def _took_work(metrics: str, worker: str) -> bool:
    """True once a step record shows ``worker`` computed micro-shards."""
    import json

    with open(metrics) as f:
        for line in f:
            try:
                times = json.loads(line).get("worker_times", {})
            except ValueError:
                continue  # a line being written
            if times.get(worker, {}).get("compute_s", 0) > 0:
                return True
    return False


def _slowed_run(tmp_path, monkeypatch) -> tuple[str, str, object, str]:
    """(out directory, its metrics file, the marker file that keeps a Throttled run slow until
    it is removed, a free loopback address to bind)."""
    out = str(tmp_path / "run")
    slow = tmp_path / "slow"
    slow.touch()
    monkeypatch.setenv("DTRAIN_TEST_SLOW", str(slow))
    return out, os.path.join(out, "metrics.jsonl"), slow, f"tcp://127.0.0.1:{_free_port()}"


def _adds_worker(address: str, started: list):
    """A FaultInjector action: start a Throttled ``dtrain worker`` apart, into ``started``."""
    def action():
        started.append(_start_worker(address, 9, "--insecure", job="Throttled"))
        return started[-1].pid
    return action


def _await_work(metrics: str, worker: str, who: str) -> None:
    """Wait (bounded) until ``worker`` has computed micro-shards in the run."""
    deadline = time.monotonic() + 120
    while not _took_work(metrics, worker):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{who} computed nothing within 120 s")
        time.sleep(0.05)


@with_sharded
def test_a_worker_added_mid_run_takes_work(tmp_path, monkeypatch, caplog, array_channel):
    """The run goes slowly (Throttled) until the newcomer has computed micro-shards: the join
    is awaited, not raced against the end of the run (it used to fail under load)."""
    reference = _reference()
    out, metrics, slow, address = _slowed_run(tmp_path, monkeypatch)
    extra = []

    def await_work():
        _await_work(metrics, "2", "the added worker")
        slow.unlink()  # joined and working: let the run finish at full speed

    injector = FaultInjector(metrics, [(10, _adds_worker(address, extra)), (10, await_work)])
    injector.start()
    try:
        with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
            model, history = dtrain.fit(dist_jobs.Throttled, workers=2, out=out,
                                        max_steps=STEPS, bind=address, insecure=True)
        injector.join(timeout=10)
        assert injector.error is None, injector.error
        assert extra and extra[0].wait(timeout=20) == 0
    finally:
        for p in extra:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    last = history.steps[-1]
    assert last["workers"] == 3
    assert last["worker_times"]["2"]["compute_s"] > 0  # the newcomer computed micro-shards
    assert_reduced_as_asked(array_channel, caplog.text)
    if array_channel == SHARDED:  # the ranges were gathered and cut again over three reducers
        assert "ranges over 3 reducers" in caplog.text
    _assert_same(model, history, reference)


@pytest.mark.parametrize("array_channel", ("shared-memory",), indirect=True)  # the link's path
def test_a_worker_no_launcher_watches_is_evicted_when_its_local_link_ends(tmp_path, monkeypatch,
                                                                          caplog):
    """A ``dtrain worker`` started on its own (no launcher watches its pid), SIGKILLed while it
    computes, is evicted as soon as its local link ends: the heartbeat timeout is 10 minutes
    here, so nothing else could evict it in time. The result is unchanged."""
    reference = _reference()
    out, metrics, slow, address = _slowed_run(tmp_path, monkeypatch)
    apart = []

    def kill_it_once_working():
        _await_work(metrics, "1", "the worker started apart")  # the local worker is 0
        apart[0].kill()
        slow.unlink()

    injector = FaultInjector(metrics, [(5, _adds_worker(address, apart)), (5, kill_it_once_working)])
    injector.start()
    try:
        with caplog.at_level(logging.INFO, logger="dtrain.coordinator"):
            model, history = dtrain.fit(dist_jobs.Throttled, workers=1, out=out,
                                        max_steps=STEPS, bind=address, insecure=True,
                                        heartbeat_timeout=600.0)
        injector.join(timeout=10)
        assert injector.error is None, injector.error
    finally:
        for p in apart:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
    assert "its messages over a local link" in caplog.text
    assert "evicted: its process closed its local link" in caplog.text
    assert "silent for" not in caplog.text
    _assert_same(model, history, reference)


def test_a_process_left_by_a_test_dies_with_it():
    """conftest.py kills the dtrain processes a test leaves (here one retrying forever)."""
    import conftest

    before = conftest._children()
    leftover = _start_worker(f"tcp://127.0.0.1:{_free_port()}", 7, "--insecure")
    try:
        assert leftover.poll() is None
        assert conftest.kill_started_since(before) == [leftover.pid]
        assert leftover.wait(timeout=10) == -signal.SIGKILL
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait(timeout=10)
