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
    """A progress bar (``bar``; tqdm, on a terminal) and per-epoch lines (``lines``) on stderr.

    The bar counts the run's remaining steps and shows elapsed time, the time left and a
    smoothed step rate (tqdm's), with the loss and samples/s beside it. Where stderr is not a
    terminal (Slurm, kubectl logs) a bar would be a stream of carriage returns, so a plain line
    is written every few seconds instead.
    """

    LINE_SECONDS = 5.0

    def __init__(self, bar: bool, lines: bool, steps_per_epoch: int, epochs: int):
        self.bar = bar
        self.lines = lines
        self.per_epoch = steps_per_epoch
        self.epochs = epochs
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0
        self.started = time.monotonic()
        self.steps_seen = 0
        self.epoch_work = [0, 0.0]  # samples and step seconds of the epoch so far
        self.tqdm = None  # made on the first step, when the remaining steps are known

    def step(self, r: dict) -> None:
        """Advance the bar (or, off a terminal, print a line now and then) after a step."""
        self.epoch_work[0] += r["samples"]
        self.epoch_work[1] += r["seconds"]
        if not self.bar:
            return
        self.steps_seen += 1
        postfix = f"loss {r['loss']:.4f}, {r['samples_per_s']:.0f} samples/s"
        if self.tty:
            self._draw(r, postfix)
            return
        now = time.monotonic()
        if now - self.last_line > self.LINE_SECONDS:
            left = self._left(r)
            per_step = (now - self.started) / self.steps_seen
            sys.stderr.write(f"epoch {r['epoch'] + 1}/{self.epochs} step {r['step'] + 1} "
                             f"{postfix} {_clock(now - self.started)} elapsed, "
                             f"{_clock(per_step * left)} left\n")
            self.last_line = now

    def _left(self, r: dict) -> int:
        """Steps left in the run after the one in ``r``."""
        return (self.epochs - r["epoch"]) * self.per_epoch - r["batch"] - 1

    def _draw(self, r: dict, postfix: str) -> None:
        if self.tqdm is None:
            from tqdm import tqdm

            self.tqdm = tqdm(total=self._left(r) + 1, unit="step", file=sys.stderr,
                             dynamic_ncols=True, smoothing=0.1, leave=False)
        self.tqdm.set_description(f"epoch {r['epoch'] + 1}/{self.epochs}", refresh=False)
        self.tqdm.set_postfix_str(postfix, refresh=False)
        self.tqdm.update(1)

    def epoch(self, r: dict) -> None:
        """Print the epoch's line, with the epoch's training throughput."""
        samples, seconds = self.epoch_work
        self.epoch_work = [0, 0.0]
        if not self.lines:
            return
        line = format_epoch(r, self.epochs)
        if seconds > 0:
            line += f"  {samples / seconds:.0f} samples/s"
        if self.tqdm is not None:
            self.tqdm.write(line, file=sys.stderr)  # above the bar, which stays
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        """Remove the bar, so later output starts on a line of its own."""
        if self.tqdm is not None:
            self.tqdm.close()
            self.tqdm = None
