"""A trained run used for predictions: in one call from Python, and with dtrain predict."""

import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import dtrain
from dtrain.cli import main

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
from service_jobs import linear_data

JOBS = os.path.join(HERE, "service_jobs.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "cosine")
    model, _ = dtrain.fit(JOBS, job_name="Cosine", out=out, epochs=2, hidden=5, dtype="float64")
    return out, model


def test_load_trained_rebuilds_the_run_with_its_hyperparameters(run_dir):
    out, trained = run_dir
    model = dtrain.load_trained(out, JOBS, job_name="Cosine")  # hidden=5, float64, as trained
    x, _ = linear_data(10, seed=3)
    expected = trained(dtrain.tensor(x.astype(np.float64))).data
    assert np.array_equal(dtrain.predict(model, x), expected)
    assert dtrain.predict(model, x, batch_size=3).shape == (10, 1)
    with pytest.raises(FileNotFoundError, match="no trained model at"):
        dtrain.load_trained(os.path.dirname(out), JOBS, job_name="Cosine")


def test_cli_predict_writes_npy(run_dir, tmp_path):
    out, _ = run_dir
    x, _ = linear_data(7, seed=4)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(main, ["predict", out, "--script", JOBS, "--job", "Cosine",
                                       "--input", str(tmp_path / "x.npy"),
                                       "-o", str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    assert "outputs of shape (7, 1) for 7 samples" in result.output
    model = dtrain.load_trained(out, JOBS, job_name="Cosine")
    assert np.array_equal(np.load(tmp_path / "y.npy"), dtrain.predict(model, x))


def _tensorboard_scalars(directory) -> dict:
    """tag -> [(step, value)] from the TFRecord event files in ``directory``."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_event_files_hold_the_metrics(tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    _, history = dtrain.fit(JOBS, job_name="Cosine", out=str(out), epochs=2, tensorboard=True)
    scalars = _tensorboard_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == list(range(8))
    assert scalars["train/loss"][-1][1] == pytest.approx(history.steps[-1]["loss"], rel=1e-6)
    assert scalars["val/loss"][-1] == (8, pytest.approx(history.epochs[-1]["val_loss"], rel=1e-6))
    assert "lr/group_0" in scalars and "val/abs_err" in scalars
