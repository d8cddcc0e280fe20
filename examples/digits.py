"""Handwritten digits (8x8, scikit-learn's real dataset) with an MLP: dtrain's main example.

Run it on two local workers:   dtrain launch --workers 2 examples/digits.py
or from Python:                 dtrain.fit("examples/digits.py", workers=2)
The final parameters are bit-identical for any number of workers (and for workers=0).
"""

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim
from dtrain.datasets import load_digits


class Digits(dtrain.Job):
    """A 64-128-64-10 MLP with dropout, SGD with momentum and a cosine learning-rate schedule."""

    batch_size = 64
    epochs = 30
    micro_shards = 8
    seed = 0
    scheduler_step = "epoch"

    def model(self):
        return nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def scheduler(self, optimizer):
        return optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)

    def train_data(self):
        return load_digits("train")

    def val_data(self):
        return load_digits("test")
