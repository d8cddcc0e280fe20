"""Observability during a real run: Prometheus metrics advance, dtrain status shows the workers."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
from procs import dtrain_processes

JOBS = os.path.join(HERE, "dist_jobs.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        m = re.match(r"^(dtrain_\w+)(\{[^}]*\})? ([-+0-9.eE]+|NaN)$", line)
        if m:
            values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return values


def test_metrics_endpoint_and_status_during_a_run(tmp_path):
    pytest.importorskip("prometheus_client")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dtrain", "launch", "--workers", "2",
                             "--no-progress", "--job", "SlowSteps", "--max-steps", "400",
                             "--metrics-port", str(port), "--out", str(tmp_path), JOBS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = [], time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            try:
                values = _scrape(port)
            except OSError:
                time.sleep(0.05)
                continue
            if values.get("dtrain_step", 0) > 0 and values.get("dtrain_live_workers") == 2:
                if not seen or values["dtrain_step"] > seen[-1]["dtrain_step"]:
                    seen.append(values)
            time.sleep(0.1)
        assert len(seen) == 2, "the step did not advance with two live workers"
        for key in ("dtrain_loss", "dtrain_samples_per_second", 'dtrain_lr{group="0"}',
                    "dtrain_evictions_total", "dtrain_rejected_messages_total",
                    'dtrain_worker_compute_seconds{worker="0"}',
                    'dtrain_worker_comm_seconds{worker="1"}'):
            assert key in seen[-1], key
        status = subprocess.run([sys.executable, "-m", "dtrain", "status",
                                 f"127.0.0.1:{port}"], capture_output=True, text=True,
                                timeout=30, check=False)
        assert status.returncode == 0, status.stderr
        assert "workers: 2 live" in status.stdout
        assert "worker   0" in status.stdout and "worker   1" in status.stdout
        assert "state training" in status.stdout
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr.read()
    proc.stderr.close()
    assert dtrain_processes(JOBS) == []


def test_status_of_nothing_is_a_clear_error():
    result = subprocess.run([sys.executable, "-m", "dtrain", "status",
                             f"127.0.0.1:{_free_port()}", "--timeout", "1"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "no dtrain status at" in result.stderr
