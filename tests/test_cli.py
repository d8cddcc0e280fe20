"""``dtrain launch`` end to end: the README's main job, outputs, failures and Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from click.testing import CliRunner

import dtrain
from dtrain.cli import main

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from procs import dtrain_processes

DIGITS = os.path.join(ROOT, "examples", "digits.py")
JOBS = os.path.join(HERE, "dist_jobs.py")


def _launch(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "dtrain", "launch", *args], check=False,
                          capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def test_launch_digits_reaches_97_percent_and_writes_outputs(tmp_path):
    out = tmp_path / "run"
    result = _launch("--workers", "2", "--no-progress", "--out", str(out), DIGITS)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if r["type"] == "step"]
    epochs = [r for r in lines if r["type"] == "epoch"]
    assert len(epochs) == 30 and len(steps) == 30 * 22
    for key in ("step", "epoch", "loss", "lr", "samples_per_s", "worker_times"):
        assert key in steps[-1]
    assert set(steps[-1]["worker_times"]) == {"0", "1"}
    assert epochs[-1]["val_accuracy"] >= 0.97

    ckpt = dtrain.load(out / "checkpoint.dtrain")
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "step", "epoch"}
    job, _ = dtrain.distributed.job.load_job(DIGITS)
    model = job.model()
    model.load_state_dict(ckpt["model"])
    model.eval()
    x, y = dtrain.datasets.load_digits("test")
    with dtrain.no_grad():
        predicted = model(dtrain.tensor(x))._data.argmax(axis=1)
    assert (predicted == y).mean() >= 0.97
    assert dtrain_processes(DIGITS) == []


def test_launch_failure_in_script_exits_nonzero_and_reaps(tmp_path):
    env = dict(os.environ, DTRAIN_TEST_FAIL="1")
    result = _launch("--workers", "2", "--no-progress", "--job", "FailsAtStep3",
                     "--out", str(tmp_path), JOBS, env=env)
    assert result.returncode == 1
    assert "deliberate failure in the training script" in result.stderr
    assert dtrain_processes(JOBS) == []


def test_launch_sigint_stops_every_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "dtrain", "launch", "--workers", "2",
                             "--no-progress", "--job", "Slow", "--out", str(tmp_path), JOBS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= 5:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("training did not start")
    assert len(dtrain_processes(JOBS, settle=0)) >= 2  # the launcher and its workers
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert dtrain_processes(JOBS) == []


def test_cli_rejects_bad_options_with_a_clear_message():
    runner = CliRunner()
    result = runner.invoke(main, ["launch", "--workers", "-1", DIGITS])
    assert result.exit_code == 2 and "--workers" in result.output
    result = runner.invoke(main, ["launch", "missing_script.py"])
    assert result.exit_code == 2 and "missing_script.py" in result.output
    result = runner.invoke(main, ["launch", "--help"])
    assert result.exit_code == 0 and "--micro-shards" in result.output


def test_cli_bad_setting_exits_1_naming_it(tmp_path):
    result = _launch("--workers", "0", "--micro-shards", "1000", "--out", str(tmp_path), DIGITS)
    assert result.returncode == 1
    assert "micro_shards" in result.stderr


def test_in_process_launch_equals_two_workers(tmp_path):
    a = _launch("--workers", "0", "--no-progress", "--epochs", "2", "--out", str(tmp_path / "a"),
                DIGITS)
    b = _launch("--workers", "2", "--no-progress", "--epochs", "2", "--out", str(tmp_path / "b"),
                DIGITS)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ma = dtrain.load(tmp_path / "a" / "checkpoint.dtrain")["model"]
    mb = dtrain.load(tmp_path / "b" / "checkpoint.dtrain")["model"]
    assert list(ma) == list(mb)
    assert all(np.array_equal(ma[k], mb[k]) for k in ma)
