"""Several hosts on one machine: a coordinator and two workers in three Linux network namespaces,
joined by veth pairs on 10.77.0.0/24 that this test creates and deletes. Real TCP between
separate network stacks, CURVE keys from dtrain keygen; a cut link evicts a worker, a restored
one lets it rejoin, and the parameters end bit-identical to the single-host run."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

import dtrain

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from procs import dtrain_processes

PORT = 29500
# one veth pair per worker: (coordinator side, worker side) addresses, /30 subnets of 10.77.0.0/24
LINKS = {1: ("10.77.0.1", "10.77.0.2"), 2: ("10.77.0.5", "10.77.0.6")}
JOB_SOURCE = f"""
import os
import sys
import time

sys.path.insert(0, {HERE!r})
import dist_jobs
import dtrain.nn.functional as F


class NetSteps(dist_jobs.MomentumGroups):
    '''Many steps; workers (given DTRAIN_TEST_SHARD_DELAY) take a while per micro-shard.'''

    epochs = 100
    heartbeat_interval = 0.2
    heartbeat_timeout = 1.5

    def loss(self, output, target):
        delay = os.environ.get("DTRAIN_TEST_SHARD_DELAY")
        if delay:
            time.sleep(float(delay))
        return F.cross_entropy(output, target)
"""


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                          check=False)


def _must(*args: str) -> None:
    result = _ip(*args)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr.strip()}"


@pytest.fixture(scope="module")
def hosts():
    """Three namespaces (coordinator 'c', workers 1 and 2) and a veth pair per worker."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the test creates network namespaces and veth pairs")
    if shutil.which("ip") is None:
        pytest.skip("needs the ip command (iproute2)")
    tag = uuid.uuid4().hex[:6]
    names = {"c": f"dtrain-c-{tag}", 1: f"dtrain-w1-{tag}", 2: f"dtrain-w2-{tag}"}
    created = []
    try:
        for ns in names.values():
            result = _ip("netns", "add", ns)
            if result.returncode != 0:
                pytest.skip(f"ip netns add failed: {result.stderr.strip()}")
            created.append(ns)
            _must("-n", ns, "link", "set", "lo", "up")
        for w, (c_addr, w_addr) in LINKS.items():
            _must("-n", names["c"], "link", "add", f"v{w}", "type", "veth", "peer", "name",
                  "eth0", "netns", names[w])
            _must("-n", names["c"], "addr", "add", f"{c_addr}/30", "dev", f"v{w}")
            _must("-n", names[w], "addr", "add", f"{w_addr}/30", "dev", "eth0")
            _must("-n", names["c"], "link", "set", f"v{w}", "up")
            _must("-n", names[w], "link", "set", "eth0", "up")
        yield names
    finally:
        for ns in created:  # deleting a namespace deletes the veth ends inside it
            _ip("netns", "del", ns)
        left = set(_ip("netns", "list").stdout.split()) & set(created)
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def setup(hosts, tmp_path_factory):
    base = tmp_path_factory.mktemp("netns")
    job = base / "net_job.py"
    job.write_text(JOB_SOURCE)
    keys = str(base / "keys")
    subprocess.run([sys.executable, "-m", "dtrain", "keygen", keys], check=True,
                   capture_output=True)
    yield {"hosts": hosts, "job": str(job), "keys": keys, "base": base}
    left = dtrain_processes(str(job))
    for pid in left:
        os.kill(pid, 9)
    assert left == [], "processes outlived the test"


def _reference(job: str, steps: int) -> dict:
    model, _ = dtrain.fit(job, job_name="NetSteps", workers=0, max_steps=steps)
    return {k: v.clone() for k, v in model.state_dict().items()}


class Cluster:
    """The coordinator and the two workers, each in its namespace; logs in files."""

    def __init__(self, setup: dict, name: str, steps: int, delay: float):
        self.dir = setup["base"] / name
        self.dir.mkdir()
        self.out = str(self.dir / "run")
        ns, job, keys = setup["hosts"], setup["job"], setup["keys"]
        self.procs = {}
        self.logs = {}
        self._start("c", ns["c"], ["coordinator", "--bind", f"tcp://0.0.0.0:{PORT}",
                                   "--workers", "2", "--keys", keys, "--job", "NetSteps",
                                   "--max-steps", str(steps), "--no-progress", "-v",
                                   "--out", self.out, job])
        for w, (c_addr, _) in LINKS.items():
            self._start(w, ns[w], ["worker", "--connect", f"tcp://{c_addr}:{PORT}", "--keys",
                                   keys, "--rank", str(w), "--name", f"net-w{w}", "--job",
                                   "NetSteps", job], DTRAIN_TEST_SHARD_DELAY=str(delay))

    def _start(self, key, ns: str, args: list, **env) -> None:
        self.logs[key] = self.dir / f"{key}.log"
        with open(self.logs[key], "wb") as log:
            self.procs[key] = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "dtrain", *args],
                cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)

    def log(self, key="c") -> str:
        return self.logs[key].read_text()

    def steps(self) -> int:
        try:
            with open(os.path.join(self.out, "metrics.jsonl")) as f:
                return sum('"type": "step"' in line for line in f)
        except FileNotFoundError:
            return 0

    def wait_for(self, what: str, condition, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = {k: p.returncode for k, p in self.procs.items() if p.poll() is not None}
            assert not dead, f"while waiting for {what}: exited {dead}\n{self.log()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.log()}"
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> dict:
        codes = {k: p.wait(timeout=timeout) for k, p in self.procs.items()}
        return codes

    def kill(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _assert_equal_params(out: str, reference: dict, steps: int) -> None:
    final = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    assert final["step"] == steps
    assert all(np.array_equal(final["model"][k], reference[k]) for k in reference)


def test_three_hosts_train_bit_identical(setup):
    steps = 30
    reference = _reference(setup["job"], steps)
    cluster = Cluster(setup, "clean", steps, delay=0.002)
    try:
        codes = cluster.finish()
    finally:
        cluster.kill()
    assert codes == {"c": 0, 1: 0, 2: 0}, cluster.log()
    log = cluster.log()
    assert "joined: net-w1" in log and "joined: net-w2" in log
    assert "evicted" not in log
    _assert_equal_params(cluster.out, reference, steps)


def test_cut_link_evicts_worker_and_restored_link_rejoins(setup):
    steps = 150
    reference = _reference(setup["job"], steps)
    worker_ns = setup["hosts"][1]
    cluster = Cluster(setup, "cut", steps, delay=0.01)
    try:
        cluster.wait_for("step 10", lambda: cluster.steps() >= 10)
        _must("-n", worker_ns, "link", "set", "eth0", "down")
        cut_at = cluster.steps()
        cluster.wait_for("the eviction", lambda: "(net-w1) evicted" in cluster.log())
        cluster.wait_for("steps without the cut worker", lambda: cluster.steps() >= cut_at + 5)
        _must("-n", worker_ns, "link", "set", "eth0", "up")
        restored_at = cluster.steps()
        cluster.wait_for("the rejoin", lambda: cluster.log().count("joined: net-w1") >= 2)
        rejoined_at = cluster.steps()
        codes = cluster.finish()
    finally:
        _ip("-n", worker_ns, "link", "set", "eth0", "up")
        cluster.kill()
    assert codes == {"c": 0, 1: 0, 2: 0}, cluster.log()
    assert rejoined_at < steps, "the run ended before the worker could rejoin"
    log = cluster.log()
    assert "(net-w1) evicted: silent for" in log
    assert "(net-w2) evicted" not in log
    print(f"cut at step {cut_at}, link restored at {restored_at}, rejoined at {rejoined_at}")
    new_id = re.findall(r"worker (\d+) joined: net-w1", log)[-1]
    with open(os.path.join(cluster.out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert any(new_id in r["worker_times"] for r in records if r["type"] == "step"
               and r["step"] > rejoined_at), "the rejoined worker computed nothing"
    _assert_equal_params(cluster.out, reference, steps)
