"""Issue 18.7: a run's outputs are what they claim to be.

Deleting the output directory mid-run used to end with exit 0, "outputs in ..." and no
metrics.jsonl; a diverged run wrote ``NaN`` tokens, which strict JSON readers reject.
"""

import json
import logging
import os
import shutil
import sys
import threading
import time

import numpy as np

import dtrain
from dtrain.records import dumps, loads

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import dist_jobs


def _strict(line: str):
    """json.loads as strict readers (JavaScript, jq, Go) parse: NaN and Infinity are errors."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_are_strict_json_and_read_back():
    record = {"loss": float("nan"), "lr": [float("inf"), 0.1], "x": -float("inf"), "n": 3}
    line = dumps(record)
    assert _strict(line)["loss"] == "NaN"
    back = loads(line)
    assert np.isnan(back["loss"]) and back["lr"] == [float("inf"), 0.1]
    assert back["x"] == -float("inf") and back["n"] == 3


def test_a_diverged_runs_metrics_are_strict_json_and_plot(tmp_path):
    out = str(tmp_path / "run")
    _, history = dtrain.fit(dist_jobs.Diverges, workers=0, out=out)
    assert not np.isfinite(history.steps[-1]["loss"])
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        records = [_strict(line) for line in f]
    assert any(r.get("loss") == "NaN" or r.get("train_loss") == "NaN" for r in records)
    from dtrain.plot import read_metrics

    run = read_metrics(os.path.join(out, "metrics.jsonl"))
    assert not np.isfinite(run.steps[-1]["loss"])


def test_status_page_is_strict_json_when_the_loss_is_nan():
    from dtrain.distributed.monitor import Monitor

    monitor = Monitor(0)
    try:
        monitor.on_step({"step": 0, "epoch": 0, "loss": float("nan"), "lr": 0.1,
                         "samples_per_s": float("inf")})
        import urllib.request

        with urllib.request.urlopen(f"http://{monitor.address}/status", timeout=5) as r:
            status = _strict(r.read().decode())
        assert status["loss"] == "NaN"
    finally:
        monitor.close()


def test_a_deleted_output_directory_is_recreated_and_said(tmp_path, caplog, monkeypatch):
    """The directory vanishes mid-run: the run recreates it with the whole metrics.jsonl and
    says so, instead of reporting outputs that are not there."""
    slow = tmp_path / "slow"
    slow.touch()
    monkeypatch.setenv("DTRAIN_TEST_SLOW", str(slow))
    out = str(tmp_path / "run")
    metrics = os.path.join(out, "metrics.jsonl")

    def delete_mid_run():
        deadline = time.monotonic() + 120
        while not os.path.exists(metrics) or os.path.getsize(metrics) < 2000:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        shutil.rmtree(out)
        slow.unlink()

    remover = threading.Thread(target=delete_mid_run, daemon=True)
    remover.start()
    with caplog.at_level(logging.WARNING):
        dtrain.fit(dist_jobs.Throttled, workers=0, out=out, max_steps=30)
    remover.join(timeout=10)
    assert not slow.exists(), "the directory was not deleted mid-run"
    assert "was removed during the run" in caplog.text
    with open(metrics, encoding="utf-8") as f:
        steps = [r["step"] for r in map(loads, f) if r["type"] == "step"]
    assert steps == list(range(30))  # every record, those before the deletion included
    assert os.path.isfile(os.path.join(out, "checkpoint.dtrain"))
    assert os.path.isfile(os.path.join(out, "settings.json"))
