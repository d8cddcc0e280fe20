"""A run's output directory: one run per directory, unless the user says resume or overwrite.

Two runs in one directory used to mix: the second overwrote ``metrics.jsonl`` and the final
checkpoint while the first run's later checkpoints survived and were resumed from. Now a
non-empty directory is refused unless the run resumes it or ``--overwrite`` removes the earlier
run's outputs; a resumed run's ``metrics.jsonl`` drops the records after the checkpoint it
continues from, so every step appears once.
"""

from __future__ import annotations

import json
import os
import shutil

METRICS = "metrics.jsonl"
FINAL = "checkpoint.dtrain"
CHECKPOINTS = "checkpoints"
CSV = "metrics.csv"
TENSORBOARD = "tensorboard"
SETTINGS = "settings.json"  # the run's effective settings: --settings OUT/settings.json repeats it
OUTPUTS = (METRICS, CSV, FINAL, CHECKPOINTS, TENSORBOARD, SETTINGS)


class OutDirError(ValueError):
    """The output directory cannot be used as asked; the message says what to do."""


def resumed_dir(resume: str) -> str:
    """The run directory of ``--resume DIR`` (DIR itself, or its parent for DIR/checkpoints)."""
    resume = os.path.abspath(resume)
    if os.path.basename(resume) == CHECKPOINTS:
        return os.path.dirname(resume)
    return resume


def default_out(script: str, overwrite: bool = False) -> str:
    """Where ``dtrain launch SCRIPT`` writes without ``--out``: ``runs/SCRIPT`` the first time,
    then ``runs/SCRIPT-2``, ``-3``, ... so running an example again never mixes two runs (with
    ``--overwrite``, ``runs/SCRIPT`` again)."""
    base = os.path.join("runs", os.path.splitext(os.path.basename(script))[0])
    if overwrite:
        return base
    candidate, n = base, 1
    while os.path.exists(candidate) and (not os.path.isdir(candidate) or os.listdir(candidate)):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def check_out(out: str, resume: str | None = None, overwrite: bool = False) -> bool:
    """Refuse an ``out`` that holds another run unless resuming it or overwriting; returns
    True when the earlier run's outputs are to be removed. Changes nothing on disk."""
    if resume and overwrite:
        raise OutDirError("--resume and --overwrite exclude each other: resume continues the "
                          "run in the directory, overwrite replaces it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutDirError(f"output directory {out} is a file: pass another --out")
    entries = sorted(os.listdir(out)) if os.path.isdir(out) else []
    same = resume is not None and os.path.abspath(out) == resumed_dir(resume)
    if not entries or same:
        return False
    if not overwrite:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise OutDirError(
            f"output directory {out} is not empty ({shown}): pass --resume {out} to continue "
            f"that run, --overwrite to replace it, or another --out DIR")
    return True


def prepare_out(out: str, resume: str | None = None, overwrite: bool = False) -> None:
    """Create ``out`` after ``check_out``, removing an earlier run's outputs when overwriting."""
    if check_out(out, resume, overwrite):
        for name in OUTPUTS:
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(out, exist_ok=True)


def trim_metrics(path: str, step: int, epoch: int) -> None:
    """Keep the records a resumed run does not repeat: steps before ``step``, epochs before
    ``epoch`` (the rest were written after the checkpoint and will be written again)."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short when the earlier run was killed
            if record.get("type") == "epoch":
                if record.get("epoch", 0) < epoch:
                    kept.append(line)
            elif record.get("step", 0) < step:
                kept.append(line)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line if line.endswith("\n") else line + "\n" for line in kept)
    os.replace(tmp, path)


def write_settings(out: str, settings) -> str:
    """Write the run's effective settings and hyperparameters as a flat settings file."""
    values = settings.to_dict()
    values.update(values.pop("hyperparameters"))
    path = os.path.join(out, SETTINGS)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path
