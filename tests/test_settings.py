"""Settings declared once: the dataclass, the Job, the CLI, dtrain.fit and the README agree;
overrides (options, --set, settings files, environment) reach the job in every process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import dtrain
from dtrain.cli import main
from dtrain.distributed.job import Job, Settings, apply_settings
from dtrain.distributed.settings import SPECS, settings_table

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from procs import dtrain_processes
from service_jobs import Cosine

JOBS = os.path.join(HERE, "service_jobs.py")


def test_readme_settings_table_is_generated_from_the_declaration():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    start = readme.index("<!-- settings table")
    table = readme[readme.index("\n", start) + 1:readme.index("<!-- end of settings table")]
    assert table == settings_table(), (
        "README's settings table is stale: replace it with the output of "
        "python -c 'from dtrain.distributed.settings import settings_table as t; print(t())'")


def test_dataclass_and_job_attributes_come_from_the_declaration():
    names = [spec.name for spec in SPECS]
    assert Settings.names() == names
    assert [f for f in Settings.__dataclass_fields__] == [*names, "hyperparameters"]
    for spec in SPECS:
        assert getattr(Settings(), spec.name) == spec.default
        assert getattr(Job, spec.name) == spec.default
    assert Settings().shared_memory is True


@pytest.mark.parametrize("command", ["launch", "coordinator"])
def test_every_setting_is_a_command_line_option(command):
    params = {p.name: p for p in main.commands[command].params}
    for spec in SPECS:
        assert spec.name in params, f"dtrain {command} lacks --{spec.name.replace('_', '-')}"
        assert params[spec.name].help and params[spec.name].show_envvar
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert "--dtype [float32|float64]" in result.output
    assert "--shared-memory / --no-shared-memory" in result.output
    assert f"DTRAIN_{command.upper()}_EPOCHS" in result.output  # environment variables listed


def _parsed(monkeypatch, *args, env=None):
    """The RunConfig a command line builds (run() replaced by a recorder)."""
    import dtrain.launcher.run as run_module

    seen = {}

    def record(config):
        seen["config"] = config
        return None, dtrain.distributed.trainer.History()

    monkeypatch.setattr(run_module, "run", record)
    result = CliRunner().invoke(main, ["launch", *args, JOBS], env=env)
    assert result.exit_code == 0, result.output
    return seen["config"]


def test_every_override_route_reaches_the_run_config(monkeypatch, tmp_path):
    settings_file = tmp_path / "run.toml"
    settings_file.write_text('epochs = 7\nlr = 0.5\ndtype = "float32"\nhidden = 5\n')
    config = _parsed(monkeypatch, "--out", str(tmp_path / "o"), "--dtype", "float64",
                     "--no-shuffle", "--settings", str(settings_file), "--set", "lr=0.05",
                     "--keep-best", "max:val_accuracy", "--no-shared-memory",
                     env={"DTRAIN_LAUNCH_HEARTBEAT_TIMEOUT": "9"})
    assert config.overrides == {"epochs": 7, "lr": "0.05", "dtype": "float64", "hidden": 5,
                                "shuffle": False, "keep_best": "max:val_accuracy",
                                "shared_memory": False, "heartbeat_timeout": 9.0}
    job = Cosine()
    s = job.settings(**config.overrides)
    assert (s.epochs, s.dtype, s.shuffle, s.heartbeat_timeout, s.shared_memory) == \
        (7, "float64", False, 9.0, False)
    assert s.hyperparameters == {"lr": 0.05, "hidden": 5}
    apply_settings(job, s)
    assert (job.epochs, job.lr, job.hidden) == (7, 0.05, 5)
    assert Settings.from_dict(s.to_dict()) == s


def test_yaml_settings_file_and_bad_files_say_what_is_wrong(monkeypatch, tmp_path):
    good = tmp_path / "run.yaml"
    good.write_text("epochs: 3\nlr: 0.01\n")
    assert _parsed(monkeypatch, "--settings", str(good)).overrides == {"epochs": 3, "lr": 0.01}
    assert _parsed(monkeypatch, env={"DTRAIN_SET": "lr=0.3 hidden=6"}).overrides == \
        {"lr": "0.3", "hidden": "6"}
    assert _parsed(monkeypatch, env={"DTRAIN_SETTINGS": str(good)}).overrides == \
        {"epochs": 3, "lr": 0.01}
    bad = tmp_path / "run.ini"
    bad.write_text("epochs=3\n")
    result = CliRunner().invoke(main, ["launch", "--settings", str(bad), JOBS])
    assert result.exit_code == 2 and "use .toml, .yaml, .yml or .json" in result.output
    nested = tmp_path / "nested.toml"
    nested.write_text("[optim]\nlr = 1\n")
    result = CliRunner().invoke(main, ["launch", "--settings", str(nested), JOBS])
    assert result.exit_code == 2 and "optim must be plain values" in result.output
    result = CliRunner().invoke(main, ["launch", "--set", "lr", JOBS])
    assert result.exit_code == 2 and "expected NAME=VALUE" in result.output


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": 0.1}, r"unknown settings: learning_rate \(the job's hyperparameters: hid"),
    ({"hidden": "wide"}, "hyperparameter hidden must be an integer, got 'wide'"),
    ({"hidden": 2.5}, r"hyperparameter hidden is int \(hidden = 8 in the job\), got 2.5"),
    ({"epochs": "many"}, "setting epochs must be an integer, got 'many'"),
    ({"shuffle": "maybe"}, "setting shuffle must be true or false"),
    ({"keep_best": "top:val_loss"}, "expected METRIC, min:METRIC or max:METRIC"),
])
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        Cosine().settings(**overrides)


def test_fit_rejects_unknown_keywords_naming_them():
    with pytest.raises(ValueError, match="unknown settings: bogus, epoch"):
        dtrain.fit(Cosine, epoch=3, bogus=1)
    assert "shared_memory (bool, default True)" in dtrain.fit.__doc__


def test_command_line_overrides_reach_the_job_in_every_process(tmp_path):
    """Issue 17, item 2: with --epochs 2 the job's self.epochs was still 30, so a cosine
    schedule over self.epochs never reached its minimum; --set changes the model's shape in
    the workers too (they would refuse the coordinator's parameters otherwise)."""
    settings_file = tmp_path / "run.toml"
    settings_file.write_text("lr = 0.05\n")
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "dtrain", "launch", "--workers", "2", "--no-progress",
         "--job", "Cosine", "--epochs", "2", "--dtype", "float64", "--set", "hidden=4",
         "--settings", str(settings_file), "--out", str(out), JOBS],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    repeat = json.loads((out / "settings.json").read_text())  # --settings repeats the run
    assert (repeat["epochs"], repeat["hidden"], repeat["lr"], repeat["dtype"]) == \
        (2, 4, 0.05, "float64")
    saved = dtrain.load(out / "checkpoint.dtrain")["settings"]
    assert Cosine().settings(**repeat).to_dict() == saved
    seen = json.loads((out / "seen.json").read_text())
    assert seen == {"epochs": 2, "lr": 0.05, "hidden": 4, "dtype": "float64", "shuffle": True}
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["type"] == "epoch"]
    assert [r["lr"] for r in epochs] == [[0.05], [pytest.approx(0.025)]]  # a 2-epoch cosine
    final = dtrain.load(out / "checkpoint.dtrain")
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    model = final["model"]
    assert model["0.weight"].shape == (4, 3) and model["0.weight"].dtype == np.float64
    assert dtrain_processes(JOBS) == []
