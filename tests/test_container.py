"""The image from deploy/Dockerfile, built for real with podman (deploy/container-smoke.sh build):
it runs as a non-root user, and a coordinator container and two worker containers, with keys
mounted read-only the way deploy/k8s/ mounts its Secrets, train to the bits of
``dtrain launch --workers 0`` run in the same image.

Skips where podman is not installed (or not as root); under CI=true it fails instead, since
.ci/run installs the engines. The image is cached by content (rebuilt when the Dockerfile or
the project changes)."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid

import numpy as np
import pytest

import dtrain

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
SMOKE = os.path.join(ROOT, "deploy", "container-smoke.sh")
ENV = {**os.environ, "CONTAINERS_CONF": os.path.join(ROOT, "deploy", "podman", "containers.conf")}
UID = 10001  # the Dockerfile's USER, and runAsUser in the manifests
STEPS = 40
JOBS_SOURCE = """
import os
import sys
sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs


class ContainerSteps(dist_jobs.SlowSteps):
    '''SlowSteps; the workers must all have joined well before this many seconds.'''

    worker_wait_timeout = 30
"""


def _unavailable(reason: str):
    """Skip, except under CI=true, where .ci/run installs podman and its absence is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def podman(*args, timeout=120, check=True):
    result = subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert not check or result.returncode == 0, (args, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def image():
    """The image's name: built (or found in podman's store by its content tag) once."""
    if os.geteuid() != 0:
        _unavailable("building and running the image with host networking needs root")
    missing = [t for t in ("podman", "runc", "debootstrap") if not shutil.which(t)]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed (apt-get install -y podman runc "
                     "debootstrap)")
    built = subprocess.run([SMOKE, "build"], env=ENV, capture_output=True, text=True,
                           timeout=1200, check=False)
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture
def work():
    """A folder the containers see at the same path: the job file and dist_jobs beside it, the
    two key folders and the outputs (owned by the image's user)."""
    folder = tempfile.mkdtemp(prefix="dtrain-container-")
    os.chmod(folder, 0o755)
    with open(os.path.join(folder, "container_jobs.py"), "w") as f:
        f.write(JOBS_SOURCE)
    shutil.copy(os.path.join(HERE, "dist_jobs.py"), folder)
    runs = os.path.join(folder, "runs")
    os.mkdir(runs)
    os.chown(runs, UID, UID)
    names = []
    try:
        yield folder, names
    finally:
        if names:
            podman("rm", "-f", *names, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _secrets(folder: str) -> None:
    """keys/coordinator and keys/worker as the two Secrets hold them (defaultMode 0440,
    fsGroup 10001: readable by the image's user, owned by root)."""
    subprocess.run([sys.executable, "-m", "dtrain", "keygen", os.path.join(folder, "all")],
                   check=True, capture_output=True, timeout=60)
    roles = {"coordinator": ["coordinator.key", "coordinator.key_secret", "worker.key"],
             "worker": ["worker.key", "worker.key_secret", "coordinator.key"]}
    for role, files in roles.items():
        target = os.path.join(folder, "keys", role)
        os.makedirs(target)
        for name in files:
            shutil.copy(os.path.join(folder, "all", name), target)
            os.chown(os.path.join(target, name), 0, UID)
            os.chmod(os.path.join(target, name), 0o440)
    shutil.rmtree(os.path.join(folder, "all"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint(path: str) -> dict:
    final = dtrain.load(path)
    assert final["step"] == STEPS
    return final["model"]


def test_image_runs_dtrain_as_non_root(image):
    assert podman("run", "--rm", image, "id", "-u").stdout.strip() == str(UID)
    default = podman("run", "--rm", image)  # CMD: dtrain --help
    assert "coordinator" in default.stdout and "worker" in default.stdout
    assert podman("run", "--rm", image, "dtrain", "--version").stdout.startswith("dtrain")
    denied = podman("run", "--rm", image, "touch", "/app/x", check=False)
    assert denied.returncode != 0  # the project files are root's, read-only to the user


def _train(image, folder, names, *, own_hostnames: bool):
    """A coordinator and two worker containers on host networking; returns its log."""
    _secrets(folder)
    script = os.path.join(folder, "container_jobs.py")
    mount = ["-v", f"{folder}:{folder}:ro"]
    port, job_id, tag = _free_port(), f"containers-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    coordinator = f"dtrain-test-coordinator-{tag}"
    names.append(coordinator)
    podman("run", "-d", "--name", coordinator, *mount,
           *(["--hostname", "dtrain-coordinator"] if own_hostnames else []),
           "-v", f"{folder}/keys/coordinator:/keys:ro", "-v", f"{folder}/runs:/runs",
           image, "dtrain", "coordinator", "--bind", f"tcp://127.0.0.1:{port}", "--workers", "2",
           "--keys", "/keys", "--job-id", job_id, "--job", "ContainerSteps", "--max-steps",
           str(STEPS), "--no-progress", "-v", "--out", "/runs/containers", script)
    for index in range(2):  # the Indexed Job's pods: rank from JOB_COMPLETION_INDEX
        names.append(f"dtrain-test-worker{index}-{tag}")
        podman("run", "-d", "--name", names[-1], *mount,
               *(["--hostname", f"dtrain-workers-{index}"] if own_hostnames else []),
               "-v", f"{folder}/keys/worker:/keys:ro",
               "-e", f"DTRAIN_COORDINATOR=tcp://127.0.0.1:{port}",
               "-e", f"JOB_COMPLETION_INDEX={index}", image,
               "dtrain", "worker", "--keys", "/keys", "--job-id", job_id, script)
    code = podman("wait", coordinator, timeout=300).stdout.strip()
    log = podman("logs", coordinator).stderr
    assert code == "0", log
    for name in names[1:]:
        assert podman("wait", name, timeout=60).stdout.strip() == "0", podman("logs", name).stderr
    return log


def _reference(image, folder) -> dict:
    """``dtrain launch --workers 0`` in the same image (the same NumPy and BLAS)."""
    podman("run", "--rm", "-v", f"{folder}:{folder}:ro", "-v", f"{folder}/runs:/runs", image,
           "dtrain", "launch", "--workers", "0", "--no-progress", "--job", "ContainerSteps",
           "--max-steps", str(STEPS), "--out", "/runs/reference",
           os.path.join(folder, "container_jobs.py"), timeout=300)
    return _checkpoint(os.path.join(folder, "runs", "reference", "checkpoint.dtrain"))


def _assert_trained_alike(image, folder, log):
    reference = _reference(image, folder)
    final = _checkpoint(os.path.join(folder, "runs", "containers", "checkpoint.dtrain"))
    assert list(final) == list(reference)
    assert all(np.array_equal(final[k], reference[k]) for k in reference)
    assert len(re.findall(r"worker \d+ joined", log)) == 2, log
    assert "evicted" not in log, log


def test_coordinator_and_two_worker_containers_train_bit_identical(image, work):
    folder, names = work
    log = _train(image, folder, names, own_hostnames=True)
    _assert_trained_alike(image, folder, log)


def test_worker_containers_sharing_hostname_and_pid_train_bit_identical(image, work):
    """Both workers are pid 1 on one host name: told apart by their random instance ids."""
    folder, names = work
    log = _train(image, folder, names, own_hostnames=False)
    _assert_trained_alike(image, folder, log)
