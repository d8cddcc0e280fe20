"""Other views of ``metrics.jsonl``: a CSV table beside it, for spreadsheets and pandas.

The JSON lines stay the record of truth (a resumed run trims and continues them); the CSV is
regenerated from them at every epoch end and at the end of the run, so it always matches,
resumed runs included. One row per line, columns in order of first appearance; a list of
learning rates becomes ``lr_0, lr_1, ...``; nested values (per-worker timings) stay in the JSON.
"""

from __future__ import annotations

import csv
import os

from dtrain.records import loads


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


def write_csv(jsonl_path: str, csv_path: str) -> None:
    """Write ``csv_path`` from the records of ``jsonl_path`` (atomically)."""
    rows, columns = [], {}
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            try:
                row = _flat(loads(line))
            except ValueError:
                continue
            rows.append(row)
            columns.update(dict.fromkeys(row))
    tmp = csv_path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)


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
