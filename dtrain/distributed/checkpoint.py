"""Training checkpoints on disk: written atomically every K steps, resumed from the newest good one.

Retention (``keep_checkpoints``, ``keep_best``) is tied to the run's job id through a small
manifest beside the files, so it never deletes another run's checkpoints.

A checkpoint holds everything the coordinator's result depends on: parameters and buffers,
optimizer and scheduler state, the step/epoch/batch counters, the RNG state and the settings.
Data order and dropout are keyed by (seed, epoch) and (seed, step, sample), so a run resumed
from any step ends with exactly the bits of the uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading

import numpy as np

from ..autograd.tensor import Tensor
from ..io import CheckpointError, load, save
from ..io.container import remove_temporaries
from .settings import SPEC_BY_NAME

log = logging.getLogger("dtrain.checkpoint")

FORMAT = "dtrain-checkpoint"
_NAME = re.compile(r"^step-(\d{9})\.dtrain$")
MANIFEST = "manifest.json"  # which job wrote which checkpoint, with its epoch metrics
# Settings that change the bits of the result, which a resumed run must keep; epochs, max_steps
# and the output and service settings only say how long and how the run goes on.
RESULT_SETTINGS = ("batch_size", "micro_shards", "seed", "shuffle", "drop_last", "dtype",
                   "scheduler_step", "accumulate", "clip_grad_norm", "param_ranges",
                   "threads")
# What a checkpoint written before a setting existed was trained with (param_ranges came later:
# such a run summed its global quantities flat, as one range does).
BEFORE_THE_SETTING = {"param_ranges": 1}
NEW_RUN = "or start a new run (another --out, or --overwrite)"


class ResumeError(ValueError):
    """A checkpoint this run cannot continue; the message names why and what to do."""


def checkpoint_path(directory: str, step: int) -> str:
    """Where the checkpoint taken after ``step`` optimizer steps lives."""
    return os.path.join(directory, f"step-{step:09d}.dtrain")


def list_checkpoints(directory: str) -> list[str]:
    """Checkpoint files in ``directory``, newest first."""
    if not os.path.isdir(directory):
        return []
    names = sorted((n for n in os.listdir(directory) if _NAME.match(n)), reverse=True)
    return [os.path.join(directory, n) for n in names]


def best_rule(keep_best: str) -> tuple[str, str] | None:
    """``'val_loss'`` -> ``('min', 'val_loss')``, ``'max:val_accuracy'`` -> ``('max', ...)``."""
    if not keep_best:
        return None
    mode, sep, metric = keep_best.partition(":")
    if not sep:
        return "min", keep_best
    if mode not in ("min", "max") or not metric:
        raise ValueError(f"setting keep_best={keep_best!r}: expected METRIC, min:METRIC or "
                         "max:METRIC, e.g. val_loss or max:val_accuracy")
    return mode, metric


def _read_manifest(directory: str) -> list[dict]:
    try:
        with open(os.path.join(directory, MANIFEST), encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("file"), str)
            and _NAME.match(e["file"])] if isinstance(entries, list) else []


def _write_manifest(directory: str, entries: list[dict]) -> None:
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, os.path.join(directory, MANIFEST))


def _kept(entries: list[dict], keep: int, rule: tuple[str, str] | None) -> set[str]:
    """The files retention keeps: the newest ``keep`` (0: all) and the best by ``rule``."""
    newest = sorted(entries, key=lambda e: e["step"], reverse=True)
    kept = {e["file"] for e in (newest if keep == 0 else newest[:keep])}
    if rule is not None:
        mode, metric = rule
        ranked = [e for e in entries if isinstance(e.get("metrics", {}).get(metric), (int, float))]
        if ranked:
            pick = min if mode == "min" else max
            kept.add(pick(ranked, key=lambda e: e["metrics"][metric])["file"])
    return kept


def write_checkpoint(directory: str, state: dict, keep: int = 3, *, keep_best: str = "",
                     metrics: dict | None = None) -> str:
    """Save ``state`` atomically as the checkpoint of its step, then apply retention.

    Retention keeps this run's newest ``keep`` checkpoints (0: all) and, with ``keep_best``,
    the one with the best epoch metric; it only ever deletes checkpoints that the manifest
    records for the same job id, so files of another run are never touched.
    """
    rule = best_rule(keep_best)
    os.makedirs(directory, exist_ok=True)
    path = checkpoint_path(directory, state["step"])
    save({"format": FORMAT, **state}, path)
    name = os.path.basename(path)
    job_id = state.get("job_id")
    entries = [e for e in _read_manifest(directory) if e["file"] != name]
    values = {k: v for k, v in (metrics or {}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    entries.append({"file": name, "step": state["step"], "job_id": job_id, "metrics": values})
    mine = [e for e in entries if e.get("job_id") == job_id]
    kept = _kept(mine, keep, rule)
    for entry in mine:
        if entry["file"] not in kept:
            try:
                os.remove(os.path.join(directory, entry["file"]))
            except FileNotFoundError:
                pass
    _write_manifest(directory, [e for e in entries if e.get("job_id") != job_id
                                or e["file"] in kept])
    # the only writer of this directory is here, so any temporary left is a killed write's
    for stale in remove_temporaries(directory, _NAME):
        log.info("removed %s, left by an interrupted checkpoint write", stale)
    return path


def read_checkpoint(path: str) -> dict:
    """Load one checkpoint file; CheckpointError when it is damaged or not a training checkpoint."""
    state = load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dtrain training checkpoint")
    missing = [k for k in ("model", "optimizer", "step", "epoch", "batch", "settings")
               if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def _checkpoint_step(path: str) -> int:
    """The step a checkpoint file's name says (the final checkpoint has to be read)."""
    match = _NAME.match(os.path.basename(path))
    return int(match.group(1)) if match else -1


def _scan(paths: list[str]) -> list[dict]:
    """The checkpoints among ``paths`` that load, as (path, step, job id, mtime) records;
    damaged ones are skipped with a warning. Only one state is held in memory at a time."""
    found = []
    for path in paths:
        try:
            state = read_checkpoint(path)
            found.append({"path": path, "step": int(state["step"]),
                          "job_id": state.get("job_id"), "mtime": os.stat(path).st_mtime_ns,
                          "final": _checkpoint_step(path) < 0})
        except (CheckpointError, OSError, TypeError, ValueError) as e:
            log.warning("skipping damaged checkpoint %s: %s", path, e)
    return found


def resume_point(paths: list[str], job_id: str | None = None) -> tuple[str, dict]:
    """The checkpoint a resumed run continues from: the highest valid step of one run.

    The run is ``job_id`` when given, else the run that wrote the newest valid file, so a
    directory that also holds an older, finished run's checkpoints continues the run that was
    interrupted, never the other one. Files of other runs are named in a warning.
    """
    found = _scan(paths)
    if not found:
        raise ResumeError("no valid checkpoint to resume from")
    run = job_id if job_id is not None else max(found, key=lambda c: c["mtime"])["job_id"]
    mine = [c for c in found if c["job_id"] == run]
    others = sorted({str(c["job_id"]) for c in found if c["job_id"] != run})
    if not mine:
        raise ResumeError(f"no checkpoint of job {run} (the checkpoints there belong to job "
                          f"{', '.join(others)}): pass that job's id, {NEW_RUN}")
    if others:
        log.warning("ignoring %d checkpoint(s) of another run (job %s); resuming job %s",
                    len(found) - len(mine), ", ".join(others), run)
    best = max(mine, key=lambda c: (c["step"], c["final"]))
    return best["path"], read_checkpoint(best["path"])


def resume_conflicts(state: dict, settings) -> list[str]:
    """The result-shaping settings and hyperparameters in which ``settings`` differ from the
    checkpoint's, as ``name=saved (this run: value)`` texts."""
    saved = state.get("settings") or {}
    conflicts = []
    for key in RESULT_SETTINGS:
        was = saved.get(key, BEFORE_THE_SETTING.get(key, SPEC_BY_NAME[key].default))
        now = getattr(settings, key)
        if was != now:
            conflicts.append(f"{key}={was!r} (this run: {now!r})")
    before, after = saved.get("hyperparameters") or {}, settings.hyperparameters
    for name in sorted(set(before) | set(after)):
        was, now = before.get(name, "unset"), after.get(name, "unset")
        if was != now:
            conflicts.append(f"hyperparameter {name}={was!r} (this run: {now!r})")
    return conflicts


def check_resumable(path: str, state: dict, settings, digest: str | None = None,
                    script: str | None = None) -> None:
    """Refuse to continue ``state`` with another script or with settings that change the
    result; the message names every difference and the way out."""
    saved = state.get("digest")
    known = {saved, digest} & {None, "in-process"} == set()
    if known and saved != digest:
        raise ResumeError(f"cannot resume from {path}: it was written by another training "
                          f"script than {script or 'this one'} (digest {saved[:12]}, this "
                          f"script {digest[:12]}): resume with the script that wrote it, "
                          f"{NEW_RUN}")
    conflicts = resume_conflicts(state, settings)
    if conflicts:
        raise ResumeError(f"cannot resume from {path}: that run was trained with "
                          f"{', '.join(conflicts)}; resume with the same values (only epochs, "
                          f"max_steps and the output and service settings may change), "
                          f"{NEW_RUN}")


def snapshot(state):
    """A copy of ``state`` that later training steps cannot change (arrays and Tensors copied)."""
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state) if type(state) in (list, tuple) \
            else state
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, Tensor):
        return Tensor._wrap(state._data.copy(), requires_grad=state.requires_grad)
    return state


class CheckpointWriter:
    """Writes checkpoints on a thread of its own, so a slow disk never stalls the training loop.

    The coordinator keeps answering heartbeats while a checkpoint is written (a write longer than
    the heartbeat timeout used to make every worker give up on it and reconnect). ``submit``
    snapshots the state at once, so the file holds exactly that step; writes happen in order,
    one at a time, and ``submit`` waits only when ``MAX_PENDING`` snapshots already wait (a
    disk slower than the checkpoint cadence, which then bounds the memory held), calling
    ``idle`` meanwhile so the coordinator keeps serving its workers. A failed
    write is logged and the run goes on (its next checkpoint tries again); ``flush`` waits for
    every pending write and returns the last failure, if any.
    """

    MAX_PENDING = 2

    def __init__(self, keep: int = 3, keep_best: str = ""):
        self.keep = keep
        self.keep_best = keep_best
        self._lock = threading.Condition()
        self._pending: list = []  # (directory, state) waiting for the thread, oldest first
        self._busy = False
        self.written: list[str] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dtrain-checkpoints", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, directory: str, state: dict, idle=None, metrics: dict | None = None) -> None:
        """Queue ``state`` (snapshotted now) for writing into ``directory``; while the queue is
        full, ``idle()`` is called repeatedly (it should return within a fraction of a second)."""
        frozen = snapshot(state)
        with self._lock:
            while len(self._pending) >= self.MAX_PENDING:
                if idle is None:
                    self._lock.wait()
                    continue
                self._lock.release()
                try:
                    idle()
                finally:
                    self._lock.acquire()
            self._pending.append((directory, frozen, dict(metrics or {})))
            self._lock.notify_all()

    def flush(self) -> BaseException | None:
        """Wait until nothing is pending or being written; the last write error, if any."""
        with self._lock:
            while self._pending or self._busy:
                self._lock.wait()
            return self.error

    def close(self) -> None:
        """Write what is pending, then stop the thread."""
        self.flush()
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if not self._pending:
                    return
                directory, state, metrics = self._pending.pop(0)
                self._busy = True
            try:
                path = write_checkpoint(directory, state, self.keep, keep_best=self.keep_best,
                                        metrics=metrics)
                self.written.append(path)
                self.error = None
            except (OSError, CheckpointError, TypeError, ValueError) as e:
                self.error = e
                log.error("checkpoint of step %s not written (%s); training goes on and the "
                          "next checkpoint tries again", state.get("step"), e)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()
