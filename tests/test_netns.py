"""Several machines on one: the coordinator and workers run on hosts made of network namespaces,
each process with its own hostname (``netns_hosts.py``), joined by a bridge. dtrain sees
separate machines, so arrays cross the veth links in CURVE-encrypted TCP messages, as between
real machines, while a worker on the coordinator's own host keeps shared memory. The tests check
the bytes on every link, that faults on this path (a killed worker, a cut link, a coordinator
restarted with another worker count) cost time but never bits, that two workers sharing
hostname and pid both train, and that parameters slower to arrive than the heartbeat timeout
do not make a worker reconnect."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import dtrain

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import netns_hosts
from procs import dtrain_processes

PORT = 29500
HIDDEN = 1024  # wide enough that a step's gradients (57 KB) dwarf headers and heartbeats
JOB_SOURCE = f"""
import os
import sys
import time

sys.path.insert(0, {HERE!r})
import dist_jobs
import dtrain.nn.functional as F
from dtrain import nn


class NetSteps(dist_jobs.MomentumGroups):
    '''Many steps; workers (given DTRAIN_TEST_SHARD_DELAY) take a while per micro-shard.'''

    epochs = 100
    heartbeat_interval = 0.2
    heartbeat_timeout = 1.5

    def model(self):
        return nn.Sequential(nn.Linear(10, {HIDDEN}), nn.Tanh(), nn.Linear({HIDDEN}, 3))

    def loss(self, output, target):
        delay = os.environ.get("DTRAIN_TEST_SHARD_DELAY")
        if delay:
            time.sleep(float(delay))
        return F.cross_entropy(output, target)


class SlowLink(NetSteps):
    '''3.7 MB of parameters: on a 10 Mbit/s link one TASK takes longer than the timeout.'''

    heartbeat_timeout = 2.0

    def model(self):
        return nn.Sequential(nn.Linear(10, 65536), nn.Tanh(), nn.Linear(65536, 3))
"""
GRAD_BYTES = 4 * (10 * HIDDEN + HIDDEN + HIDDEN * 3 + 3)  # float32 parameters = gradients


@pytest.fixture(scope="module")
def hosts():
    """Three hosts on one bridge, removed at the end (also on failure)."""
    why = netns_hosts.available()
    if why:
        pytest.skip(why)
    try:
        made = netns_hosts.Hosts(3)
    except netns_hosts.HostsError as e:
        pytest.skip(f"cannot make network namespaces here: {e}")
    with made:
        yield made


@pytest.fixture(scope="module")
def setup(hosts, tmp_path_factory):
    base = tmp_path_factory.mktemp("netns")
    job = base / "net_job.py"
    job.write_text(JOB_SOURCE)
    keys = str(base / "keys")
    subprocess.run([sys.executable, "-m", "dtrain", "keygen", keys], check=True,
                   capture_output=True, timeout=60)
    yield {"hosts": hosts, "job": str(job), "keys": keys, "base": base}
    left = dtrain_processes(str(job))
    for pid in left:
        os.kill(pid, 9)
    assert left == [], "processes outlived the test"


_references: dict = {}


def _reference(job: str, steps: int, name: str = "NetSteps") -> dict:
    """Parameters of the fault-free single-process run of ``steps`` steps (cached)."""
    if (name, steps) not in _references:
        model, _ = dtrain.fit(job, job_name=name, workers=0, max_steps=steps)
        _references[name, steps] = {k: v.clone() for k, v in model.state_dict().items()}
    return _references[name, steps]


class Cluster:
    """A coordinator and workers on the hosts, started by the test; logs in files."""

    def __init__(self, setup: dict, name: str, steps: int, job_name: str = "NetSteps",
                 reduction: str = "coordinator"):
        self.dir = setup["base"] / name
        self.dir.mkdir()
        self.out = str(self.dir / "run")
        self.hosts, self.job, self.keys = setup["hosts"], setup["job"], setup["keys"]
        self.steps_total = steps
        self.job_name = job_name
        self.procs: dict = {}
        self.logs: dict = {}
        self.env = {k: v for k, v in os.environ.items()
                    if not k.endswith(("_SHARED_MEMORY", "_REDUCTION"))}
        if reduction != "auto":  # auto: the default, left to the coordinator's choice
            self.env["DTRAIN_COORDINATOR_REDUCTION"] = reduction

    def coordinator(self, workers: int, *extra: str, key: str = "c") -> None:
        """``dtrain coordinator`` on host 1, listening on every interface."""
        self._start(key, 1, ["coordinator", "--bind", f"tcp://0.0.0.0:{PORT}", "--workers",
                             str(workers), "--keys", self.keys, "--job", self.job_name,
                             "--max-steps", str(self.steps_total), "--no-progress", "-v",
                             "--out", self.out, *extra, self.job])

    def worker(self, key, host: int, delay: float, *extra: str, pid_namespace=False) -> None:
        """``dtrain worker`` on ``host``, dialing the coordinator's address on the bridge."""
        self._start(key, host, ["worker", "--connect", f"tcp://{self.hosts.addr(1)}:{PORT}",
                                "--keys", self.keys, "--job", self.job_name, *extra, self.job],
                    pid_namespace, DTRAIN_TEST_SHARD_DELAY=str(delay))

    def two_remote_workers_past_step_10(self) -> None:
        """The fault tests' start: the coordinator, workers 1 and 2 on hosts 2 and 3, 10 steps."""
        self.coordinator(2)
        for rank, host in ((1, 2), (2, 3)):
            self.worker(rank, host, 0.01, "--rank", str(rank), "--name", f"net-w{rank}")
        self.wait_for("step 10", lambda: self.steps() >= 10)

    def _start(self, key, host: int, args: list, pid_namespace=False, **env) -> None:
        self.logs[key] = self.dir / f"{key}.log"
        argv = self.hosts.argv(host, [sys.executable, "-m", "dtrain", *args], pid_namespace)
        with open(self.logs[key], "wb") as log:
            self.procs[key] = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **env},
                                               stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT)

    def log(self, key="c") -> str:
        return self.logs[key].read_text()

    def records(self) -> list:
        try:
            with open(os.path.join(self.out, "metrics.jsonl")) as f:
                return [json.loads(line) for line in f if '"type": "step"' in line]
        except FileNotFoundError:
            return []

    def steps(self) -> int:
        return len(self.records())

    def wait_for(self, what: str, condition, timeout: float = 40, key="c") -> None:
        """Poll ``condition`` until it holds; fail if a process dies or the deadline passes."""
        deadline = time.monotonic() + timeout
        while not condition():
            dead = {k: p.returncode for k, p in self.procs.items()
                    if p.poll() is not None and p.returncode != -9}
            assert not dead, f"while waiting for {what}: exited {dead}\n{self.log(key)}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.log(key)}"
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> dict:
        return {k: p.wait(timeout=timeout) for k, p in self.procs.items()}

    def kill(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def _ids(log: str, name: str) -> list:
    """Worker ids the coordinator gave to workers named ``name``, in joining order."""
    return re.findall(rf"worker (\d+) joined: {re.escape(name)} ", log)


def _assert_equal_params(out: str, reference: dict, steps: int) -> None:
    final = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    assert final["step"] == steps
    assert all(np.array_equal(final["model"][k], reference[k]) for k in reference)


def _assert_reduced(log: str, reduction: str) -> None:
    """The coordinator reduced as asked: sharded, by range maps over the workers' reducers
    (never the fallback to the star), else none."""
    if reduction == "sharded":
        assert "range map" in log and "reduces this run instead" not in log, log
    else:
        assert "range map" not in log, log


def test_arrays_cross_the_links_and_the_result_is_bit_identical(setup):
    """Workers on other hosts use the network; the coordinator's neighbour, shared memory."""
    steps = 30
    reference = _reference(setup["job"], steps)
    hosts = setup["hosts"]
    cluster = Cluster(setup, "clean", steps)
    before = hosts.counters()
    try:
        cluster.coordinator(3)
        for rank, host in enumerate((1, 2, 3)):
            cluster.worker(rank, host, 0.002, "--rank", str(rank), "--name", f"net-w{rank}")
        codes = cluster.finish()
    finally:
        cluster.kill()
    after = hosts.counters()
    assert codes == {"c": 0, 0: 0, 1: 0, 2: 0}, cluster.log()
    log = cluster.log()
    assert "evicted" not in log
    channels = dict(re.findall(r"worker (\d+) is ready; its arrays travel over ([a-z-]+)", log))
    assert [channels[_ids(log, f"net-w{r}")[0]] for r in range(3)] == \
        ["shared-memory", "network", "network"], log
    for host in (2, 3):  # parameters down and gradients up, every step
        sent, received = (after[host][d] - before[host][d] for d in ("tx", "rx"))
        print(f"host {host}: {sent / steps / 1e3:.1f} KB up, {received / steps / 1e3:.1f} KB "
              f"down per step; gradients {GRAD_BYTES / 1e3:.1f} KB")
        assert sent >= steps * GRAD_BYTES and received >= steps * GRAD_BYTES
    _assert_equal_params(cluster.out, reference, steps)


def test_killed_worker_on_another_host_costs_no_bits(setup):
    """SIGKILL a networked worker mid-run (silence evicts it), start a new one that rejoins."""
    steps = 150  # room for the new process to start on a busy machine before the run ends
    reference = _reference(setup["job"], steps)
    cluster = Cluster(setup, "kill", steps)
    try:
        cluster.two_remote_workers_past_step_10()
        cluster.procs[1].kill()
        killed_at = cluster.steps()
        cluster.wait_for("the eviction", lambda: "(net-w1) evicted" in cluster.log())
        cluster.worker("again", 2, 0.01, "--rank", "1", "--name", "net-w1")
        cluster.wait_for("the new worker", lambda: len(_ids(cluster.log(), "net-w1")) == 2)
        rejoined_at = cluster.steps()
        codes = cluster.finish()
    finally:
        cluster.kill()
    assert codes == {"c": 0, 1: -9, 2: 0, "again": 0}, cluster.log()
    assert rejoined_at < steps, "the run ended before the new worker joined"
    log = cluster.log()
    print(f"killed at step {killed_at}, new worker joined at {rejoined_at}")
    assert "(net-w1) evicted: silent for" in log and "(net-w2) evicted" not in log
    new_id = _ids(log, "net-w1")[-1]
    assert re.search(rf"worker {new_id} is ready; its arrays travel over network", log)
    assert any(new_id in r["worker_times"] and r["worker_times"][new_id]["compute_s"] > 0
               for r in cluster.records()), "the new worker computed nothing"
    _assert_equal_params(cluster.out, reference, steps)


@pytest.mark.parametrize("reduction", ["coordinator", "sharded"])
def test_cut_link_evicts_worker_and_restored_link_rejoins(setup, reduction):
    """Sharded, the cut worker's reducer is cut off with it: the run rolls back, re-cuts the
    ranges over the other reducer, and again over both when the worker rejoins."""
    steps = 150
    reference = _reference(setup["job"], steps)
    hosts = setup["hosts"]
    cluster = Cluster(setup, f"cut-{reduction}", steps, reduction=reduction)
    try:
        cluster.two_remote_workers_past_step_10()
        hosts.link(2, up=False)
        cut_at = cluster.steps()
        cluster.wait_for("the eviction", lambda: "(net-w1) evicted" in cluster.log())
        cluster.wait_for("steps without the cut worker", lambda: cluster.steps() >= cut_at + 5)
        hosts.link(2, up=True)
        restored_at = cluster.steps()
        cluster.wait_for("the rejoin", lambda: len(_ids(cluster.log(), "net-w1")) >= 2)
        rejoined_at = cluster.steps()
        codes = cluster.finish()
    finally:
        hosts.link(2, up=True)
        cluster.kill()
    assert codes == {"c": 0, 1: 0, 2: 0}, cluster.log()
    assert rejoined_at < steps, "the run ended before the worker could rejoin"
    log = cluster.log()
    assert "(net-w1) evicted: silent for" in log
    assert "(net-w2) evicted" not in log
    _assert_reduced(log, reduction)
    print(f"cut at step {cut_at}, link restored at {restored_at}, rejoined at {rejoined_at}")
    new_id = _ids(log, "net-w1")[-1]
    assert any(new_id in r["worker_times"] for r in cluster.records()
               if r["step"] > rejoined_at), "the rejoined worker computed nothing"
    _assert_equal_params(cluster.out, reference, steps)


@pytest.mark.parametrize("reduction", ["coordinator", "auto"])
def test_restarted_coordinator_resumes_with_another_worker_count(setup, reduction):
    """One remote worker; the coordinator is killed, resumes from its checkpoint and waits for
    two: the first worker rejoins by itself, a second host's worker joins. With the default
    ``reduction = auto`` the coordinator, listening beyond loopback for workers on other hosts,
    shards: the checkpoint's whole state is cut over two reducers on two hosts."""
    steps = 60
    reference = _reference(setup["job"], steps)
    cluster = Cluster(setup, f"resume-{reduction}", steps, reduction=reduction)
    try:
        cluster.coordinator(1, "--checkpoint-every", "5")
        cluster.worker(1, 2, 0.005, "--rank", "1", "--name", "net-w1")
        cluster.wait_for("step 12", lambda: cluster.steps() >= 12)
        cluster.procs["c"].kill()
        cluster.procs["c"].wait(timeout=10)
        killed_at = cluster.steps()
        cluster.coordinator(2, "--resume", cluster.out, key="c2")
        cluster.worker(2, 3, 0.005, "--rank", "2", "--name", "net-w2")
        codes = cluster.finish(timeout=90)
    finally:
        cluster.kill()
    log = cluster.log("c2")
    assert codes == {"c": -9, "c2": 0, 1: 0, 2: 0}, log
    print(f"coordinator killed after step {killed_at}")
    assert "resumed at step" in log, log
    assert len(_ids(log, "net-w1")) == 1 and len(_ids(log, "net-w2")) == 1, log
    assert log.count("its arrays travel over network") == 2, log
    if reduction == "auto":
        assert "reduction = auto: sharded, since workers connecting to" in log, log
        _assert_reduced(log, "sharded")
        assert "8 ranges over 2 reducers" in log, log
    else:
        _assert_reduced(log, reduction)
    _assert_equal_params(cluster.out, reference, steps)


def test_two_workers_with_one_hostname_and_pid_both_train(setup):
    """Each worker is pid 1 of its own pid namespace on the same host, with the same name: the
    coordinator tells them apart by instance id, and both compute in every step."""
    steps = 30
    reference = _reference(setup["job"], steps)
    hosts = setup["hosts"]
    cluster = Cluster(setup, "twins", steps)
    try:
        cluster.coordinator(2)
        for key in ("a", "b"):
            cluster.worker(key, 2, 0.002, "--rank", "0", pid_namespace=True)
        codes = cluster.finish()
    finally:
        cluster.kill()
    assert codes == {"c": 0, "a": 0, "b": 0}, cluster.log()
    log = cluster.log()
    name = f"{hosts.hostname[2]}-w0"
    joins = re.findall(rf"worker (\d+) joined: {re.escape(name)} \(pid (\d+) on (\S+)\)", log)
    assert [(pid, host) for _, pid, host in joins] == [("1", hosts.hostname[2])] * 2, log
    assert "evicted" not in log, log
    ids = [worker for worker, _, _ in joins]
    previous = {worker: 0.0 for worker in ids}
    records = cluster.records()
    assert len(records) == steps
    for r in records:
        for worker in ids:
            now = r["worker_times"][worker]["compute_s"]
            assert now > previous[worker], f"worker {worker} computed nothing in step {r['step']}"
            previous[worker] = now
    _assert_equal_params(cluster.out, reference, steps)


def test_a_task_slower_than_the_heartbeat_timeout_still_arrives(setup):
    """On a 10 Mbit/s link the parameters take longer than the heartbeat timeout to arrive, and
    the coordinator's heartbeats wait behind them on the data connection; the answers to the
    worker's beacon, on a connection of their own, tell it the coordinator lives."""
    steps = 2
    reference = _reference(setup["job"], steps, "SlowLink")
    hosts = setup["hosts"]
    cluster = Cluster(setup, "slow", steps, "SlowLink")
    hosts.shape("10mbit")
    try:
        cluster.coordinator(1)
        cluster.worker(1, 2, 0.0, "--rank", "1", "--name", "net-w1", "-v")
        codes = cluster.finish(timeout=60)  # about 10 s; forever when the worker reconnects
    finally:
        cluster.kill()
        hosts.unshape()
    assert codes == {"c": 0, 1: 0}, cluster.log()
    assert "evicted" not in cluster.log(), cluster.log()
    assert "reconnecting" not in cluster.log(1), cluster.log(1)
    _assert_equal_params(cluster.out, reference, steps)
