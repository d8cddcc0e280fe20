"""Anomaly detection, as ``torch.autograd.detect_anomaly``: while on, a backward step whose
gradient holds NaN stops the backward pass with an error naming the op."""

from __future__ import annotations

import numpy as np

_enabled = [False]


def is_anomaly_enabled() -> bool:
    return _enabled[0]


def check_gradients(name: str, grads) -> None:
    """Raise when anomaly mode is on and one of an op's input gradients holds NaN."""
    for i, g in enumerate(grads):
        if g is not None and np.isnan(g).any():
            raise RuntimeError(f"Function '{name}' returned nan values in its {i}th output.")


class set_detect_anomaly:
    """Turn anomaly detection on or off from here (or within a ``with`` block, then restore)."""

    def __init__(self, mode: bool, check_nan: bool = True):
        self.prev = _enabled[0]
        _enabled[0] = bool(mode) and bool(check_nan)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _enabled[0] = self.prev
        return False


class detect_anomaly:
    """Anomaly detection on inside the ``with`` block (or the decorated function)."""

    def __init__(self, check_nan: bool = True):
        self.check_nan = check_nan

    def __enter__(self):
        self.prev = _enabled[0]
        _enabled[0] = bool(self.check_nan)
        return self

    def __exit__(self, *exc):
        _enabled[0] = self.prev
        return False

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)
        return wrapped
