"""What the training-step benchmarks share: the step on dtrain or PyTorch, the hand-written
floors' loss, and the timing.

``bench_mlp_step`` and ``bench_cnn_step`` time the same SGD step of a model written as a PyTorch
user would, once on each framework; ``bench_shards`` times the coordinator's step. Every one of
them reports the median time of repeated calls, so one slow call (a page fault, the machine's
other load) does not move the result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np


class SGDStep:
    """One training step of ``model`` (cross-entropy, plain SGD) on ``lib`` (dtrain or torch),
    its parameters first set to ``weights`` (NumPy arrays, in ``model.parameters()`` order)."""

    def __init__(self, lib, model, weights, lr: float):
        self.model = model
        with lib.no_grad():
            for p, w in zip(model.parameters(), weights, strict=True):
                p.copy_(lib.from_numpy(w.copy()))
        self.loss_fn = lib.nn.CrossEntropyLoss()
        self.opt = lib.optim.SGD(model.parameters(), lr=lr)

    def step(self, x, y) -> float:
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """The hand-written floors' loss: mean softmax cross-entropy of (N, C) ``logits`` and its
    gradient with respect to them. The logits are shifted by their row maxima in place."""
    n = logits.shape[0]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.log(s).mean() - logits[np.arange(n), labels].mean())
    grad = e / s
    grad[np.arange(n), labels] -= 1
    grad /= n
    return loss, grad


def median_seconds(call: Callable[[int], object], count: int) -> float:
    """Median seconds of ``call(i)`` for i in 0..count-1."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
