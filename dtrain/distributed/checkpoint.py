"""Training checkpoints on disk: written atomically every K steps, resumed from the newest good one.

A checkpoint holds everything the coordinator's result depends on: parameters and buffers,
optimizer and scheduler state, the step/epoch/batch counters, the RNG state and the settings.
Data order and dropout are keyed by (seed, epoch) and (seed, step, sample), so a run resumed
from any step ends with exactly the bits of the uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import re

from ..io import CheckpointError, load, save
from ..io.container import remove_temporaries

log = logging.getLogger("dtrain.checkpoint")

FORMAT = "dtrain-checkpoint"
_NAME = re.compile(r"^step-(\d{9})\.dtrain$")


def checkpoint_path(directory: str, step: int) -> str:
    """Where the checkpoint taken after ``step`` optimizer steps lives."""
    return os.path.join(directory, f"step-{step:09d}.dtrain")


def list_checkpoints(directory: str) -> list[str]:
    """Checkpoint files in ``directory``, newest first."""
    if not os.path.isdir(directory):
        return []
    names = sorted((n for n in os.listdir(directory) if _NAME.match(n)), reverse=True)
    return [os.path.join(directory, n) for n in names]


def write_checkpoint(directory: str, state: dict, keep: int = 3) -> str:
    """Save ``state`` atomically as the checkpoint of its step; prune all but the newest ``keep``."""
    os.makedirs(directory, exist_ok=True)
    path = checkpoint_path(directory, state["step"])
    save({"format": FORMAT, **state}, path)
    for old in list_checkpoints(directory)[keep:]:
        try:
            os.remove(old)
        except FileNotFoundError:
            pass
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


def latest_checkpoint(directory: str) -> tuple[str, dict] | None:
    """The newest checkpoint that loads; damaged newer ones are skipped with a warning."""
    for path in list_checkpoints(directory):
        try:
            return path, read_checkpoint(path)
        except (CheckpointError, OSError) as e:
            log.warning("skipping damaged checkpoint %s: %s", path, e)
    return None
