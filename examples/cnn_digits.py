"""A small CNN with batch norm on the 8x8 digits, trained data-parallel.

    dtrain launch --workers 2 examples/cnn_digits.py

Batch-norm statistics follow the micro-shard rule: each micro-shard normalizes with its own
batch statistics, and the coordinator applies the running-stat updates in shard order, so the
result (running means included) is bit-identical for any number of workers.
"""

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim
from dtrain.datasets import load_digits


class DigitsCNN(dtrain.Job):
    """Conv-BN-ReLU-Pool twice, then a linear classifier; Adam with a cosine schedule."""

    batch_size = 64
    epochs = 15
    micro_shards = 4
    seed = 0

    def model(self):
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
        )

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def optimizer(self, model):
        return optim.Adam(model.parameters(), lr=3e-3)

    def scheduler(self, optimizer):
        return optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)

    def train_data(self):
        return load_digits("train")

    def val_data(self):
        return load_digits("test")
