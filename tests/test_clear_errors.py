"""Issue 18.10: bad input gets one line naming the problem and a non-zero exit, never a
traceback (and never a silent exit 0).

Each group is one parametrized test; each case runs the real ``dtrain`` command.
"""

import os
import subprocess
import sys

import pytest

import dtrain

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import dist_jobs

JOBS = dist_jobs.__file__
NOWHERE = "tcp://127.0.0.1:9"  # nothing listens: every case fails before connecting


def _dtrain(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DTRAIN_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "dtrain", *args], capture_output=True,
                          text=True, timeout=120, env=full, cwd=cwd, check=False)


def _assert_one_line_error(result, *named: str) -> None:
    """Non-zero exit, no traceback, exactly one error line, naming every fragment of ``named``."""
    text = result.stdout + result.stderr
    assert result.returncode != 0, f"exit 0 on bad input:\n{text}"
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error" in line.lower().split(":", 2)[0]
              or line.startswith("Error:") or ": error:" in line]
    assert len(errors) == 1, text
    for fragment in named:
        assert fragment in errors[0], f"{fragment!r} not named in: {errors[0]}"


def _key_dir(tmp_path, kind: str) -> str:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("worker.key_secret", "coordinator.key"):
        path = keys / name
        if kind == "empty":
            path.write_text("")
        elif kind == "garbage":
            path.write_bytes(b"\xff\xfe not a certificate \x00\n")
        elif kind == "directory":
            path.mkdir()
    return str(keys)


GOOD = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # 40 Z85 characters


@pytest.mark.parametrize("case, named", [
    ({"env": {"DTRAIN_CURVE_SERVERKEY": GOOD}}, ["DTRAIN_CURVE_PUBLICKEY"]),
    ({"env": {"DTRAIN_CURVE_SERVERKEY": GOOD, "DTRAIN_CURVE_PUBLICKEY": "x" * 5,
              "DTRAIN_CURVE_SECRETKEY": GOOD}}, ["DTRAIN_CURVE_PUBLICKEY", "not a CURVE key"]),
    ({"keys": "empty"}, ["worker.key_secret"]),
    ({"keys": "garbage"}, ["worker.key_secret", "not a key file"]),
    ({"keys": "directory"}, ["worker.key_secret", "is a directory"]),
], ids=["partial-env", "garbage-env", "empty-files", "garbage-files", "directory-files"])
def test_worker_keys(tmp_path, case, named):
    args = ["--keys", _key_dir(tmp_path, case["keys"])] if "keys" in case else []
    result = _dtrain("worker", "--connect", NOWHERE, *args, "--job", "SlowSteps", JOBS,
                     env=case.get("env"))
    _assert_one_line_error(result, *named)


@pytest.mark.parametrize("case", ["rank", "slots", "slots-colon", "non-utf8"])
def test_numbers_and_hostfiles(tmp_path, case):
    hostfile = tmp_path / "hosts"
    if case == "rank":
        result = _dtrain("worker", "--connect", NOWHERE, "--insecure", "--job", "SlowSteps",
                         JOBS, env={"RANK": "²"})
        _assert_one_line_error(result, "RANK", "²")
        return
    hostfile.write_bytes({"slots": "localhost slots=²\n".encode(),
                          "slots-colon": "localhost:²\n".encode(),
                          "non-utf8": b"node\xb2 slots=2\n"}[case])
    result = _dtrain("launch", "--hostfile", str(hostfile), "--out", str(tmp_path / "o"),
                     "--job", "SlowSteps", JOBS)
    _assert_one_line_error(result, str(hostfile))


@pytest.mark.parametrize("source, named", [
    ("import sys\nsys.exit(0)\n", ["sys.exit(0)", "__main__"]),
    ("import sys\nsys.exit()\n", ["sys.exit(None)"]),
    (b"\x00\x01garbage\xff", ["not a valid Python"]),
    ("class = 3\n", ["not a valid Python", ":1"]),
], ids=["exit-0", "exit-none", "binary", "syntax"])
@pytest.mark.parametrize("workers", ["0", "1"])
def test_scripts_that_cannot_be_imported(tmp_path, source, named, workers):
    script = tmp_path / "script.py"
    if isinstance(source, bytes):
        script.write_bytes(source)
    else:
        script.write_text(source)
    result = _dtrain("launch", "--workers", workers, "--out", str(tmp_path / "o"), str(script))
    _assert_one_line_error(result, str(script), *named)


@pytest.mark.parametrize("option, value", [("--seed", 2**200), ("--max-steps", 2**80),
                                           ("--set", "n=" + str(2**64))])
def test_numbers_no_message_can_carry(tmp_path, option, value):
    script = tmp_path / "job.py"
    script.write_text("from dist_jobs import MomentumGroups\n\n\nclass Job(MomentumGroups):\n"
                      "    n = 3\n")
    result = _dtrain("launch", "--workers", "1", "--out", str(tmp_path / "o"), option,
                     str(value), str(script), env={"PYTHONPATH": HERE}, cwd=HERE)
    name = option.lstrip("-").replace("-", "_") if option != "--set" else "n"
    _assert_one_line_error(result, name, "2**63")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    dtrain.fit(dist_jobs.MomentumGroups, workers=0, out=str(out), max_steps=2)
    return str(out / "checkpoint.dtrain")


@pytest.mark.parametrize("case", ["dtype-int8", "huge-input"])
def test_export(tmp_path, checkpoint, case):
    pytest.importorskip("onnx")
    path = checkpoint
    extra = []
    if case == "dtype-int8":
        state = dtrain.load(checkpoint)
        state["settings"]["dtype"] = "int8"
        path = str(tmp_path / "crafted.dtrain")
        dtrain.save(state, path)
    else:
        extra = ["--input-shape", "100000000,64"]
    result = _dtrain("export", path, "--script", JOBS, "--job", "MomentumGroups", "--onnx",
                     str(tmp_path / "m.onnx"), *extra)
    _assert_one_line_error(result, *({"dtype-int8": [path, "dtype", "int8"],
                                      "huge-input": ["100000000,64", "1,64"]}[case]))


@pytest.mark.parametrize("case", ["deep", "dev-zero", "unknown-type"])
def test_plot(tmp_path, case):
    path = {"deep": tmp_path / "deep.jsonl", "dev-zero": "/dev/zero",
            "unknown-type": tmp_path / "other.jsonl"}[case]
    if case == "deep":
        path.write_text("[" * 100000 + "]" * 100000 + "\n")
    elif case == "unknown-type":
        path.write_text('{"type": "hello"}\n')
    result = _dtrain("plot", str(path), "-o", str(tmp_path / "c.png"))
    named = {"deep": "nested", "dev-zero": "not a regular file",
             "unknown-type": "'hello'"}[case]
    _assert_one_line_error(result, str(path), named)
    assert "the file is empty" not in result.stderr
