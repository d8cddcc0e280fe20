"""A real Slurm cluster on this machine (deploy/slurm/local-cluster.sh: a private munged,
slurmctld and three slurmd nodes named 127.0.0.1-3) runs deploy/slurm/dtrain.sbatch as shipped:
the result is bit-identical to ``dtrain launch --workers 0``, the job's log shows every epoch
while it runs, a killed worker task costs time only, and scancel leaves nothing behind.

Skips where Slurm is not installed (or not as root); under CI=true it fails instead, since
.ci/run installs the engines."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import dtrain
from dtrain.launcher.slurm import expand_hostlist

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
SBATCH = os.path.join(ROOT, "deploy", "slurm", "dtrain.sbatch")
CLUSTER = os.path.join(ROOT, "deploy", "slurm", "local-cluster.sh")
sys.path.insert(0, HERE)
from procs import dtrain_processes

NODES = 3
STEPS = 40
JOBS_SOURCE = f"""
import sys
sys.path.insert(0, {HERE!r})
import dist_jobs


class SlurmSteps(dist_jobs.SlowSteps):
    '''SlowSteps under a file name of this test's own (the marker of its processes).'''


class SlurmSlow(dist_jobs.SlowSteps):
    '''Runs until cancelled.'''

    epochs = 100000
"""
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+  train_loss \S+  val_loss \S+  val_acc \S+%  "
                        r"lr .*  \d+ samples/s$", re.MULTILINE)


def _unavailable(reason: str):
    """Skip, except under CI=true, where .ci/run installs Slurm and its absence is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (slurmctld, then one per slurmd)."""
    for base in range(42000, 60000, 97):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm():
    """The cluster, up once for this module: the environment that reaches it."""
    if os.geteuid() != 0:
        _unavailable("a local Slurm cluster needs root")
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(t)]
    if missing:
        _unavailable(f"Slurm is not installed ({', '.join(missing)} missing: "
                     "apt-get install -y slurm-wlm munge)")
    state = tempfile.mkdtemp(prefix="dtrain-slurm-")
    os.chmod(state, 0o755)  # munged (the munge user) must reach its socket inside
    env = {**os.environ, "DTRAIN_SLURM_DIR": state, "DTRAIN_SLURM_NODES": str(NODES),
           "DTRAIN_SLURM_CPUS": "2", "DTRAIN_SLURM_PORT": str(_free_ports(NODES + 1)),
           "SLURM_CONF": os.path.join(state, "slurm.conf"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    try:
        up = subprocess.run([CLUSTER, "up"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
        assert up.returncode == 0, up.stderr + _logs(state)
        yield env
    finally:
        down = subprocess.run([CLUSTER, "down"], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, down.stderr


def _logs(state: str) -> str:
    texts = []
    for root, _, files in os.walk(state):
        for name in files:
            if name.endswith(".log"):
                with open(os.path.join(root, name), errors="replace") as f:
                    texts.append(f"--- {name}\n{f.read()[-3000:]}")
    return "\n".join(texts)


@pytest.fixture(scope="module")
def jobs():
    folder = tempfile.mkdtemp(prefix="dtrain-slurm-jobs-")
    path = os.path.join(folder, "slurm_jobs.py")
    with open(path, "w") as f:
        f.write(JOBS_SOURCE)
    yield path
    left = dtrain_processes(path)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)
    assert left == [], "processes outlived the tests"


_references = {}


def _reference(jobs: str, tmp_path, steps: int) -> dict:
    """Final parameters of ``dtrain launch --workers 0`` (once per step count)."""
    if steps not in _references:
        out = str(tmp_path / f"reference-{steps}")
        subprocess.run([sys.executable, "-m", "dtrain", "launch", "--workers", "0",
                        "--no-progress", "--job", "SlurmSteps", "--max-steps", str(steps),
                        "--out", out, jobs], check=True, capture_output=True, timeout=300)
        _references[steps] = dtrain.load(os.path.join(out, "checkpoint.dtrain"))["model"]
    return _references[steps]


def _assert_same_bits(out: str, reference: dict, steps: int) -> None:
    final = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    assert final["step"] == steps
    assert list(final["model"]) == list(reference)
    assert all(np.array_equal(final["model"][k], reference[k]) for k in reference)


class Job:
    """One sbatch submission of deploy/slurm/dtrain.sbatch, from its own directory."""

    def __init__(self, slurm: dict, tmp_path, jobs: str, job: str, *options: str,
                 steps: int = 0):
        self.slurm = slurm
        self.out = str(tmp_path / "run")
        self.home = tmp_path / "home"  # the script keeps its keys under $HOME/.dtrain
        self.home.mkdir()
        env = {**slurm, "SCRIPT": jobs, "OUT": self.out, "PORT": str(_free_port()),
               "HOME": str(self.home), "DTRAIN_LAUNCH_JOB_NAME": job,
               "DTRAIN_LAUNCH_MAX_STEPS": str(steps)}
        result = subprocess.run(["sbatch", "--parsable", *options, SBATCH], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
        self.id = result.stdout.strip().split(";")[0]
        self.log = tmp_path / f"dtrain-{self.id}.out"  # the script's --output=dtrain-%j.out

    def info(self) -> dict:
        """scontrol's record of the job (kept for MinJobAge, 300 s, after it ends)."""
        text = subprocess.run(["scontrol", "show", "job", "-o", self.id], env=self.slurm,
                              capture_output=True, text=True, timeout=30, check=True).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait(self, deadline: float = 240) -> dict:
        """Poll until the job has ended; returns its final record."""
        end = time.monotonic() + deadline
        while (info := self.info())["JobState"] not in ENDED:
            if time.monotonic() > end:
                self.cancel()
                raise AssertionError(f"job {self.id} still {info['JobState']} after "
                                     f"{deadline:.0f} s:\n{self.output()}")
            time.sleep(0.1)
        return info

    def cancel(self) -> None:
        subprocess.run(["scancel", self.id], env=self.slurm, timeout=30, check=False)

    def task_pids(self) -> dict[int, int]:
        """{pid: SLURM_PROCID} of this job's running Python processes."""
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if env.get(b"SLURM_JOB_ID") == self.id.encode() and b"SLURM_PROCID" in env \
                    and b"python" in os.path.basename(cmd[0]):
                found[int(pid)] = int(env[b"SLURM_PROCID"])
        return found

    def steps_done(self) -> int:
        try:
            with open(os.path.join(self.out, "metrics.jsonl")) as f:
                return sum('"type": "step"' in line for line in f)
        except FileNotFoundError:
            return 0


def _wait_until(what: str, condition, job: Job, deadline: float = 120) -> None:
    end = time.monotonic() + deadline
    while not condition():
        state = job.info()["JobState"]
        assert state in ("PENDING", "RUNNING"), f"job {state} before {what}:\n{job.output()}"
        assert time.monotonic() < end, f"no {what} within {deadline:.0f} s:\n{job.output()}"
        time.sleep(0.05)


@pytest.mark.parametrize("options, nodes", [
    (["--ntasks=3"], 2),  # 2 CPUs per node: tasks 0-1 on the first node, task 2 on the second
    # the script's own #SBATCH --ntasks=5 still applies unless --ntasks is given too
    (["--nodes=3", "--ntasks-per-node=1", "--ntasks=3"], 3),
], ids=["ntasks", "nodes"])
def test_sbatch_trains_bit_identical_across_nodes(slurm, jobs, tmp_path, options, nodes):
    reference = _reference(jobs, tmp_path, STEPS)
    job = Job(slurm, tmp_path, jobs, "SlurmSteps", *options, steps=STEPS)
    info = job.wait()
    log = job.output()
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert "[" in info["NodeList"]  # a compressed list reached the launcher
    assert len(expand_hostlist(info["NodeList"])) == nodes
    _assert_same_bits(job.out, reference, STEPS)
    with open(os.path.join(job.out, "settings.json"), encoding="utf-8") as f:
        assert json.load(f)["reduction"] == "sharded"  # several nodes: auto shards
    # one line per finished epoch (6 steps each), then the summary
    assert [int(e) for e in EPOCH_LINE.findall(log)] == list(range(1, STEPS // 6 + 1)), log
    assert f"done: {STEPS} steps" in log
    assert os.listdir(job.home / ".dtrain") == []  # the job's keys are gone
    assert dtrain_processes(jobs) == []


def _shm_entries(pids) -> list[str]:
    """/dev/shm entries that processes ``pids`` made (boards are named dtrain-KIND-PID-...)."""
    if not os.path.isdir("/dev/shm"):
        return []
    return [name for name in os.listdir("/dev/shm")
            if (m := re.match(r"^dtrain-\w+-(\d+)-", name)) and int(m.group(1)) in pids]


def _running(pid: int) -> bool:
    """Alive and not a zombie (slurmstepd reaps its tasks a moment after they end)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_log_shows_epochs_while_running_and_scancel_leaves_nothing(slurm, jobs, tmp_path):
    job = Job(slurm, tmp_path, jobs, "SlurmSlow", "--ntasks=3")
    pids = {}
    try:
        _wait_until("second epoch line", lambda: len(EPOCH_LINE.findall(job.output())) >= 2,
                    job)
        assert job.info()["JobState"] == "RUNNING"  # the lines came while it ran
        pids = job.task_pids()
        assert sorted(pids.values()) == [0, 1, 2]
        assert os.listdir(job.home / ".dtrain") == [f"keys-{job.id}"]
        assert _shm_entries(pids)  # same-node workers share the parameter board
        job.cancel()
        info = job.wait()
    finally:
        job.cancel()
    assert info["JobState"] == "CANCELLED"
    assert dtrain_processes(jobs, settle=30) == []
    assert [p for p in pids if _running(p)] == []
    assert os.listdir(job.home / ".dtrain") == []
    assert _shm_entries(pids) == []


def test_worker_task_killed_mid_run_costs_time_not_bits(slurm, jobs, tmp_path):
    steps = 150
    reference = _reference(jobs, tmp_path, steps)
    job = Job(slurm, tmp_path, jobs, "SlurmSteps", "--ntasks=3", steps=steps)
    try:
        _wait_until("10 steps", lambda: job.steps_done() >= 10, job)
        victim = next(pid for pid, rank in job.task_pids().items() if rank == 2)
        os.kill(victim, signal.SIGKILL)
        killed_at = job.steps_done()
        info = job.wait()
    finally:
        job.cancel()
    log = job.output()
    assert killed_at < steps, "the run ended before the worker was killed"
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert "task 2 (a worker) ended with code 137; the others carry on" in log
    _assert_same_bits(job.out, reference, steps)
    assert os.listdir(job.home / ".dtrain") == []
    assert dtrain_processes(jobs) == []


def test_no_progress_keeps_one_line_per_epoch_without_a_terminal(jobs, tmp_path):
    """What a batch log gets (needs no Slurm): no bar, but every epoch's line."""
    result = subprocess.run([sys.executable, "-m", "dtrain", "launch", "--workers", "0",
                             "--no-progress", "--job", "SlurmSteps", "--max-steps", "12",
                             "--out", str(tmp_path / "run"), jobs],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert [int(e) for e in EPOCH_LINE.findall(result.stderr)] == [1, 2], result.stderr
    assert "[" not in result.stderr and "step " not in result.stderr  # no progress bar
