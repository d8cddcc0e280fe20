"""Other views of ``metrics.jsonl``: a CSV table beside it, for spreadsheets and pandas.

The JSON lines stay the record of truth (a resumed run trims and continues them); the CSV is
regenerated from them at every epoch end and at the end of the run, so it always matches,
resumed runs included. One row per line, columns in order of first appearance; a list of
learning rates becomes ``lr_0, lr_1, ...``; nested values (per-worker timings) stay in the JSON.
"""

from __future__ import annotations

import csv
import json
import os


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
                row = _flat(json.loads(line))
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
