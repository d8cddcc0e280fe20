"""Every manifest in deploy/k8s/ against Kubernetes' own schema, offline and strict
(kubernetes-validate), and a manifest with an unknown field is refused (so the check can fail).
The commands and flags in the manifests are checked against the CLI in test_cluster.py.

Skips where kubernetes-validate is not installed; under CI=true it fails instead, since .ci/run
installs it."""

import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
K8S = os.path.join(os.path.dirname(HERE), "deploy", "k8s")
VERSION = "1.30.0"
MANIFESTS = sorted(name for name in os.listdir(K8S) if name.endswith((".yaml", ".yml")))


def _validator() -> str:
    found = shutil.which("kubernetes-validate", path=os.path.dirname(sys.executable)) \
        or shutil.which("kubernetes-validate")
    if found is None:
        reason = "kubernetes-validate is not installed (pip install kubernetes-validate)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def _validate(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([_validator(), "-k", VERSION, "--strict", "--quiet", path],
                          capture_output=True, text=True, timeout=120, check=False)


def test_there_are_manifests():
    assert {"coordinator.yaml", "workers.yaml"} <= set(MANIFESTS)


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_passes_the_strict_schema(name):
    result = _validate(os.path.join(K8S, name))
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unknown_field_is_refused(tmp_path):
    with open(os.path.join(K8S, "workers.yaml")) as f:
        text = f.read()
    assert "      restartPolicy: OnFailure\n" in text
    broken = tmp_path / "workers.yaml"
    broken.write_text(text.replace("      restartPolicy: OnFailure\n",
                                   "      restartPolicy: OnFailure\n      restartPolicyy: Never\n"))
    result = _validate(str(broken))
    assert result.returncode != 0
    assert "restartPolicyy" in result.stdout + result.stderr
