"""The jobs ``bench_distributed.py`` trains: float32 MLPs with SGD on deterministic synthetic data.

``MLP512`` is the 784-512-512-10 network of the step benchmark (0.67M parameters); ``MLP2048`` is
784-2048-2048-2048-10 (10.0M parameters) for the large-exchange figures. Every process (the
coordinator and each worker) regenerates the same data from a fixed seed, so nothing but
parameters and gradients crosses the wire. ``ddp_reference.py`` imports ``synthetic`` and
``SIZES`` from here so PyTorch trains the same network on the same samples.
"""

from __future__ import annotations

import itertools

import numpy as np

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim

FEATURES = 784
CLASSES = 10
SAMPLES = 16384  # 64 steps of 256 per epoch: a timed run stays inside one epoch
DATA_SEED = 1234
LR = 0.01
SIZES = {"MLP512": (FEATURES, 512, 512, CLASSES),
         "MLP2048": (FEATURES, 2048, 2048, 2048, CLASSES)}


def synthetic(n: int = SAMPLES, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 inputs (n, 784) and int64 labels in [0, 10), the same in every process."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, n, dtype=np.int64)
    return x, y


def mlp(sizes) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them."""
    layers = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


class MLP512(dtrain.Job):
    """MLP 784-512-512-10, float32, plain SGD; the bench overrides batch size and step count."""

    batch_size = 256
    epochs = 1000  # the bench bounds runs with max_steps
    micro_shards = 8
    seed = 0
    dtype = "float32"
    threads = 1

    def model(self):
        return mlp(SIZES[type(self).__name__])

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=LR)

    def train_data(self):
        return synthetic()


class MLP2048(MLP512):
    """MLP 784-2048-2048-2048-10 (10.0M parameters), for the one-exchange figures."""

    batch_size = 64
