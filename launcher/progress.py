"""What a run shows on stderr: a progress bar while it trains and one line per epoch.

The bar (a terminal only; elsewhere a line every few seconds) is optional; the epoch lines are
what batch logs (Slurm, CI) keep, so they are printed whenever the caller asks for them, with
the job's own metrics beside the loss.
"""

from __future__ import annotations

import sys
import time

_SKIPPED = {"epoch", "step", "lr", "train_loss"}


def format_epoch(record: dict, epochs: int) -> str:
    """One epoch line: training loss, every validation metric the job reports, learning rate."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}", f"train_loss {record['train_loss']:.4f}"]
    for key, value in record.items():
        if key in _SKIPPED or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.endswith("accuracy"):
            parts.append(f"{key.replace('accuracy', 'acc')} {100 * value:.2f}%")
        else:
            parts.append(f"{key} {value:.4g}")
    lr = record["lr"] if isinstance(record["lr"], list) else [record["lr"]]
    parts.append("lr " + ", ".join(f"{v:.4g}" for v in lr))
    return "  ".join(parts)


def _clock(seconds: float) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A one-line progress bar (``bar``) and per-epoch lines (``lines``) on stderr."""

    def __init__(self, bar: bool, lines: bool, steps_per_epoch: int, epochs: int):
        self.bar = bar
        self.lines = lines
        self.per_epoch = steps_per_epoch
        self.epochs = epochs
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0
        self.started = time.monotonic()
        self.drawn = False
        self.rate = None  # samples/s, exponentially smoothed
        self.steps_seen = 0
        self.epoch_work = [0, 0.0]  # samples and step seconds of the epoch so far

    def step(self, r: dict) -> None:
        """Redraw the bar after a step: elapsed time, a smoothed rate and the time left."""
        self.epoch_work[0] += r["samples"]
        self.epoch_work[1] += r["seconds"]
        if not self.bar:
            return
        now = time.monotonic()
        rate = r["samples_per_s"]
        self.rate = rate if self.rate is None else 0.9 * self.rate + 0.1 * rate
        self.steps_seen += 1
        per_step = (now - self.started) / self.steps_seen
        left = (self.epochs - r["epoch"] - 1) * self.per_epoch + self.per_epoch - r["batch"] - 1
        done = r["batch"] + 1
        width = 24
        filled = int(width * done / max(self.per_epoch, 1))
        text = (f"epoch {r['epoch'] + 1}/{self.epochs} [{'#' * filled}{'.' * (width - filled)}] "
                f"step {r['step'] + 1} loss {r['loss']:.4f} {self.rate:.0f} samples/s "
                f"{_clock(now - self.started)} elapsed, {_clock(per_step * left)} left")
        if self.tty:
            sys.stderr.write("\r" + text + "\033[K")
            sys.stderr.flush()
            self.drawn = True
        elif now - self.last_line > 5:
            sys.stderr.write(text + "\n")
            self.last_line = now

    def epoch(self, r: dict) -> None:
        """Print the epoch's line, with the epoch's training throughput."""
        samples, seconds = self.epoch_work
        self.epoch_work = [0, 0.0]
        if not self.lines:
            return
        line = format_epoch(r, self.epochs)
        if seconds > 0:
            line += f"  {samples / seconds:.0f} samples/s"
        sys.stderr.write(("\r" if self.drawn else "") + line + "\n")
        sys.stderr.flush()
        self.drawn = False

    def close(self) -> None:
        """End the bar's line, so later output starts on a line of its own."""
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False
