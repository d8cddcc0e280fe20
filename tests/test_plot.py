"""``dtrain plot``: curves of real runs rendered to a PNG of the fixed size, and clear errors."""

import json
import os
import struct
import sys
import textwrap

import pytest
from click.testing import CliRunner

import dtrain
from dtrain.cli import main
from dtrain.plot import MetricsError, figure, plot_metrics, read_metrics, read_runs

pytest.importorskip("matplotlib")

JOB = textwrap.dedent("""
    import numpy as np
    import dtrain
    import dtrain.nn.functional as F
    from dtrain import nn, optim

    def blobs(n, seed=0):
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((3, 10)) * 2
        y = rng.integers(0, 3, n)
        return (centers[y] + rng.standard_normal((n, 10))).astype(np.float32), y

    class Tiny(dtrain.Job):
        batch_size = 16
        epochs = 2
        micro_shards = 2

        def model(self):
            return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))

        def loss(self, output, target):
            return F.cross_entropy(output, target)

        def optimizer(self, model):
            return optim.SGD([{"params": model[0].parameters()},
                              {"params": model[2].parameters(), "lr": 0.05}], lr=0.1)

        def scheduler(self, optimizer):
            return optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

        def train_data(self):
            return blobs(64)

        def val_data(self):
            return blobs(32, seed=1)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """metrics.jsonl of two real runs (different seeds) in directories 'seed0' and 'seed1'."""
    root = tmp_path_factory.mktemp("runs")
    script = root / "tiny.py"
    script.write_text(JOB)
    paths = []
    for seed in (0, 1):
        out = root / f"seed{seed}"
        dtrain.fit(str(script), workers=0, out=str(out), seed=seed)
        paths.append(out / "metrics.jsonl")
    return paths


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_real_runs_render_a_1200_by_900_png_with_one_line_per_run(runs, tmp_path):
    import matplotlib.image

    out = tmp_path / "curves.png"
    assert plot_metrics(runs, out) == str(out)
    assert png_size(out) == (1200, 900)
    pixels = matplotlib.image.imread(str(out))
    assert pixels.shape[:2] == (900, 1200)
    assert pixels[..., :3].std() > 0.05  # lines and text, not a blank canvas

    fig = figure(read_runs(runs))
    loss_ax, val_ax, lr_ax = fig.axes[:3]
    assert [line.get_label() for line in loss_ax.get_lines()] == ["seed0", "seed1"]
    assert len(loss_ax.get_lines()[0].get_xdata()) == 8  # 64 samples / 16 = 4 steps, 2 epochs
    assert val_ax.get_ylabel() == "val accuracy (per epoch)"
    assert [list(line.get_xdata()) for line in val_ax.get_lines()] == [[4, 8], [4, 8]]
    # two param groups per run, each halved by StepLR after the first epoch
    labels = [line.get_label() for line in lr_ax.get_lines()]
    assert labels == ["seed0 group 0", "seed0 group 1", "seed1 group 0", "seed1 group 1"]
    group1 = lr_ax.get_lines()[1].get_ydata()
    assert group1[0] == pytest.approx(0.05) and group1[-1] == pytest.approx(0.025)


def test_val_loss_is_drawn_when_runs_have_no_accuracy(tmp_path):
    path = tmp_path / "regression" / "metrics.jsonl"
    path.parent.mkdir()
    lines = [{"type": "step", "step": s, "epoch": 0, "loss": 1.0 / (s + 1), "lr": 0.1}
             for s in range(5)]
    lines.append({"type": "epoch", "epoch": 0, "step": 5, "train_loss": 0.5, "val_loss": 0.7,
                  "lr": [0.1]})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    fig = figure(read_runs([path]))
    assert fig.axes[1].get_ylabel() == "val loss (per epoch)"
    assert list(fig.axes[1].get_lines()[0].get_ydata()) == [0.7]
    assert fig.axes[0].get_lines()[0].get_label() == "regression"


def test_equal_directory_names_are_told_apart(tmp_path):
    paths = []
    for name in ("a", "b"):
        path = tmp_path / name / "run" / "metrics.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"type": "step", "step": 0, "loss": 1.0, "lr": 0.1}) + "\n")
        paths.append(path)
    assert [run.label for run in read_runs(paths)] == ["a/run", "b/run"]


@pytest.mark.parametrize("content, where, what", [
    ("", "", "no step or epoch records"),
    ('{"type": "step", "step": 0, "loss": 1.0}\n{"type": "step", "st', ":2", "not valid JSON"),
    ('{"type": "step", "step": 0, "loss": 1.0}\n\n[1, 2]\n', ":3", "expected a JSON object"),
    ('{"type": "step", "step": 0}\n', ":1", "'loss' must be a number"),
    ('{"type": "step", "step": 0, "loss": 1.0, "lr": "high"}\n', ":1", "'lr' must be a number"),
    ('{"type": "epoch", "epoch": 0}\n', ":1", "'step' must be a number"),
    ('{"step": 0, "loss": 1.0}\n', ":1", "has no 'type'"),
])
def test_empty_or_malformed_files_name_file_and_line(tmp_path, content, where, what):
    path = tmp_path / "metrics.jsonl"
    path.write_text(content)
    with pytest.raises(MetricsError, match="metrics.jsonl" + where + ".*" + what):
        read_metrics(path)


def test_cli_plot_writes_png_and_reports_errors(runs, tmp_path):
    out = tmp_path / "both.png"
    result = CliRunner().invoke(main, ["plot", *map(str, runs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert png_size(out) == (1200, 900)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "step", "step": 0, "loss": 1.0}\nnot json\n')
    result = CliRunner().invoke(main, ["plot", str(bad), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "bad.jsonl:2: not valid JSON" in result.output
    assert not (tmp_path / "x.png").exists()

    result = CliRunner().invoke(main, ["plot", "-o", str(out)])
    assert result.exit_code == 2  # no file given


def test_missing_matplotlib_says_how_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install dtrain\[plot\]"):
        plot_metrics(runs, tmp_path / "never.png")
    result = CliRunner().invoke(main, ["plot", str(runs[0]), "-o", str(tmp_path / "n.png")])
    assert result.exit_code == 1 and "pip install dtrain[plot]" in result.output


@pytest.mark.parametrize("suffix, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_plot_writes_the_format_of_its_name_and_takes_run_directories(runs, tmp_path, suffix,
                                                                      magic):
    out = tmp_path / f"curves.{suffix}"
    result = CliRunner().invoke(main, ["plot", str(os.path.dirname(runs[0])), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)
    result = CliRunner().invoke(main, ["plot", str(runs[0]), "-o", str(tmp_path / "c.gif")])
    assert result.exit_code == 1 and "name the file .png, .svg or .pdf" in result.output
    result = CliRunner().invoke(main, ["plot", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 1 and "without metrics.jsonl" in result.output
