"""Issue 17's must-fix items as a new user meets them: scripts without a main guard, output
directories reused, interrupted and finished runs, error messages and log lines."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import dtrain
from dtrain.distributed.checkpoint import list_checkpoints

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
from procs import dtrain_processes

JOBS = os.path.join(HERE, "service_jobs.py")


def _script(tmp_path, body: str, name: str = "train.py") -> str:
    """A user's training script importing the service test jobs."""
    path = tmp_path / name
    path.write_text(f"import sys\nsys.path.insert(0, {HERE!r})\n" + textwrap.dedent(body))
    return str(path)


def _python(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)


def _launch(*args, timeout=120):
    return _python("-m", "dtrain", "launch", *args, timeout=timeout)


# ---------------------------------------------------------------- 1. no main guard
UNGUARDED = """
import dtrain
from service_jobs import Cosine


class Mine(Cosine):
    epochs = 2


{call}
"""


@pytest.mark.parametrize("call, where", [
    ("model, history = dtrain.fit(Mine, workers=2)", "the script, found before any worker"),
    ("run = dtrain.fit\nrun(Mine, workers=2)", "each worker, when its import calls fit"),
])
def test_fit_without_main_guard_fails_at_once_and_leaves_no_process(tmp_path, call, where):
    """It used to fork without limit: every worker re-imported the script and called fit."""
    script = _script(tmp_path, UNGUARDED.format(call=call))
    started = time.monotonic()
    result = _python(script, timeout=60, cwd=tmp_path)
    assert result.returncode != 0, where
    assert 'put the call under `if __name__ == "__main__":`' in result.stderr, result.stderr
    assert time.monotonic() - started < 30
    assert dtrain_processes(script) == []


def test_launch_of_a_script_with_an_unguarded_fit_does_not_train_twice(tmp_path):
    script = _script(tmp_path, UNGUARDED.format(call="dtrain.fit(Mine, workers=0)"))
    result = _launch("--workers", "2", "--out", str(tmp_path / "run"), script)
    assert result.returncode == 1
    assert "was being imported to build its job" in result.stderr
    assert dtrain_processes(script) == []


def test_guarded_script_with_workers_runs(tmp_path):
    script = _script(tmp_path, UNGUARDED.format(
        call='if __name__ == "__main__":\n    dtrain.fit(Mine, workers=2, max_steps=3)'))
    result = _python(script, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert dtrain_processes(script) == []


# ---------------------------------------------------------------- 3. output directories
def _metrics(out) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_a_second_run_into_the_same_directory_is_refused(tmp_path):
    out = str(tmp_path / "run")
    first = _launch("--workers", "0", "--job", "Cosine", "--epochs", "2", "--out", out, JOBS)
    assert first.returncode == 0, first.stderr
    before = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    again = _launch("--workers", "0", "--job", "Cosine", "--epochs", "0", "--out", out, JOBS)
    assert again.returncode == 1
    assert f"output directory {out} is not empty" in again.stderr
    assert "--resume" in again.stderr and "--overwrite" in again.stderr
    after = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    assert after["step"] == before["step"] == 8  # the trained model is still there

    replaced = _launch("--workers", "0", "--job", "Cosine", "--epochs", "1", "--seed", "5",
                       "--overwrite", "--out", out, JOBS)
    assert replaced.returncode == 0, replaced.stderr
    assert [r["step"] for r in _metrics(out) if r["type"] == "step"] == [0, 1, 2, 3]
    names = [os.path.basename(p) for p in list_checkpoints(os.path.join(out, "checkpoints"))]
    assert names == ["step-000000004.dtrain"]  # the first run's step-8 checkpoint is gone
    resumed = _launch("--workers", "0", "--job", "Cosine", "--epochs", "2", "--seed", "5",
                      "--resume", out, JOBS)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step 4" in resumed.stderr


def test_retention_keeps_n_and_the_best_and_spares_other_runs(tmp_path):
    from dtrain.distributed.checkpoint import write_checkpoint

    directory = str(tmp_path)
    write_checkpoint(directory, {"step": 100, "job_id": "other"}, keep=1)
    stranger = os.path.join(directory, "step-000000099.dtrain")  # in no manifest
    dtrain.save({"not": "ours"}, stranger)
    for step, val_loss in [(1, 0.5), (2, 0.1), (3, 0.3), (4, 0.4), (5, 0.6)]:
        write_checkpoint(directory, {"step": step, "job_id": "mine"}, keep=2,
                         keep_best="val_loss", metrics={"val_loss": val_loss})
    names = sorted(os.path.basename(p) for p in list_checkpoints(directory))
    assert names == ["step-000000002.dtrain", "step-000000004.dtrain", "step-000000005.dtrain",
                     "step-000000099.dtrain", "step-000000100.dtrain"]


def test_keep_best_by_a_validation_metric_end_to_end(tmp_path):
    out = str(tmp_path / "run")
    _, history = dtrain.fit(JOBS, job_name="Cosine", out=out, epochs=4, keep_checkpoints=1,
                            keep_best="max:val_loss")
    worst = max(history.epochs, key=lambda r: r["val_loss"])["step"]
    names = [os.path.basename(p) for p in list_checkpoints(os.path.join(out, "checkpoints"))]
    assert names == ["step-000000016.dtrain", f"step-{worst:09d}.dtrain"]
    assert worst != 16


def test_resume_takes_the_final_checkpoint_and_says_when_the_run_is_finished(tmp_path):
    out = str(tmp_path / "run")
    first = _launch("--workers", "0", "--job", "Cosine", "--epochs", "2", "--max-steps", "6",
                    "--checkpoint-every", "5", "--out", out, JOBS)
    assert first.returncode == 0, first.stderr
    again = _launch("--workers", "2", "--job", "Cosine", "--epochs", "2", "--max-steps", "6",
                    "--resume", out, JOBS)
    assert again.returncode == 0, again.stderr
    assert "resumed at step 6" in again.stderr  # the final checkpoint, not step-5
    assert "already finished at step 6" in again.stderr
    assert "done: nothing to train" in again.stderr and "; ;" not in again.stderr
    assert "started 2 local worker" not in again.stderr  # no workers for nothing
    more = _launch("--workers", "0", "--job", "Cosine", "--epochs", "2", "--resume", out, JOBS)
    assert more.returncode == 0, more.stderr
    steps = [r["step"] for r in _metrics(out) if r["type"] == "step"]
    assert steps == list(range(8))  # each step once, the resumed ones not repeated


def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dtrain", "launch", "--workers", "2",
                             "--no-progress", "--job", "Long", "--out", str(out), JOBS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 60
        while not (metrics.exists() and metrics.read_text().count("\n") >= 10):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert "checkpoint" in err and "--resume" in err
    newest = list_checkpoints(str(out / "checkpoints"))[0]
    step = dtrain.load(newest)["step"]
    assert step == max(r["step"] for r in _metrics(out) if r["type"] == "step") + 1
    assert dtrain_processes(JOBS) == []


# ---------------------------------------------------------------- 4. errors
@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_error_in_loss_names_the_users_file_and_line_once(tmp_path, workers):
    started = time.monotonic()
    result = _launch("--workers", workers, "--no-progress", "--job", "Typo",
                     "--out", str(tmp_path / "run"), JOBS)
    assert result.returncode == 1
    with open(JOBS, encoding="utf-8") as f:
        line = next(i for i, text in enumerate(f, 1) if "mse_losss" in text)
    assert result.stderr.count(f"{JOBS}:{line} in loss") == 1, result.stderr
    assert "has no attribute 'mse_losss'" in result.stderr
    assert "Traceback" not in result.stderr and "[worker" not in result.stderr
    assert time.monotonic() - started < 30  # checked before any worker starts
    assert dtrain_processes(JOBS) == []


def test_an_error_in_a_worker_mid_run_is_reported_once_with_its_location(tmp_path):
    jobs = os.path.join(HERE, "dist_jobs.py")
    result = subprocess.run(
        [sys.executable, "-m", "dtrain", "launch", "--workers", "2", "--no-progress", "--job",
         "FailsAtStep3", "--out", str(tmp_path / "run"), jobs],
        capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, DTRAIN_TEST_FAIL="1"))
    assert result.returncode == 1
    assert result.stderr.count(f"{jobs}:") == 1, result.stderr
    assert "in loss" in result.stderr and "Traceback" not in result.stderr
    assert dtrain_processes(jobs) == []


@pytest.mark.parametrize("job, message", [
    ("FloatLabels", (r"floating-point class labels \(float32, shape \(n,\)\) for a model with "
                     r"3 outputs: class labels must be integers; use y.astype\(np.int64\)")),
    ("FlatTargets", (r"the model outputs \(n, 1\) but train_data\(\) targets have shape "
                     r"\(n,\), which the loss broadcasts against each other; return targets "
                     r"shaped like the output \(y.reshape\(-1, 1\)\)")),
])
def test_targets_that_cannot_work_are_named_before_training(job, message):
    with pytest.raises(ValueError, match=message):
        dtrain.fit(JOBS, job_name=job, workers=2)
    assert dtrain_processes(JOBS) == []


def test_a_busy_metrics_port_names_the_option(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _launch("--workers", "0", "--job", "Cosine", "--metrics-port", str(port),
                         "--out", str(tmp_path / "run"), JOBS)
    assert result.returncode == 1
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--metrics-port 0 for any free one" in result.stderr


def test_other_launchers_options_are_explained():
    from click.testing import CliRunner

    from dtrain.cli import main

    for args in (["-np", "2"], ["--nproc_per_node=2"]):
        result = CliRunner().invoke(main, ["launch", *args, JOBS])
        assert result.exit_code == 2
        assert "dtrain launch takes -n/--workers N" in result.output, result.output


def test_hostfile_accepts_the_host_colon_slots_form():
    from dtrain.launcher.hostfile import HostfileError, parse_hostfile

    hosts = parse_hostfile("node1:2\nnode2 slots=3\n")
    assert [(h.host, h.slots) for h in hosts] == [("node1", 2), ("node2", 3)]
    with pytest.raises(HostfileError, match="give a positive worker count once"):
        parse_hostfile("node1:2 slots=3\n")


# ---------------------------------------------------------------- 5. logging
def test_lifecycle_lines_are_info_and_epoch_lines_survive_no_progress(tmp_path):
    result = _launch("--workers", "2", "--no-progress", "--job", "Cosine", "--epochs", "2",
                     "--out", str(tmp_path / "run"), JOBS)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "INFO: started 2 local worker process(es)" in err
    assert "waiting for 2 worker(s)" in err
    assert "WARNING" not in err
    epoch_lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert all("val_loss" in line and "val_abs_err" in line for line in epoch_lines)
    import csv

    with open(tmp_path / "run" / "metrics.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    records = _metrics(tmp_path / "run")
    assert len(rows) == len(records) == 2 * 4 + 2
    assert rows[-1]["type"] == "epoch" and float(rows[-1]["val_loss"]) == records[-1]["val_loss"]
    assert float(rows[0]["loss"]) == records[0]["loss"]


def test_coordinator_says_where_it_listens_and_for_how_many_workers(tmp_path):
    result = _python("-m", "dtrain", "coordinator", "--bind", "tcp://127.0.0.1:0", "--workers",
                     "3", "--insecure", "--job", "Cosine", "--worker-wait-timeout", "0.5",
                     "--out", str(tmp_path / "run"), JOBS, timeout=60)
    assert result.returncode == 1
    assert "listening on tcp://127.0.0.1:" in result.stderr
    assert "waiting for 3 worker(s)" in result.stderr


def test_a_worker_with_a_key_off_the_allow_list_is_told_so_on_both_sides(tmp_path):
    """It used to repeat 'coordinator silent for 5.0 s: reconnecting' forever."""
    import shutil
    import socket

    listed, stranger = str(tmp_path / "keys"), str(tmp_path / "stranger")
    for directory, names in ((listed, ["coordinator", "worker"]), (stranger, ["worker"])):
        options = [word for name in names for word in ("--name", name)]
        subprocess.run([sys.executable, "-m", "dtrain", "keygen", directory, *options],
                       check=True, capture_output=True)
    shutil.copy(os.path.join(listed, "coordinator.key"), stranger)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "dtrain", "coordinator", "--bind", address, "--workers", "1",
         "--keys", listed, "--job", "Cosine", "--no-progress", "--worker-wait-timeout", "20",
         "--out", str(tmp_path / "run"), JOBS], stderr=subprocess.PIPE, text=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "dtrain", "worker", "--connect", address, "--keys", stranger,
         "--job", "Cosine", JOBS], stderr=subprocess.PIPE, text=True)
    try:
        _, worker_err = worker.communicate(timeout=60)
        coordinator.terminate()
        _, coordinator_err = coordinator.communicate(timeout=60)
    finally:
        for p in (worker, coordinator):
            p.kill()
            p.wait()
    assert worker.returncode == 4, worker_err
    assert "rejected: this worker's key is not in the coordinator's allow-list" in worker_err
    assert "reconnecting" not in worker_err
    assert "not in the coordinator's allow-list" in coordinator_err
    assert dtrain_processes(JOBS) == []


def test_launch_without_out_never_mixes_runs(tmp_path, monkeypatch):
    """Running the same example twice (the README's first command) gives two run folders."""
    from dtrain.launcher.outdir import default_out

    monkeypatch.chdir(tmp_path)
    assert default_out("examples/digits.py") == os.path.join("runs", "digits")
    os.makedirs("runs/digits")
    assert default_out("examples/digits.py") == os.path.join("runs", "digits")  # empty: reused
    open("runs/digits/metrics.jsonl", "w").close()
    assert default_out("examples/digits.py") == os.path.join("runs", "digits-2")
    os.makedirs("runs/digits-2")
    open("runs/digits-2/metrics.jsonl", "w").close()
    assert default_out("examples/digits.py") == os.path.join("runs", "digits-3")
    assert default_out("examples/digits.py", overwrite=True) == os.path.join("runs", "digits")
