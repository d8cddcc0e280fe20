"""A newcomer's walkthrough: their own regression job on .npy files, trained with two workers,
resumed, overridden from the command line and a settings file, plotted, exported, predicted."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dtrain

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
from procs import dtrain_processes

SCRIPT = textwrap.dedent('''
    import os

    import numpy as np

    import dtrain
    import dtrain.nn.functional as F
    from dtrain import nn, optim

    HERE = os.path.dirname(os.path.abspath(__file__))


    class Regression(dtrain.Job):
        batch_size = 32
        epochs = 4
        micro_shards = 4
        lr = 0.05
        hidden = 16

        def model(self):
            return nn.Sequential(nn.Linear(4, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1))

        def loss(self, output, target):
            return F.mse_loss(output, target)

        def optimizer(self, model):
            return optim.Adam(model.parameters(), lr=self.lr)

        def scheduler(self, optimizer):
            return optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)

        def train_data(self):
            x = np.load(os.path.join(HERE, "x.npy"), mmap_mode="r")
            y = np.load(os.path.join(HERE, "y.npy"), mmap_mode="r")
            return x[:192], y[:192]

        def val_data(self):
            x = np.load(os.path.join(HERE, "x.npy"))
            y = np.load(os.path.join(HERE, "y.npy"))
            return x[192:], y[192:]
''')


def _dtrain(cwd, *args, timeout=180):
    result = subprocess.run([sys.executable, "-m", "dtrain", *args], cwd=cwd, timeout=timeout,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"dtrain {' '.join(args)}:\n{result.stderr}"
    return result


def _records(path, kind):
    with open(path, encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["type"] == kind]


def test_newcomer_walkthrough(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = (x @ np.array([[0.5], [-1.0], [2.0], [0.0]]) + 0.05 * rng.standard_normal((256, 1)))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    (tmp_path / "reg.py").write_text(SCRIPT)
    script = str(tmp_path / "reg.py")

    # 1. two workers, the default output directory runs/reg
    first = _dtrain(tmp_path, "launch", "--workers", "2", "--no-progress", "--epochs", "2",
                    "reg.py")
    run = tmp_path / "runs" / "reg"
    assert f"outputs in {os.path.join('runs', 'reg')}" in first.stderr
    assert [line.split()[1] for line in first.stderr.splitlines()
            if line.startswith("epoch ")] == ["1/2", "2/2"]
    epochs = _records(run / "metrics.jsonl", "epoch")
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert (run / "metrics.csv").exists()

    # 2. resumed for a third epoch: the steps continue, none repeated
    resumed = _dtrain(tmp_path, "launch", "--workers", "2", "--no-progress", "--epochs", "3",
                      "--resume", str(run), "reg.py")
    assert "resumed at step 12" in resumed.stderr
    steps = [r["step"] for r in _records(run / "metrics.jsonl", "step")]
    assert steps == list(range(18))

    # 3. overridden from the command line and a settings file
    (tmp_path / "run.toml").write_text("hidden = 8\nepochs = 10\nlr = 0.5\n")
    _dtrain(tmp_path, "launch", "--workers", "2", "--no-progress", "--settings", "run.toml",
            "--set", "lr=0.05", "--dtype", "float64", "--out", "runs/b", "reg.py")
    final = dtrain.load(tmp_path / "runs" / "b" / "checkpoint.dtrain")
    assert final["settings"]["hyperparameters"] == {"lr": 0.05, "hidden": 8}
    assert final["settings"]["epochs"] == 10 and final["settings"]["dtype"] == "float64"
    assert final["model"]["0.weight"].shape == (8, 4)
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)

    # 4. plotted to SVG, from the run directories
    plotted = _dtrain(tmp_path, "plot", "runs/reg", "runs/b", "-o", "curves.svg")
    assert "wrote curves.svg" in plotted.stdout
    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")

    # 5. exported (when the onnx extra is installed)
    if importlib.util.find_spec("onnx") is not None:
        exported = _dtrain(tmp_path, "export", "runs/b/checkpoint.dtrain", "--script", "reg.py",
                           "--onnx", "reg.onnx")
        assert "wrote reg.onnx" in exported.stdout and (tmp_path / "reg.onnx").stat().st_size

    # 6. predicted with, from the command line and from Python
    predicted = _dtrain(tmp_path, "predict", "runs/b", "--script", "reg.py", "--input", "x.npy",
                        "-o", "y_hat.npy")
    assert "outputs of shape (256, 1) for 256 samples" in predicted.stdout
    y_hat = np.load(tmp_path / "y_hat.npy")
    model = dtrain.load_trained(tmp_path / "runs" / "b", script)
    assert np.array_equal(y_hat, dtrain.predict(model, x))
    assert float(np.mean((y_hat - y) ** 2)) < float(np.mean((y - y.mean()) ** 2)) / 4
    assert dtrain_processes(script) == []


def test_fresh_venv_runs_the_readmes_first_command(tmp_path):
    """The README's first command in a new virtual environment with dtrain installed into it
    (its dependencies are taken from this environment rather than downloaded; the README's
    second command is this test suite itself)."""
    import site
    import sysconfig

    root = os.path.dirname(HERE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")] + [
        sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    with open(os.path.join(purelib, "dependencies.pth"), "w", encoding="utf-8") as f:
        f.write("\n".join(dict.fromkeys(ours)) + "\n")
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                              "--no-deps", "-e", root],
                             capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stderr
    digits = os.path.join(root, "examples", "digits.py")
    result = subprocess.run([str(venv / "bin" / "dtrain"), "launch", "--workers", "2", digits],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("done: 660 steps;") and "outputs in runs/digits" in last
    accuracy = float(last.split("val_accuracy ")[1].split(",")[0].split(";")[0])
    assert accuracy >= 0.97
    assert dtrain_processes(digits) == []
