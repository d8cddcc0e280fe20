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
