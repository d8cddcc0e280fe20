"""``dtrain plot``: training curves from metrics.jsonl files (or run directories) as one PNG, SVG
or PDF image (needs ``dtrain[plot]``).

Three panels against the optimizer step: the loss of every step, the validation metric of every
epoch (accuracy when the runs report it, else loss) and the learning rate of every param group.
Several files give one line per run, labelled by the directory the file is in. Drawing uses
matplotlib's Agg canvas directly, so no display and no global pyplot state are involved.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field

from .records import loads

WIDTH_IN, HEIGHT_IN, DPI = 12, 9, 100  # a 1200 x 900 pixel image


class MetricsError(ValueError):
    """A metrics.jsonl file that is empty or has a malformed line (named as path:line)."""


@dataclass
class Run:
    """The records of one metrics.jsonl: step and epoch lines, in file order."""

    label: str
    steps: list = field(default_factory=list)
    epochs: list = field(default_factory=list)


def _number(record: dict, key: str, where: str, optional: bool = False):
    value = record.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetricsError(f"{where}: '{key}' must be a number, got {value!r}")
    return value


def _rates(record: dict, where: str) -> list[float] | None:
    """The learning rate of each param group ('lr' is a number or a list of numbers)."""
    lr = record.get("lr")
    if lr is None:
        return None
    values = lr if isinstance(lr, list) else [lr]
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise MetricsError(f"{where}: 'lr' must be a number or a list of numbers, got {lr!r}")
    return [float(v) for v in values]


def read_metrics(path, label: str | None = None) -> Run:
    """Parse one metrics.jsonl; a malformed line raises MetricsError naming the file and line."""
    path = os.fspath(path)
    run = Run(label if label is not None else _run_name(path))
    others: set = set()
    with _open_regular(path) as f:
        for number, line in enumerate(_lines(f, path), 1):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            record = _record(line, where)
            kind = record.get("type")
            if kind == "step":
                _number(record, "loss", where)
                record["lr"] = _rates(record, where)
                record["step"] = _number(record, "step", where)
                run.steps.append(record)
            elif kind == "epoch":
                _number(record, "step", where)
                for key in ("val_accuracy", "val_loss", "train_loss"):
                    _number(record, key, where, optional=True)
                record["lr"] = _rates(record, where)
                run.epochs.append(record)
            elif kind is None:
                raise MetricsError(f"{where}: record has no 'type' (expected 'step' or 'epoch')")
            else:
                others.add(repr(kind)[:40])
    if not run.steps and not run.epochs:
        found = f"only records of type {', '.join(sorted(others))}" if others \
            else "the file is empty"
        raise MetricsError(f"{path}: no step or epoch records ({found}); is it a dtrain "
                           "metrics.jsonl?")
    return run


MAX_LINE = 1 << 20  # a metrics record is a few hundred bytes; a longer line is not one


def _open_regular(path: str):
    """Open ``path`` for reading if it is a regular file (not /dev/zero, a FIFO, a directory)."""
    if not os.path.isfile(path):
        raise MetricsError(f"{path}: not a regular file; give a metrics.jsonl file or a run "
                           "directory")
    return open(path, encoding="utf-8", errors="replace")


def _lines(f, path: str):
    """The file's lines, each at most MAX_LINE characters (else MetricsError)."""
    for number in itertools.count(1):
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE:
            raise MetricsError(f"{path}:{number}: a line longer than {MAX_LINE} characters is "
                               "not a metrics record")
        yield line


def _record(line: str, where: str) -> dict:
    """One line as a record (non-finite values named as in ``dtrain.records``)."""
    try:
        record = loads(line)
    except json.JSONDecodeError as e:
        raise MetricsError(f"{where}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise MetricsError(f"{where}: JSON nested too deeply to be a metrics record") from None
    if not isinstance(record, dict):
        raise MetricsError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def _run_name(path: str) -> str:
    return os.path.basename(os.path.dirname(os.path.abspath(path))) or path


def _labels(paths: list[str]) -> list[str]:
    """The parent directory names, or longer parent paths where those collide."""
    names = [_run_name(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    parents = [os.path.dirname(os.path.abspath(p)) for p in paths]
    common = os.path.commonpath(parents) if len(parents) > 1 else ""
    return [os.path.relpath(p, common) if common and p != common else p for p in parents]


def require_matplotlib():
    """matplotlib's Figure and Agg canvas, or an ImportError that says how to install them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("dtrain plot needs matplotlib: pip install dtrain[plot]") from None
    return Figure, FigureCanvasAgg


def read_runs(paths) -> list[Run]:
    """Parse several metrics.jsonl files, labelled by their directories."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("plotting needs at least one metrics.jsonl file")
    return [read_metrics(p, label) for p, label in zip(paths, _labels(paths))]


def figure(runs: list[Run]):
    """A 1200 x 900 matplotlib Figure (on an Agg canvas) of loss, validation metric and lr."""
    Figure, FigureCanvasAgg = require_matplotlib()
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    loss_ax, val_ax, lr_ax = fig.subplots(3, 1, sharex=True)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        if run.steps:
            loss_ax.plot([r["step"] for r in run.steps], [r["loss"] for r in run.steps],
                         color=color, linewidth=1, label=run.label)
        _plot_rates(lr_ax, run, color)
    metric = _plot_validation(val_ax, runs)
    loss_ax.set_ylabel("loss (per step)")
    val_ax.set_ylabel(metric.replace("_", " ") + " (per epoch)" if metric else "validation")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("step")
    for ax in (loss_ax, val_ax, lr_ax):
        ax.grid(True, alpha=0.3)
    handles, names = loss_ax.get_legend_handles_labels()
    if not handles:
        handles, names = val_ax.get_legend_handles_labels()
    if handles:
        loss_ax.legend(handles, names, loc="upper right")
    fig.suptitle("dtrain: " + ", ".join(run.label for run in runs))
    return fig


FORMATS = ("png", "svg", "pdf")


def output_format(out) -> str:
    """The image format ``out``'s extension asks for (png, svg or pdf)."""
    suffix = os.path.splitext(os.fspath(out))[1].lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"cannot write {os.fspath(out)!r}: name the file .png, .svg or .pdf")
    return suffix


def metrics_path(path) -> str:
    """A metrics.jsonl file, or the one inside a run directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        inner = os.path.join(path, "metrics.jsonl")
        if not os.path.isfile(inner):
            raise MetricsError(f"{path} is a directory without metrics.jsonl: pass a run's "
                               "--out directory or a metrics.jsonl file")
        return inner
    return path


def plot_metrics(paths, out) -> str:
    """Draw the runs in ``paths`` (metrics.jsonl files or run directories) into ``out``, as
    PNG, SVG or PDF by its extension; returns its path."""
    fmt = output_format(out)
    require_matplotlib()
    fig = figure(read_runs([metrics_path(p) for p in paths]))
    fig.savefig(os.fspath(out), dpi=DPI, format=fmt)
    return os.fspath(out)


def _plot_validation(ax, runs: list[Run]) -> str | None:
    """val_accuracy when any run has it, else val_loss; returns the key drawn (None: no data)."""
    has = {key: any(key in r for run in runs for r in run.epochs)
           for key in ("val_accuracy", "val_loss")}
    metric = "val_accuracy" if has["val_accuracy"] else "val_loss" if has["val_loss"] else None
    if metric is None:
        ax.text(0.5, 0.5, "no validation data", ha="center", va="center",
                transform=ax.transAxes)
        return None
    for i, run in enumerate(runs):
        points = [(r["step"], r[metric]) for r in run.epochs if metric in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=run.label)
    return metric


def _plot_rates(ax, run: Run, color: str) -> None:
    records = [r for r in run.steps if r["lr"] is not None] or \
        [r for r in run.epochs if r["lr"] is not None]
    if not records:
        return
    groups = max(len(r["lr"]) for r in records)
    styles = ["-", "--", ":", "-."]
    for g in range(groups):
        points = [(r["step"], r["lr"][g]) for r in records if g < len(r["lr"])
                  and math.isfinite(r["lr"][g])]
        if points:
            xs, ys = zip(*points)
            label = run.label if groups == 1 else f"{run.label} group {g}"
            ax.plot(xs, ys, color=color, linestyle=styles[g % len(styles)], label=label)
