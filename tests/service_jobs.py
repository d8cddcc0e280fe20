"""Small jobs for the service tests: settings seen by the job, hyperparameters, errors."""

import json
import os

import numpy as np

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim


def linear_data(n: int = 64, seed: int = 0):
    """A noiseless linear regression: y = x @ w."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    return x, x @ np.array([[1.0], [2.0], [-1.0]], dtype=np.float32)


class Cosine(dtrain.Job):
    """The README's pattern: a cosine schedule over ``self.epochs``; ``hidden`` shapes the model."""

    batch_size = 16
    epochs = 30
    micro_shards = 4
    lr = 0.1
    hidden = 8

    def model(self):
        return nn.Sequential(nn.Linear(3, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1))

    def loss(self, output, target):
        return F.mse_loss(output, target)

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=self.lr)

    def scheduler(self, optimizer):
        return optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)

    def train_data(self):
        return linear_data()

    def val_data(self):
        return linear_data(32, seed=1)

    def metrics(self, output, target) -> dict:
        return {"abs_err": float(np.abs(output._data - target._data).sum())}

    def finish(self, model, out):
        if out:
            seen = {"epochs": self.epochs, "lr": self.lr, "hidden": self.hidden,
                    "dtype": self.dtype, "shuffle": self.shuffle}
            with open(os.path.join(out, "seen.json"), "w") as f:
                json.dump(seen, f)


class Long(Cosine):
    """Many quick steps, so a test can interrupt it mid-run."""

    epochs = 1000


class Typo(Cosine):
    """A typo in loss(): found before any worker starts."""

    def loss(self, output, target):
        return F.mse_losss(output, target)  # the typo is the point


class FloatLabels(Cosine):
    """Class labels stored as floats for a 3-class model."""

    def model(self):
        return nn.Linear(3, 3)

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def train_data(self):
        x, y = linear_data()
        return x, (y[:, 0] > 0).astype(np.float32)


class FlatTargets(Cosine):
    """(n,) targets against (n, 1) outputs: mse_loss would broadcast to (n, n)."""

    def train_data(self):
        x, y = linear_data()
        return x, y[:, 0]


class Clipped(Cosine):
    """Gradients clipped to a small global norm (a setting), and a before_step hook."""

    epochs = 2
    lr = 0.5
    clip_grad_norm = 0.05
    seen_norms = []  # noqa: RUF012 - collected for the test

    def before_step(self, model, optimizer):
        norm = sum(float((p.grad._data.astype(np.float64) ** 2).sum())
                   for p in model.parameters()) ** 0.5
        type(self).seen_norms.append(norm)


class EarlyStop(Cosine):
    """Stops when the validation loss has not improved for one epoch, or after epoch 2."""

    epochs = 50
    lr = 0.5  # high enough to bounce

    def on_epoch_end(self, record, model):
        if not hasattr(self, "early"):
            self.early = dtrain.EarlyStopping("val_loss", patience=1)
        return self.early(record) or record["epoch"] >= 2
