"""Local workers forked from the launcher (the default) or spawned as new interpreters: the same
results, the same names in ps, nothing of the launcher inherited, nothing left behind."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import dtrain
from dtrain.process import command_line

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import dist_jobs
from procs import children, dtrain_processes, steps_done

from dtrain.launcher.local import start_method
from dtrain.launcher.prefork import fork_hazard

DIGITS = os.path.join(ROOT, "examples", "digits.py")
JOBS = dist_jobs.__file__
PROBE = os.path.join(HERE, "fork_probe.py")
FORKED = "forked from this process"


def _launch(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dtrain", "launch", "--no-progress", *args],
                          check=False, capture_output=True, text=True, timeout=300, **kwargs)


def _model(out) -> dict:
    return dtrain.load(os.path.join(out, "checkpoint.dtrain"))["model"]


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _workers_of(launcher: int, count: int, deadline: float = 60.0) -> dict:
    """{rank: pid} of the launcher's ``count`` worker processes, once they run."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        workers = {}
        for pid, state in children(launcher):
            try:
                argv = command_line(pid)
            except OSError:
                continue
            if state != "Z" and "worker" in argv and "--rank" in argv:
                workers[int(argv[argv.index("--rank") + 1])] = pid
        if len(workers) == count:
            return workers
        time.sleep(0.02)
    raise AssertionError(f"the launcher {launcher} never ran {count} workers")


def _fds(pid: int) -> dict:
    """{descriptor: what it points to} of a process."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
    return found


def _listening_inodes(port: int) -> set:
    """Socket inodes listening on 127.0.0.1:``port`` (from /proc/net/tcp)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_forked_workers_give_the_bits_of_in_process_and_spawned_ones(tmp_path):
    runs = {"in-process": ["--workers", "0"], "forked": ["--workers", "2"],
            "spawned": ["--workers", "2", "--start-method", "spawn"]}
    models = {}
    for name, args in runs.items():
        out = str(tmp_path / name)
        result = _launch(*args, "--epochs", "2", "--out", out, DIGITS)
        assert result.returncode == 0, result.stderr
        models[name] = _model(out)
        if name != "in-process":
            assert (FORKED in result.stderr) == (name == "forked"), result.stderr
    assert _same(models["in-process"], models["forked"])
    assert _same(models["spawned"], models["forked"])


def test_forked_workers_are_named_in_their_own_session_holding_nothing_of_the_launcher(
        tmp_path):
    out = str(tmp_path / "run")
    probe = subprocess.Popen([sys.executable, PROBE, "launch", "launch", "--workers", "2",
                              "--no-progress", "--job", "Slow", "--out", out, JOBS],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(probe.stdout.readline().split()[1])
        workers = _workers_of(probe.pid, 2)
        deadline = time.monotonic() + 60
        while steps_done(os.path.join(out, "metrics.jsonl")) < 1:  # the workers are named
            assert time.monotonic() < deadline and probe.poll() is None
            time.sleep(0.01)
        launcher_fds = _fds(probe.pid)
        held = _listening_inodes(port)
        held.add(os.path.abspath(PROBE))  # the probe's open file
        assert held <= set(launcher_fds.values()) and len(held) >= 2  # the test can fail
        # none of the launcher's sockets and files, except the arrays shared by design
        mine = {t for t in launcher_fds.values()
                if t.startswith(("socket:", "/")) and not t.startswith("/dev/shm/dtrain-")}
        for rank, pid in workers.items():
            argv = command_line(pid)
            assert argv[:6] == [sys.executable, "-m", "dtrain", "worker", "--rank", str(rank)]
            assert argv[-1] == JOBS
            with open(f"/proc/{pid}/comm") as f:
                assert f.read().strip() == f"dtrain-w{rank}"
            assert os.getsid(pid) == pid
            fds = _fds(pid)
            assert fds[0] == os.devnull
            assert fds[1] == fds[2] and fds[1].startswith("pipe:")
            assert not held & set(fds.values())
            assert not mine & set(fds.values()) - {os.devnull}, (fds, launcher_fds)
    finally:
        _stop(probe)
    assert dtrain_processes(JOBS) == []


def test_a_failed_preflight_leaves_no_forked_child():
    result = subprocess.run([sys.executable, PROBE, "fit", "LossRaises", "2"], check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "deliberate failure in the loss" in report["error"]
    assert "instead of forked" not in result.stderr  # the children were forked
    assert "killing it" not in result.stderr  # they left when their orders were cancelled
    assert report["children"] == []


def test_a_finished_run_reaps_every_forked_worker():
    result = subprocess.run([sys.executable, PROBE, "fit", "MomentumGroups", "2"], check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["error"] is None
    assert FORKED in result.stderr
    assert report["children"] == []


def test_a_killed_forked_worker_is_restarted_and_the_result_is_unchanged(tmp_path):
    steps = 60
    reference, _ = dtrain.fit(dist_jobs.SlowSteps, workers=0, max_steps=steps)
    out = str(tmp_path / "run")
    launcher = subprocess.Popen([sys.executable, "-m", "dtrain", "launch", "--workers", "2",
                                 "--no-progress", "--job", "SlowSteps", "--max-steps",
                                 str(steps), "--max-restarts", "1", "--out", out, JOBS],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        killed = _workers_of(launcher.pid, 2)[1]
        metrics = os.path.join(out, "metrics.jsonl")
        deadline = time.monotonic() + 60
        while steps_done(metrics) < 10:
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.005)
        os.kill(killed, signal.SIGKILL)
        _, err = launcher.communicate(timeout=120)
    finally:
        _stop(launcher)
    assert launcher.returncode == 0, err
    assert FORKED in err and "restarting (1/1)" in err
    assert _same(reference.state_dict(), _model(out))
    assert dtrain_processes(JOBS) == []


def test_forking_is_refused_while_another_thread_runs():
    release = threading.Event()
    thread = threading.Thread(target=release.wait, daemon=True)
    thread.start()
    try:
        assert "threads are running" in fork_hazard()
    finally:
        release.set()
        thread.join()


def test_start_method_names_the_choices():
    assert start_method("spawn") == "spawn"
    with pytest.raises(ValueError, match="fork, spawn"):
        start_method("forkserver")
    result = _launch("--workers", "2", "--start-method", "forkserver", DIGITS)
    assert result.returncode == 2 and "--start-method" in result.stderr
