"""Jobs and their settings: loading scripts, overrides, and errors that name the problem."""

import pytest

import dtrain
from dtrain.distributed.job import Settings, find_job_class, load_job


class Tiny(dtrain.Job):
    batch_size = 8
    micro_shards = 4


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"micro_shards": 9}, r"micro_shards \(9\) must not exceed batch_size \(8\)"),
    ({"epochs": -1}, "epochs must be a non-negative integer"),
    ({"scheduler_step": "batch"}, "scheduler_step must be one of"),
    ({"dtype": "float16"}, "dtype must be one of"),
    ({"heartbeat_timeout": 0.5}, r"heartbeat_timeout \(0.5\) must exceed heartbeat_interval"),
    ({"threads": 0}, "threads must be a positive integer"),
])
def test_bad_settings_name_the_setting(overrides, message):
    with pytest.raises(ValueError, match=message):
        Tiny().settings(**overrides)


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="unknown settings: learning_rate"):
        Tiny().settings(learning_rate=0.1)
    with pytest.raises(ValueError, match="unknown settings: bogus"):
        Settings.from_dict({**Settings().to_dict(), "bogus": 1})


def test_overrides_apply_and_none_keeps_the_job_value():
    s = Tiny().settings(epochs=3, seed=None)
    assert (s.batch_size, s.micro_shards, s.epochs, s.seed) == (8, 4, 3, 0)
    assert Settings.from_dict(s.to_dict()) == s


def test_script_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="training script not found"):
        load_job(str(tmp_path / "nope.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no subclass of dtrain.Job"):
        load_job(str(empty))
    two = tmp_path / "two.py"
    two.write_text("import dtrain\nclass A(dtrain.Job): pass\nclass B(dtrain.Job): pass\n")
    with pytest.raises(ValueError, match=r"several Job subclasses \(A, B\); choose one with --job"):
        load_job(str(two))
    job, digest = load_job(str(two), "B")
    assert type(job).__name__ == "B" and len(digest) == 64
    with pytest.raises(ValueError, match="no Job subclass named 'C'"):
        find_job_class({"__name__": "m"}, "C")


def test_missing_builders_say_what_to_define():
    job = dtrain.Job()
    for call, name in ((lambda: job.model(), "model()"), (lambda: job.loss(None, None), "loss"),
                       (lambda: job.optimizer(None), "optimizer(model)"),
                       (lambda: job.train_data(), "train_data()")):
        with pytest.raises(NotImplementedError, match=name.replace("(", r"\(").replace(")", r"\)")):
            call()
