"""Cluster launch: hostfile/ssh workers, Slurm roles, worker identity from the environment and the
deploy files. Every run ends bit-identical to the in-process run, and no process outlives it."""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import dtrain
from dtrain.cli import main
from dtrain.launcher.env import EnvError, coordinator_address, normalize_address, worker_rank
from dtrain.launcher.hostfile import (
    HostfileError,
    HostSlots,
    parse_hostfile,
    reachable_address,
    remote_command,
)
from dtrain.launcher.slurm import SlurmError, expand_hostlist, task_from_env

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
DEPLOY = os.path.join(ROOT, "deploy")
sys.path.insert(0, HERE)
from procs import dtrain_processes

STEPS = 40
JOBS_SOURCE = f"""
import sys
sys.path.insert(0, {HERE!r})
import dist_jobs


class ClusterSteps(dist_jobs.SlowSteps):
    '''SlowSteps under a file name of this test's own (the marker of its processes).'''


class ClusterSlow(dist_jobs.Slow):
    '''Runs until interrupted.'''
"""

# Stand-in for ssh: skips options, records and drops the host, and runs the remote command here
# in a session of its own, so that (as with a real ssh) signals sent to this client never reach
# the remote processes: only the end of their stdin does.
FAKE_SSH = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -o|-p|-l|-i) shift 2 ;; -*) shift ;; *) break ;; esac
done
echo "$1" >> {log}
shift
setsid sh -c "$*"
"""


@pytest.fixture
def jobs(tmp_path):
    path = tmp_path / "cluster_jobs.py"
    path.write_text(JOBS_SOURCE)
    yield str(path)
    left = dtrain_processes(str(path))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "processes outlived the test"


@pytest.fixture
def fake_ssh(tmp_path):
    path = tmp_path / "fake_ssh"
    path.write_text(FAKE_SSH.format(log=shlex.quote(str(tmp_path / "ssh_hosts.log"))))
    path.chmod(0o755)
    return str(path)


def _reference(jobs):
    model, _ = dtrain.fit(jobs, job_name="ClusterSteps", workers=0, max_steps=STEPS)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_checkpoint_equals(out, reference):
    final = dtrain.load(os.path.join(out, "checkpoint.dtrain"))
    assert final["step"] == STEPS
    assert list(final["model"]) == list(reference)
    assert all(np.array_equal(final["model"][k], reference[k]) for k in reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_steps(metrics: str, count: int, proc, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with open(metrics) as f:
                if sum('"type": "step"' in line for line in f) >= count:
                    return
        except FileNotFoundError:
            pass
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "training did not start"
        time.sleep(0.02)


# ------------------------------------------------------------------ hostfile parsing


def test_hostfile_parses_slots_comments_and_blank_lines():
    text = "# cluster\nnode1 slots=2\n\n  alice@node-2.example   # one slot\nnode3 slots=1 max_slots=4\n"
    assert parse_hostfile(text) == [HostSlots("node1", 2, 2), HostSlots("alice@node-2.example", 1, 4),
                                    HostSlots("node3", 1, 5)]


@pytest.mark.parametrize("text, message", [
    ("a slots=2\nb slots=0\n", "hosts.txt:2: slots must be a positive integer"),
    ("a\nb\na slots=3\n", "hosts.txt:3: host 'a' is already listed on line 1"),
    ("a cpus=2\n", "hosts.txt:1: unknown field 'cpus=2'"),
    ("a slots\n", "hosts.txt:1: unknown field 'slots'"),
    ("\n-oProxyCommand=x\n", "hosts.txt:2: '-oProxyCommand=x' is not a host name"),
    ("a;rm slots=1\n", "hosts.txt:1: 'a;rm' is not a host name"),
    ("# nothing\n\n", "hosts.txt: no hosts"),
])
def test_hostfile_errors_name_file_and_line(text, message):
    with pytest.raises(HostfileError, match=re.escape(message)):
        parse_hostfile(text, "hosts.txt")


def test_remote_command_quotes_every_argument():
    argv = ["python3", "-m", "dtrain", "worker", "--job", "it's", "/a b/job.py"]
    cmd = remote_command(argv, "/work dir", "/opt/my env/bin/python -X dev")
    assert shlex.split(cmd) == ["cd", "/work dir", "&&", "exec", "/opt/my", "env/bin/python",
                                "-X", "dev", "-m", "dtrain.launcher.hostfile", "--serve", "--", *argv]
    quoted = remote_command(argv, "/w", "'/opt/my env/bin/python'")
    assert shlex.split(quoted)[4:6] == ["/opt/my env/bin/python", "-m"]


def test_wildcard_bind_is_announced_as_this_host():
    hosts = [HostSlots("node1", 1)]
    assert reachable_address("tcp://0.0.0.0:29500", hosts) == (
        f"tcp://{socket.gethostname()}:29500")
    assert reachable_address("tcp://10.0.0.1:29500", hosts) == "tcp://10.0.0.1:29500"


# ------------------------------------------------------------------ the remote wrapper


def test_remote_wrapper_passes_env_from_stdin_and_stops_worker_on_eof():
    child = ("import os, sys, time; print(os.environ['DTRAIN_CURVE_SECRETKEY'], os.getpid(), "
             "flush=True); time.sleep(60)")
    wrapper = subprocess.Popen([sys.executable, "-m", "dtrain.launcher.hostfile", "--serve", "--",
                                sys.executable, "-c", child, "dtrain-wrapper-test"],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    try:
        wrapper.stdin.write(json.dumps({"DTRAIN_CURVE_SECRETKEY": "s3cret"}) + "\n")
        wrapper.stdin.flush()
        secret, pid = wrapper.stdout.readline().split()
        assert secret == "s3cret"
        for p in (wrapper.pid, int(pid)):  # on no command line
            with open(f"/proc/{p}/cmdline", "rb") as f:
                assert b"s3cret" not in f.read()
        wrapper.stdin.close()  # what the remote side sees when ssh ends
        assert wrapper.wait(timeout=10) == 128 + signal.SIGTERM
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(int(pid))
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
        wrapper.stdout.close()


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_remote_wrapper_rejects_a_bad_environment_line():
    result = subprocess.run([sys.executable, "-m", "dtrain.launcher.hostfile", "--serve", "--", "true"],
                            cwd=ROOT, input="[1, 2]\n", capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1 and "not a JSON object of strings" in result.stderr


# ------------------------------------------------------------------ hostfile runs


def _hostfile_launch(tmp_path, jobs, fake_ssh, job, *extra):
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("# two hosts, one worker each\nhostA slots=1\n\nhostB   # slots=1\n")
    out = str(tmp_path / "run")
    argv = [sys.executable, "-m", "dtrain", "launch", "--hostfile", str(hostfile),
            "--ssh-command", f"{fake_ssh} -o BatchMode=yes -p 2222",
            "--remote-python", sys.executable, "--remote-workdir", ROOT, "--no-progress", "-v",
            "--job", job, "--out", out, *extra, jobs]
    return argv, out


def test_hostfile_two_hosts_bit_identical_with_host_prefixed_logs(tmp_path, jobs, fake_ssh):
    reference = _reference(jobs)
    argv, out = _hostfile_launch(tmp_path, jobs, fake_ssh, "ClusterSteps",
                                 "--max-steps", str(STEPS))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    _assert_checkpoint_equals(out, reference)
    lines = result.stderr.splitlines()
    assert any(line.startswith("[hostA:0] ") and "joined as worker" in line for line in lines)
    assert any(line.startswith("[hostB:1] ") and "joined as worker" in line for line in lines)
    assert sorted((tmp_path / "ssh_hosts.log").read_text().split()) == ["hostA", "hostB"]
    # other hosts: the default reduction = auto shards, over both workers' reducers
    assert "reduction = auto: sharded, since hosts hostA, hostB (hostfile)" in result.stderr
    assert "range map" in result.stderr and "instead" not in result.stderr, result.stderr


def test_hostfile_sigint_stops_every_local_and_remote_process(tmp_path, jobs, fake_ssh):
    argv, out = _hostfile_launch(tmp_path, jobs, fake_ssh, "ClusterSlow")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_steps(os.path.join(out, "metrics.jsonl"), 5, proc)
        # the launcher, two ssh clients, two remote wrappers and two workers
        assert len(dtrain_processes(jobs, settle=0)) == 7
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert dtrain_processes(jobs) == []


def test_hostfile_launcher_killed_takes_remote_workers_along(tmp_path, jobs, fake_ssh):
    argv, out = _hostfile_launch(tmp_path, jobs, fake_ssh, "ClusterSlow")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_steps(os.path.join(out, "metrics.jsonl"), 5, proc)
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs in the launcher
        proc.wait()
    assert dtrain_processes(jobs, settle=10) == []


def test_hostfile_unreachable_hosts_fail_clearly(tmp_path, jobs):
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("nowhere slots=2\n")
    failing_ssh = tmp_path / "failing_ssh"
    failing_ssh.write_text("#!/bin/sh\necho \"ssh: connect to host $1: No route to host\" >&2\n"
                           "exit 255\n")
    failing_ssh.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-m", "dtrain", "launch", "--hostfile", str(hostfile), "--ssh-command",
         str(failing_ssh), "--no-progress", "--job", "ClusterSteps", "--out",
         str(tmp_path / "run"), jobs], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "[nowhere:1] ssh: connect to host nowhere: No route to host" in result.stderr
    assert "all 2 workers exited (codes 255, 255)" in result.stderr


def test_launch_rejects_bad_cluster_options(tmp_path):
    bad = tmp_path / "hosts.txt"
    bad.write_text("a slots=2\nb slots=two\n")
    script = os.path.join(ROOT, "examples", "digits.py")
    runner = CliRunner()
    result = runner.invoke(main, ["launch", "--hostfile", str(bad), script])
    assert result.exit_code == 2 and f"{bad}:2: slots must be a positive integer" in result.output
    result = runner.invoke(main, ["launch", "--hostfile", str(bad), "--slurm", script])
    assert result.exit_code == 2 and "--hostfile and --slurm exclude each other" in result.output
    result = runner.invoke(main, ["launch", "--slurm", script], env={"SLURM_PROCID": None})
    assert result.exit_code == 2 and "SLURM_PROCID is not set" in result.output
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "3", "SLURM_NODELIST": "n1"}
    result = runner.invoke(main, ["launch", script], env=env)
    assert result.exit_code == 2 and "--keys DIR" in result.output


# ------------------------------------------------------------------ Slurm


@pytest.mark.parametrize("text, hosts", [
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("a,b[1-2]-ib,c", ["a", "b1-ib", "b2-ib", "c"]),
    ("rack[1-2]n[08-09]", ["rack1n08", "rack1n09", "rack2n08", "rack2n09"]),
    ("10.0.0.[1-2],127.0.0.1", ["10.0.0.1", "10.0.0.2", "127.0.0.1"]),
    ("gpu[007]", ["gpu007"]),
])
def test_expand_hostlist(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("a[1-3", "unclosed"), ("a]", "without '['"), ("a[3-1]", "backwards"),
    ("a[x]", "bad range 'x'"), ("a[]", "empty brackets"), ("a,,b", "empty name"),
    ("a[[1]]", "nested"),
])
def test_expand_hostlist_errors(text, message):
    with pytest.raises(SlurmError, match=re.escape(message)):
        expand_hostlist(text)


def test_slurm_task_roles_and_coordinator_address():
    env = {"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_NODELIST": "node[03-04]",
           "SLURM_STEP_NODELIST": "node[04-05]", "SLURM_LAUNCH_NODE_IPADDR": "10.1.1.1",
           "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"}
    task = task_from_env(env)
    assert (task.procid, task.ntasks, task.role) == (2, 4, "worker")
    assert task.coordinator_address(1234) == "tcp://node04:1234"  # the step's first node
    assert task.run_id() == "slurm-77.0"
    assert task_from_env({**env, "SLURM_PROCID": "0"}).role == "coordinator"
    only_ip = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LAUNCH_NODE_IPADDR": "10.1.1.1"}
    assert task_from_env(only_ip).coordinator_address() == "tcp://10.1.1.1:29500"
    assert coordinator_address(only_ip, slurm_port=7) == "tcp://10.1.1.1:7"
    assert coordinator_address({**only_ip, "DTRAIN_PORT": "8"}) == "tcp://10.1.1.1:8"
    assert coordinator_address({**only_ip, "DTRAIN_COORDINATOR": "h:9"}) == "tcp://h:9"
    with pytest.raises(SlurmError, match="SLURM_PROCID='x' is not an integer"):
        task_from_env({**env, "SLURM_PROCID": "x"})
    with pytest.raises(SlurmError, match="SLURM_PROCID=4 does not fit SLURM_NTASKS=4"):
        task_from_env({**env, "SLURM_PROCID": "4"})
    with pytest.raises(SlurmError, match="cannot tell where task 0 runs"):
        task_from_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}).coordinator_address()


def test_worker_identity_from_environment():
    assert worker_rank({}) is None
    assert worker_rank({"JOB_COMPLETION_INDEX": "3"}) == 3
    assert worker_rank({"JOB_COMPLETION_INDEX": "3", "SLURM_PROCID": "5"}) == 5
    assert worker_rank({"RANK": "1", "SLURM_PROCID": "5"}) == 1
    with pytest.raises(EnvError, match="JOB_COMPLETION_INDEX='-1'"):
        worker_rank({"JOB_COMPLETION_INDEX": "-1"})
    assert coordinator_address({}) is None
    assert normalize_address("tcp://a:1") == "tcp://a:1"
    with pytest.raises(EnvError, match="neither tcp://HOST:PORT nor HOST:PORT"):
        normalize_address("justahost")


def test_slurm_three_tasks_train_bit_identical(tmp_path, jobs):
    reference = _reference(jobs)
    keys = str(tmp_path / "keys")
    subprocess.run([sys.executable, "-m", "dtrain", "keygen", keys], check=True,
                   capture_output=True)
    out = str(tmp_path / "run")
    port = _free_port()
    base = {**os.environ, "SLURM_NTASKS": "3", "SLURM_NODELIST": "127.0.0.1",
            "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1", "SLURM_JOB_ID": "4242",
            "SLURM_STEP_ID": "0"}
    argv = [sys.executable, "-m", "dtrain", "launch", "--keys", keys, "--port", str(port),
            "--no-progress", "-v", "--job", "ClusterSteps", "--max-steps", str(STEPS),
            "--out", out, jobs]
    tasks = [subprocess.Popen(argv, env={**base, "SLURM_PROCID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(3)]
    try:
        outputs = [t.communicate(timeout=120)[0] for t in tasks]
    finally:
        for t in tasks:
            if t.poll() is None:
                t.kill()
                t.wait()
    assert [t.returncode for t in tasks] == [0, 0, 0], "\n".join(outputs)
    assert f"coordinator of job slurm-4242.0 listening on tcp://0.0.0.0:{port}" in outputs[0]
    assert outputs[0].count("joined:") == 2
    _assert_checkpoint_equals(out, reference)


# ------------------------------------------------------------------ deploy files


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _deploy_files(suffix=""):
    for root, _, files in os.walk(DEPLOY):
        for name in sorted(files):
            if name.endswith(suffix):
                yield os.path.join(root, name)


def _yaml_docs():
    yaml = pytest.importorskip("yaml")
    docs = {}
    for path in _deploy_files(".yaml"):
        with open(path) as f:
            docs[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d]
    return docs


def _containers(doc):
    return doc["spec"]["template"]["spec"]["containers"]


def test_k8s_manifests_parse_and_fit_together():
    docs = _yaml_docs()
    kinds = {d["kind"]: d for ds in docs.values() for d in ds}
    assert {"Deployment", "Service", "Job", "PersistentVolumeClaim"} <= set(kinds)
    deployment, service, job = kinds["Deployment"], kinds["Service"], kinds["Job"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    coordinator = " ".join(_containers(deployment)[0]["command"])
    port = re.search(r"--bind tcp://0\.0\.0\.0:(\d+)", coordinator).group(1)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"]
    assert f"--workers {job['spec']['completions']}" in coordinator
    worker = _containers(job)[0]
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["DTRAIN_COORDINATOR"] == f"tcp://{service['metadata']['name']}:{port}"
    assert "--rank" not in worker["command"]  # JOB_COMPLETION_INDEX gives it
    job_ids = {re.search(r"--job-id[ \"',]+([\w.-]+)", text).group(1)
               for text in (coordinator, " ".join(worker["command"]))}
    assert len(job_ids) == 1
    for doc, secret in ((deployment, "dtrain-coordinator-keys"), (job, "dtrain-worker-keys")):
        spec = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert volumes["keys"]["secret"]["secretName"] == secret
        assert mounts["keys"]["mountPath"] == "/keys" and mounts["keys"]["readOnly"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert f"kubectl create secret generic {secret}" in _read(os.path.join(DEPLOY,
                                                                               "README.md"))


def test_sbatch_script_is_valid_bash_with_sbatch_header():
    path = os.path.join(DEPLOY, "slurm", "dtrain.sbatch")
    subprocess.run(["bash", "-n", path], check=True)
    lines = _read(path).splitlines()
    assert lines[0] == "#!/bin/bash"
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    header = [line for line in lines if line.startswith("#SBATCH")]
    assert header and all(lines.index(h) < first_command for h in header)
    assert all(re.fullmatch(r"#SBATCH --[a-z-]+=\S+", h) for h in header), header
    assert "srun" in _read(path)


def test_dockerfile_is_slim_non_root_and_installs_the_project():
    text = _read(os.path.join(DEPLOY, "Dockerfile"))
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.MULTILINE)
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    for src in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for name in src.split():
            assert os.path.exists(os.path.join(ROOT, name)), name
    assert re.search(r"^RUN pip install .*\"?\.(\[\w+\])?\"?", text, re.MULTILINE)


_INVOCATION = re.compile(r"(?:^|(?<=[\s\"'`(/]))dtrain[ \t]+([a-z][a-z-]*)([^\n;&|`#]*)", re.MULTILINE)


def _invocations(text: str):
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    for m in _INVOCATION.finditer(text):
        yield m.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2))


def _deploy_texts():
    for path in _deploy_files():
        text = _read(path)
        if path.endswith(".md"):  # code only: fenced blocks and inline spans
            text = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
                             + re.findall(r"`([^`\n]+)`", text))
        else:  # no comment lines (prose)
            text = "\n".join(line for line in text.splitlines()
                             if not line.lstrip().startswith("#"))
        yield path, text
    for name, docs in _yaml_docs().items():
        for doc in docs:
            if "template" in doc.get("spec", {}):
                for c in _containers(doc):
                    yield name, shlex.join(c.get("command", []) + c.get("args", []))


def test_deploy_files_use_only_existing_dtrain_commands_and_flags():
    seen = set()
    for where, text in _deploy_texts():
        for command, flags in _invocations(text):
            assert command in main.commands, f"{where}: dtrain {command} is not a command"
            params = main.commands[command].params
            known = {o for p in params for o in [*p.opts, *p.secondary_opts]}
            for flag in flags:
                assert flag in known, f"{where}: dtrain {command} has no {flag}"
                seen.add((command, flag))
    # the test must see the deploy files' real commands to mean anything
    assert {("launch", "--keys"), ("launch", "--port"), ("coordinator", "--keys"),
            ("worker", "--keys"), ("launch", "--hostfile"), ("launch", "--ssh-command")} <= seen
