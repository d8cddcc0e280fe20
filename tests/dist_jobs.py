"""Small jobs the distributed tests run in worker processes (importable by path, no test deps)."""

import numpy as np

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim


def blobs(n: int = 120, features: int = 10, classes: int = 3, seed: int = 0):
    """A small, learnable classification set."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 2
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.standard_normal((n, features))
    return x.astype(np.float32), y.astype(np.int64)


class MomentumGroups(dtrain.Job):
    """SGD with momentum, two param groups with different rates, StepLR per epoch."""

    batch_size = 20
    epochs = 3
    micro_shards = 5
    seed = 7

    def model(self):
        return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def optimizer(self, model):
        return optim.SGD([{"params": model[0].parameters()},
                          {"params": model[2].parameters(), "lr": 0.05}],
                         lr=0.1, momentum=0.9, weight_decay=1e-3)

    def scheduler(self, optimizer):
        return optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def train_data(self):
        return blobs(110)  # 110 / 20: a last partial batch of 10

    def val_data(self):
        return blobs(40, seed=1)


class AdamDropout(dtrain.Job):
    """Adam and dropout: masks keyed by (seed, step, sample), so any worker draws the same."""

    batch_size = 16
    epochs = 2
    micro_shards = 8
    seed = 3
    scheduler_step = "step"

    def model(self):
        return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def optimizer(self, model):
        return optim.Adam(model.parameters(), lr=1e-2)

    def scheduler(self, optimizer):
        return optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99)

    def train_data(self):
        return blobs(100)


class Float64Reference(dtrain.Job):
    """No randomness but init and order: compared with a hand-written loop in float64."""

    batch_size = 16
    epochs = 2
    micro_shards = 4
    seed = 11
    dtype = "float64"

    def model(self):
        return nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 3))

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def scheduler(self, optimizer):
        return optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def train_data(self):
        return blobs(100)


class FailsAtStep3(MomentumGroups):
    """The training script raises in the third step (a bug in user code)."""

    def loss(self, output, target):
        import os

        if os.environ.get("DTRAIN_TEST_FAIL") == "1":
            FailsAtStep3.calls = getattr(FailsAtStep3, "calls", 0) + 1
            if FailsAtStep3.calls > 6:
                raise ValueError("deliberate failure in the training script")
        return F.cross_entropy(output, target)


class LossRaises(MomentumGroups):
    """The loss always raises: the launcher's preflight check fails before any worker runs."""

    def loss(self, output, target):
        raise ValueError("deliberate failure in the loss")


class Slow(MomentumGroups):
    """Many steps, so a test can interrupt it mid-run."""

    epochs = 1000


class SlowSteps(MomentumGroups):
    """Each micro-shard takes a few milliseconds, so faults can be injected mid-run."""

    epochs = 100
    heartbeat_interval = 0.2
    heartbeat_timeout = 1.5

    def loss(self, output, target):
        import time

        time.sleep(0.004)
        return F.cross_entropy(output, target)


class FullBatchLBFGS(dtrain.Job):
    """LBFGS on the whole data set as one batch, sharded across workers; closure rounds."""

    batch_size = 100
    epochs = 3
    micro_shards = 4
    seed = 5
    dtype = "float64"
    closure = True
    line_search = None

    def model(self):
        return nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 3))

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def optimizer(self, model):
        return optim.LBFGS(model.parameters(), lr=0.5, max_iter=6,
                           line_search_fn=self.line_search)

    def train_data(self):
        return blobs(100)


class FullBatchLBFGSWolfe(FullBatchLBFGS):
    line_search = "strong_wolfe"


class FullBatchCG(FullBatchLBFGS):
    def optimizer(self, model):
        return optim.NonlinearCG(model.parameters(), max_iter=6)


class LBFGSWithoutClosure(FullBatchLBFGS):
    closure = False


class ClosureWithSGD(MomentumGroups):
    closure = True


class PhasesWithClosure(MomentumGroups):
    def phases(self, model):
        return [dtrain.Phase("all", lambda m, x, y: F.cross_entropy(m(x), y),
                             optim.LBFGS(model.parameters()))]


class Diverges(MomentumGroups):
    """A loss scaled past float32's range: gradients become inf/NaN within a step or two."""

    epochs = 2

    def loss(self, output, target):
        return (output ** 2).mean() * 1e37

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=10.0)

    def scheduler(self, optimizer):
        return None


def _claims_the_fault(job: type, variable: str, after: int = 12) -> bool:
    """True in exactly one process of a run, once: the first whose ``job`` has computed more
    than ``after`` losses with gradients and then creates the marker file named by the
    environment variable ``variable`` (unset: never)."""
    import os

    marker = os.environ.get(variable)
    if not marker or not dtrain.is_grad_enabled():
        return False
    job.calls = getattr(job, "calls", 0) + 1
    if job.calls <= after:
        return False
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class StuckOnce(MomentumGroups):
    """One worker's compute thread loops forever in loss() (its beacon keeps heartbeating);
    the first process to claim the marker file named by DTRAIN_TEST_STUCK is that worker."""

    epochs = 4
    heartbeat_interval = 0.2
    heartbeat_timeout = 1.5

    def loss(self, output, target):
        if _claims_the_fault(StuckOnce, "DTRAIN_TEST_STUCK"):
            while True:  # a bug in user code: busy forever, holding the node
                pass
        return F.cross_entropy(output, target)


class CorruptsOnce(MomentumGroups):
    """A faulty worker: once, one micro-shard's loss (``DTRAIN_TEST_CORRUPT_WHAT=loss``) or only
    its gradients (``grads``: the loss stays finite) come out NaN; the first process to claim
    the marker file named by DTRAIN_TEST_CORRUPT is that worker, and no other reproduces it.
    One declared phase, so the loss runs once per micro-shard (no batched pass re-checks it)."""

    def phases(self, model):
        optimizer = self.optimizer(model)
        return [dtrain.Phase("train", self.shard_loss, optimizer, self.scheduler(optimizer))]

    @staticmethod
    def shard_loss(model, x, y):
        import os

        output = model(x)
        loss = F.cross_entropy(output, y)
        if _claims_the_fault(CorruptsOnce, "DTRAIN_TEST_CORRUPT"):
            if os.environ.get("DTRAIN_TEST_CORRUPT_WHAT") == "loss":
                return loss * float("nan")
            # 0 forward, NaN backward: sqrt'(0) is infinite, times 0
            return loss + (output * 0.0).sqrt().sum()
        return loss


class Throttled(SlowSteps):
    """SlowSteps (the same bits), but each micro-shard takes 0.25 s while the file named by
    DTRAIN_TEST_SLOW exists, so a test can hold a run in its middle until an event it awaits
    has happened, instead of racing the end of the run."""

    def loss(self, output, target):
        import os
        import time

        marker = os.environ.get("DTRAIN_TEST_SLOW")
        time.sleep(0.25 if marker and os.path.exists(marker) else 0.004)
        return F.cross_entropy(output, target)


class FailsInWorkers(MomentumGroups):
    """model() raises in worker processes only (while DTRAIN_TEST_FAIL_IN_WORKERS is set): every
    worker exits before joining, and the run fails after its coordinator started."""

    def model(self):
        import os
        import sys

        if os.environ.get("DTRAIN_TEST_FAIL_IN_WORKERS") and sys.argv[1:2] == ["worker"]:
            raise RuntimeError("deliberate failure in the worker's model()")
        return super().model()


class Wide(MomentumGroups):
    """MomentumGroups with about 70k parameters, so per-step traffic dwarfs message headers."""

    epochs = 1
    micro_shards = 4

    def model(self):
        return nn.Sequential(nn.Linear(10, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
                             nn.Linear(256, 3))

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
