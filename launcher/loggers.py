"""Other views of ``metrics.jsonl``: a CSV table beside it, for spreadsheets and pandas.

The JSON lines stay the record of truth (a resumed run trims and continues them). One row per
line, columns in order of first appearance; a list of learning rates becomes ``lr_0, lr_1, ...``;
nested values (per-worker timings) stay in the JSON. ``write_csv`` regenerates the whole table;
during a run ``CsvLog`` converts each record once and appends its row at the next epoch end,
regenerating only when the columns change, the JSON lines were trimmed or the CSV was lost, so
at every epoch end and at the end of the run the file has exactly ``write_csv``'s bytes.
"""

from __future__ import annotations

import csv
import io
import logging
import os

from dtrain.records import loads

log = logging.getLogger("dtrain.launcher")

PENDING_BYTES = 1 << 20  # rows held between epoch ends before they are appended anyway


def _flat(record: dict) -> dict:
    row = {}
    for key, value in record.items():
        if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            if len(value) == 1:
                row[key] = value[0]
            else:
                row.update({f"{key}_{i}": v for i, v in enumerate(value)})
        elif isinstance(value, (int, float, str)) or value is None:
            row[key] = value
    return row


def _read_rows(jsonl_path: str) -> tuple[list[dict], dict]:
    """The rows of ``jsonl_path`` and its columns (a dict, in order of first appearance)."""
    rows, columns = [], {}
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            try:
                row = _flat(loads(line))
            except ValueError:
                continue
            rows.append(row)
            columns.update(dict.fromkeys(row))
    return rows, columns


def _write_table(csv_path: str, rows: list[dict], columns: dict) -> os.stat_result:
    """Write header and rows to ``csv_path`` atomically; returns the new file's stat."""
    tmp = csv_path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            stat = os.fstat(f.fileno())
        os.replace(tmp, csv_path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return stat


def write_csv(jsonl_path: str, csv_path: str) -> None:
    """Write ``csv_path`` from the records of ``jsonl_path`` (atomically)."""
    _write_table(csv_path, *_read_rows(jsonl_path))


def _stamp(stat: os.stat_result) -> tuple:
    """What tells the file we wrote from one removed, replaced, truncated or appended to since
    (no mtime: on network file systems the server may set it after our last stat)."""
    return stat.st_dev, stat.st_ino, stat.st_size


class CsvLog:
    """``csv_path`` kept in step with the JSON lines of ``jsonl_path`` as they are written.

    ``add`` converts each line once into a CSV row held in memory; ``flush`` (at every epoch
    end and at the end of the run) appends the rows held. The whole file is regenerated from
    the JSON lines instead, atomically, when it must be: at the first flush (a resumed run's
    CSV is the earlier run's), when a row brings a column not seen before (the header and the
    column order change), after ``invalidate`` (the JSON lines were trimmed or recreated),
    when a write failed, or when the CSV is not the file last written (removed, replaced,
    truncated or appended to by someone else). Either way the file then has the bytes
    ``write_csv`` gives.
    """

    def __init__(self, jsonl_path: str, csv_path: str):
        self.jsonl_path = jsonl_path
        self.csv_path = csv_path
        self.columns = None  # None: regenerate at the next flush
        self.stamp = None  # _stamp of the CSV as last written
        self.pending = io.StringIO()  # rows not yet in the file, as CSV text
        self.writer = None

    def add(self, line: str) -> None:
        """Convert one JSON line just written to ``jsonl_path`` into a row to append."""
        if self.columns is None:
            return  # the next flush regenerates from the JSON lines
        try:
            row = _flat(loads(line))
        except ValueError:
            return  # skipped, as write_csv skips it
        if not row.keys() <= self.columns.keys():
            self.invalidate()  # a new column: the header and the column order change
            return
        self.writer.writerow(row)
        if self.pending.tell() > PENDING_BYTES:
            try:
                self.flush()
            except OSError as e:
                log.warning("%s not updated (%s); the next epoch end tries again",
                            self.csv_path, e)

    def invalidate(self) -> None:
        """The JSON lines changed other than by ``add``: regenerate at the next flush."""
        self.columns = None
        self.writer = None
        self.pending = io.StringIO()

    def flush(self) -> None:
        """Bring the CSV in step with every line added (OSError if it cannot be written; the
        next flush then regenerates it)."""
        if self.columns is None or not self._intact():
            self._regenerate()
        elif self.pending.tell():
            self._append()

    def _intact(self) -> bool:
        try:
            return _stamp(os.stat(self.csv_path)) == self.stamp
        except OSError:
            return False

    def _regenerate(self) -> None:
        self.invalidate()
        rows, columns = _read_rows(self.jsonl_path)
        self.stamp = _stamp(_write_table(self.csv_path, rows, columns))
        self.columns = columns
        self.writer = csv.DictWriter(self.pending, fieldnames=list(columns))

    def _append(self) -> None:
        """Append the rows held in one write; any failure leaves a regeneration to do."""
        data = memoryview(self.pending.getvalue().encode("utf-8"))
        try:
            fd = os.open(self.csv_path, os.O_WRONLY | os.O_APPEND)
            try:
                while data:
                    data = data[os.write(fd, data):]
                stat = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError:
            self.invalidate()
            raise
        self.stamp = _stamp(stat)
        self.pending.seek(0)
        self.pending.truncate()


class TensorBoardLog:
    """Scalars for TensorBoard in ``OUT/tensorboard`` (needs the ``tensorboard`` extra).

    Step records give ``train/loss``, ``train/samples_per_s`` and ``lr/group_N``; epoch records
    give ``epoch/train_loss`` and every ``val_*`` metric as ``val/NAME``, all against the step.
    """

    def __init__(self, directory: str):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("--tensorboard needs tensorboardX: pip install "
                              "'dtrain[tensorboard]'") from None
        self.writer = SummaryWriter(logdir=directory)

    def step(self, r: dict) -> None:
        """Log one step record."""
        self.writer.add_scalar("train/loss", r["loss"], r["step"])
        self.writer.add_scalar("train/samples_per_s", r["samples_per_s"], r["step"])
        lrs = r["lr"] if isinstance(r["lr"], list) else [r["lr"]]
        for i, lr in enumerate(lrs):
            self.writer.add_scalar(f"lr/group_{i}", lr, r["step"])

    def epoch(self, r: dict) -> None:
        """Log one epoch record."""
        self.writer.add_scalar("epoch/train_loss", r["train_loss"], r["step"])
        for key, value in r.items():
            if key.startswith("val_") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"val/{key[4:]}", value, r["step"])

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
