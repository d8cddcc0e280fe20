"""metrics.csv is kept in step with metrics.jsonl incrementally (``CsvLog``) instead of being
regenerated from every JSON line at every epoch end, which cost O(steps²) over a run.

The reference is ``write_csv``, the full regeneration: after every epoch end and at the end of
a run the incremental CSV must have its bytes, through new columns, a rewind, a resume, a
deleted output directory, a CSV removed or changed by someone else, and a failed write.
"""

import errno
import os
import shutil
import subprocess
import sys

import pytest

from dtrain.launcher import loggers
from dtrain.launcher.loggers import CsvLog, write_csv
from dtrain.launcher.outdir import trim_metrics
from dtrain.launcher.run import MetricsFile

HERE = os.path.dirname(__file__)
JOBS = os.path.join(HERE, "service_jobs.py")
STEPS_PER_EPOCH = 4


OPEN = []  # every Run's MetricsFile, closed after each test


@pytest.fixture(autouse=True)
def _close_metrics():
    yield
    while OPEN:
        OPEN.pop().close()


class Run:
    """Drives MetricsFile + CsvLog as launcher.run does: step records, an epoch record, the
    CSV refreshed at the epoch end, rewinds and resumes; checks the CSV after every refresh."""

    def __init__(self, out: str, append: bool = False):
        self.out = out
        self.jsonl = os.path.join(out, "metrics.jsonl")
        self.csv = os.path.join(out, "metrics.csv")
        self.table = CsvLog(self.jsonl, self.csv)
        self.metrics = MetricsFile(self.jsonl, append=append, csv=self.table)
        OPEN.append(self.metrics)
        self.step = 0

    def steps(self, epoch: int, count: int = STEPS_PER_EPOCH, **extra) -> None:
        for batch in range(count):
            self.metrics.write("step", {"step": self.step, "epoch": epoch, "batch": batch,
                                        "loss": 1.0 / (self.step + 1), "lr": 0.1,
                                        "samples": 16, "workers": {"0": 0.25}, **extra})
            self.step += 1

    def epoch(self, epoch: int, **extra) -> None:
        self.metrics.write("epoch", {"epoch": epoch, "step": self.step, "train_loss": 0.5,
                                     "lr": [0.1, 0.01], "val_loss": 0.25, **extra})
        self.table.flush()
        assert_like_write_csv(self.out)

    def inode(self) -> int:
        return os.stat(self.csv).st_ino


def assert_like_write_csv(out: str) -> None:
    """metrics.csv has the bytes write_csv gives for metrics.jsonl now."""
    reference = os.path.join(out, "reference.csv.txt")
    write_csv(os.path.join(out, "metrics.jsonl"), reference)
    with open(os.path.join(out, "metrics.csv"), "rb") as f, open(reference, "rb") as g:
        assert f.read() == g.read()
    os.remove(reference)


def test_the_incremental_csv_has_write_csvs_bytes_through_a_runs_events(tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    run = Run(out)
    run.steps(0)
    run.epoch(0)  # first refresh: regenerated; the epoch record adds lr_0, lr_1, val_loss
    first = run.inode()
    for epoch in (1, 2):
        run.steps(epoch)
        run.epoch(epoch)
    assert run.inode() == first, "rows were not appended: the file was regenerated"

    run.steps(3, count=2, loss_scale=float("nan"))  # a new column mid-epoch, a NaN value
    run.epoch(3)
    run.steps(4, count=1)
    run.epoch(4, val_accuracy=0.9)  # a new column in an epoch record

    run.metrics.rewind(14, 4)  # sharded rollback: the records from step 14 / epoch 4 go
    run.step = 14
    run.steps(4, count=3)
    run.epoch(4, val_accuracy=0.9)
    appended = run.inode()
    run.steps(5)
    run.epoch(5)
    assert run.inode() == appended

    run.steps(6, count=2)  # killed mid-epoch; resumed from the checkpoint at step 24, epoch 6
    run.metrics.close()
    trim_metrics(run.jsonl, 24, 6)
    resumed = Run(out, append=True)
    resumed.step = 24
    resumed.steps(6)
    resumed.epoch(6)
    resumed.steps(7)
    resumed.epoch(7)

    resumed.steps(8, count=1)
    shutil.rmtree(out)  # the output directory deleted mid-epoch: the next record recreates it
    resumed.steps(8, count=3)
    assert os.path.isfile(resumed.jsonl)
    resumed.epoch(8)

    os.remove(resumed.csv)  # the CSV alone removed, then appended to and replaced by others
    resumed.steps(9)
    resumed.epoch(9)
    with open(resumed.csv, "a", encoding="utf-8") as f:
        f.write("edited\n")
    resumed.steps(10)
    resumed.epoch(10)
    with open(resumed.csv, "rb") as f:  # replaced by a file of the same size
        stale = f.read().replace(b"step,", b"STEP,", 1)
    with open(resumed.csv + ".new", "wb") as f:
        f.write(stale)
    os.replace(resumed.csv + ".new", resumed.csv)
    resumed.steps(11, count=1)
    resumed.epoch(11)

    resumed.steps(12, count=2)  # the end of the run, mid-epoch
    resumed.metrics.close()
    resumed.table.flush()
    assert_like_write_csv(out)


def test_a_failed_append_costs_that_copy_and_the_next_epoch_end_repairs_it(tmp_path,
                                                                            monkeypatch):
    out = str(tmp_path)
    run = Run(out)
    run.steps(0)
    run.epoch(0)
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills up halfway through the rows
        real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loggers.os, "write", half_then_full)
    run.steps(1)
    run.metrics.write("epoch", {"epoch": 1, "step": run.step, "train_loss": 0.5})
    with pytest.raises(OSError, match="No space"):
        run.table.flush()
    monkeypatch.setattr(loggers.os, "write", real_write)
    run.steps(2)
    run.epoch(2)


def test_rows_held_past_the_limit_are_appended_before_the_epoch_end(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "PENDING_BYTES", 200)
    out = str(tmp_path)
    run = Run(out)
    run.steps(0)
    run.epoch(0)
    size = os.path.getsize(run.csv)
    run.steps(1, count=8)
    assert os.path.getsize(run.csv) > size  # memory stays bounded on long epochs
    run.epoch(1)


def _launch(*args):
    return subprocess.run([sys.executable, "-m", "dtrain", "launch", "--workers", "0",
                           "--no-progress", "--job", "Cosine", *args, JOBS],
                          capture_output=True, text=True, timeout=120, check=False)


def test_dtrain_launch_and_its_resume_write_the_csv_write_csv_gives(tmp_path):
    out = str(tmp_path / "run")
    first = _launch("--epochs", "3", "--max-steps", "10", "--out", out)  # ends mid-epoch
    assert first.returncode == 0, first.stderr
    assert_like_write_csv(out)
    with open(os.path.join(out, "metrics.csv"), encoding="utf-8") as f:
        assert len(f.readlines()) == 1 + 10 + 2  # header, steps, epochs
    resumed = _launch("--epochs", "4", "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert_like_write_csv(out)
    with open(os.path.join(out, "metrics.csv"), encoding="utf-8") as f:
        assert len(f.readlines()) == 1 + 16 + 4
