"""Issue 18.6: resume continues the same run, or refuses and says why.

Observed: run B was killed, ``--resume`` picked finished run A's final checkpoint (the highest
step in the directory), did 0 steps, exited 0 and wrote A's parameters as B's result. Resume now
continues the run of the newest checkpoint, from its highest valid step, and refuses a
checkpoint written by another script or with settings that change the result, naming them.
"""

import logging
import os
import shutil
import sys

import numpy as np
import pytest

import dtrain
from dtrain.launcher.run import LaunchError

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import dist_jobs
import service_jobs

JOB = dist_jobs.MomentumGroups  # 6 steps per epoch, 3 epochs


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.state_dict().values(),
                                                      b.state_dict().values()))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _mix_runs(tmp_path, **b_settings) -> str:
    """Run A finished in ``a``; run B (killed after step 8) left its checkpoints there too."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    dtrain.fit(JOB, workers=0, out=a)
    dtrain.fit(JOB, workers=0, out=b, max_steps=9, checkpoint_every=4, **b_settings)
    os.remove(os.path.join(b, "checkpoint.dtrain"))  # B was killed: no final checkpoint
    for name in os.listdir(os.path.join(b, "checkpoints")):
        if name.endswith(".dtrain"):
            shutil.copy(os.path.join(b, "checkpoints", name), os.path.join(a, "checkpoints"))
    return a


def test_resume_continues_the_killed_run_not_a_finished_one_in_the_same_directory(tmp_path,
                                                                                  caplog):
    reference, _ = dtrain.fit(JOB, workers=0, seed=8)
    out = _mix_runs(tmp_path, seed=8)
    with caplog.at_level(logging.WARNING):
        model, history = dtrain.fit(JOB, workers=0, resume=out, seed=8)
    assert history.steps and history.steps[0]["step"] == 8, "resumed the other run"
    assert _same(model, reference)
    assert "another run" in caplog.text  # A's checkpoints are named and passed over


def test_resume_of_the_same_settings_takes_the_newest_run_not_the_highest_step(tmp_path):
    """The observed case exactly: both runs with the same settings; 0 steps used to be done."""
    out = _mix_runs(tmp_path)
    reference, _ = dtrain.fit(JOB, workers=0)
    model, history = dtrain.fit(JOB, workers=2, resume=out)
    assert history.steps and history.steps[0]["step"] == 8
    assert _same(model, reference)


def test_resume_picks_the_highest_valid_step_of_its_run(tmp_path):
    out = str(tmp_path / "run")
    dtrain.fit(JOB, workers=0, out=out, max_steps=12, checkpoint_every=4, keep_checkpoints=0)
    os.remove(os.path.join(out, "checkpoint.dtrain"))
    newest = os.path.join(out, "checkpoints", "step-000000012.dtrain")
    assert os.path.exists(newest)
    with open(newest, "r+b") as f:  # torn: the file ends early
        f.truncate(os.path.getsize(newest) // 2)
    # an older file written last (a copy, a restore from backup): mtime must not decide
    older = os.path.join(out, "checkpoints", "step-000000004.dtrain")
    os.utime(older, None)
    _, history = dtrain.fit(JOB, workers=0, resume=out, max_steps=14)
    assert history.steps[0]["step"] == 8


def test_resume_refuses_a_checkpoint_of_another_script(tmp_path):
    out = str(tmp_path / "run")
    dtrain.fit(JOB, workers=0, out=out, max_steps=4)
    edited = tmp_path / "edited_jobs.py"
    edited.write_text(_read(dist_jobs.__file__) + "\n# edited after the run\n")
    with pytest.raises(LaunchError) as caught:
        dtrain.fit(str(edited), job_name="MomentumGroups", workers=0, resume=out)
    text = str(caught.value)
    assert "another training script" in text and str(edited) in text
    assert "\n" not in text


@pytest.mark.parametrize("changed, named", [
    ({"seed": 9}, ["seed"]),
    ({"batch_size": 10, "micro_shards": 2}, ["batch_size", "micro_shards"]),
    ({"threads": 2, "clip_grad_norm": 1.0}, ["threads", "clip_grad_norm"]),
])
def test_resume_refuses_settings_that_change_the_result_naming_them(tmp_path, changed, named):
    out = str(tmp_path / "run")
    dtrain.fit(JOB, workers=0, out=out, max_steps=4)
    with pytest.raises(LaunchError) as caught:
        dtrain.fit(JOB, workers=0, resume=out, **changed)
    text = str(caught.value)
    for name in named:
        assert name in text
    assert "cannot resume" in text and "\n" not in text


def test_resume_refuses_a_changed_hyperparameter(tmp_path):
    out = str(tmp_path / "run")
    dtrain.fit(service_jobs.Cosine, workers=0, out=out, max_steps=4)
    with pytest.raises(LaunchError, match="hyperparameter lr"):
        dtrain.fit(service_jobs.Cosine, workers=0, resume=out, lr=0.5)


def test_resume_may_train_longer(tmp_path):
    """epochs and max_steps only say where the run ends: changing them is what resume is for."""
    reference, _ = dtrain.fit(JOB, workers=0, epochs=4)
    out = str(tmp_path / "run")
    dtrain.fit(JOB, workers=0, out=out)
    model, history = dtrain.fit(JOB, workers=0, resume=out, epochs=4)
    assert history.steps[0]["step"] == 18
    assert _same(model, reference)


def test_resume_with_a_job_id_refuses_another_runs_checkpoints(tmp_path):
    from dtrain.launcher.run import RunConfig, run

    out = str(tmp_path / "run")
    dtrain.fit(JOB, workers=0, out=out, max_steps=4)
    with pytest.raises(LaunchError, match="no checkpoint of job feedface"):
        run(RunConfig(job=JOB, workers=0, resume=out, job_id="feedface", job_id_given=True))
