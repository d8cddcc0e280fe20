"""Issue 18.1: connections an outsider holds open never end a run.

About 1,100 plain TCP connections to the coordinator's port, or idle connections to the metrics
port (one thread per connection, no timeout), used up the coordinator's descriptors, and the
next file it opened (a checkpoint, metrics.csv at an epoch end) failed and ended the run. The
coordinator now raises its soft descriptor limit to the hard one at start, and the metrics
server times connections out and serves a bounded number at once.

Every connection goes to 127.0.0.1, is bounded in count and time, and is closed in ``finally``.
"""

import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

import dtrain
from dtrain.distributed.monitor import MAX_CONNECTIONS, Monitor

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import dist_jobs
from procs import dtrain_processes, steps_done

JOBS = dist_jobs.__file__
STEPS = 150
FLOOD = 2000
SOFT_LIMIT = 1024  # the coordinator starts with this soft limit (the hard one stays)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lower_fd_limit() -> None:
    """Runs in the coordinator's process before exec: a soft limit of 1024 (the hard one
    stays)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_LIMIT, hard))


class Flood(threading.Thread):
    """Opens ``count`` idle TCP connections to each port and reopens those the servers at
    ``sustain`` drop, until stopped (at most ``limit`` connects in all)."""

    def __init__(self, ports: list, count: int, sustain: tuple = (), limit: int = 8000):
        super().__init__(daemon=True)
        self.ports, self.count, self.limit = ports, count, limit
        self.sustain = set(sustain)
        self.held: list = []
        self.connects = 0
        self.full = threading.Event()
        self.done = threading.Event()

    def _open(self, port: int) -> None:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        self.held.append((port, s))
        self.connects += 1

    def run(self) -> None:
        for port in self.ports:
            for _ in range(self.count):
                self._open(port)
        self.full.set()
        # every reopened connection leaves a loopback port in TIME_WAIT for a minute: reopen
        # once a second, within ``limit``, so neither this test nor others run out of ports
        while not self.done.wait(1.0) and self.connects < self.limit:
            for i, (port, s) in enumerate(self.held):
                if self.connects >= self.limit:
                    break
                if port in self.sustain and _dropped(s):
                    s.close()
                    self.held[i] = (port, _reopen(port))
                    self.connects += 1

    def close(self) -> None:
        self.done.set()
        self.join(timeout=10)
        for _, s in self.held:
            s.close()


def _dropped(s: socket.socket) -> bool:
    """True when the server closed ``s`` (a connection still being made is not dropped)."""
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except OSError:  # EAGAIN: open and idle; ENOTCONN: still connecting
        return False


def _reopen(port: int) -> socket.socket:
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    return s


def _descriptors(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def test_a_run_under_a_connection_flood_finishes_bit_identical(tmp_path):
    """The coordinator starts with a soft limit of 1024, raises it, and the flood fits."""
    reference, _ = dtrain.fit(dist_jobs.Throttled, workers=0, max_steps=STEPS)
    port, metrics_port = _free_port(), _free_port()
    out = str(tmp_path / "run")
    slow = tmp_path / "slow"
    slow.touch()  # the run goes slowly until the flood is in place
    argv = [sys.executable, "-m", "dtrain", "launch", "--workers", "2", "--no-progress",
            "--job", "Throttled", "--max-steps", str(STEPS), "--checkpoint-every", "5",
            "--bind", f"tcp://127.0.0.1:{port}", "--metrics-port", str(metrics_port),
            "--out", out, JOBS]
    coordinator = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=_lower_fd_limit,  # noqa: PLW1509 - setrlimit only
                                   env={**os.environ, "DTRAIN_TEST_SLOW": str(slow)})
    flood = Flood([port, metrics_port], FLOOD, sustain=(port,))  # past the 5 s handshake
    try:
        deadline = time.monotonic() + 60
        while steps_done(os.path.join(out, "metrics.jsonl")) < 3:
            assert coordinator.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        flood.start()
        # in place: the coordinator holds about as many descriptors as its old soft limit
        while _descriptors(coordinator.pid) < SOFT_LIMIT - 24:
            assert coordinator.poll() is None, "the run ended before the flood was in place"
            if time.monotonic() > deadline + 60:
                # the kernel or libzmq here did not hand the connections over (loopback ports
                # in TIME_WAIT after earlier tests, a full accept queue): nothing was tested
                pytest.skip(f"SKIPPED LOUDLY: the flood could not be put in place on this "
                            f"machine ({_descriptors(coordinator.pid)} descriptors after "
                            f"{flood.connects} connects)")
            time.sleep(0.05)
        assert steps_done(os.path.join(out, "metrics.jsonl")) < STEPS - 30
        slow.unlink()
        _, errors = coordinator.communicate(timeout=300)
        assert coordinator.returncode == 0, errors[-3000:]
        assert flood.connects >= 2 * FLOOD
    finally:
        flood.close()
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait(timeout=10)
        coordinator.stderr.close()
    assert "descriptor limit raised" in errors  # at start, and logged
    final = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    assert final["step"] == STEPS
    for a, b in zip(final["model"].values(), reference.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), b.numpy())
    assert dtrain_processes(JOBS) == []


def test_the_metrics_server_serves_a_bounded_number_of_connections_and_times_them_out():
    monitor = Monitor(0, "127.0.0.1", timeout=1.0)
    host, port = monitor.address.rsplit(":", 1)
    idle = []
    try:
        for _ in range(3 * MAX_CONNECTIONS):
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        deadline = time.monotonic() + 10
        while monitor.active() < MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert monitor.active() == MAX_CONNECTIONS  # the rest were closed at once
        assert threading.active_count() < 2 * MAX_CONNECTIONS
        # idle connections time out, so a scrape gets through within a few timeouts
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{monitor.address}/status", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the metrics server stayed unavailable"
                time.sleep(0.1)
    finally:
        for s in idle:
            s.close()
        monitor.close()


def test_the_coordinator_raises_its_soft_descriptor_limit(caplog):
    from dtrain.process import raise_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, SOFT_LIMIT), hard))
    try:
        low = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if low == hard:
            pytest.skip("the hard descriptor limit is 1024 or lower here")
        with caplog.at_level("INFO", logger="dtrain.process"):
            assert raise_fd_limit() == (low, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert f"from {low} to {hard}" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
