"""``nn.DataParallel`` and ``nn.parallel.data_parallel`` as torch runs them without a GPU (the
wrapped module computes on the CPU; the function refuses); ``DistributedDataParallel`` is
dtrain's job API instead."""

from __future__ import annotations

from .module import Module


class DataParallel(Module):
    """Runs ``module`` itself, as torch's DataParallel does when no GPU is present; its state
    dict keys start with ``module.`` as torch's do, so checkpoints read the same."""

    def __init__(self, module: Module, device_ids=None, output_device=None, dim: int = 0):
        super().__init__()
        self.module = module
        self.device_ids = []  # torch's value on a machine without a GPU, whatever was asked
        self.output_device = None
        self.dim = dim

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)


def data_parallel(module: Module, inputs, device_ids=None, output_device=None, dim: int = 0,
                  module_kwargs=None):
    """Refused as torch refuses it without a GPU (its scripts call it only on GPU inputs)."""
    raise RuntimeError("data_parallel: device type could not be determined: dtrain runs on the "
                       "CPU only; call the module itself")


class DistributedDataParallel:
    """Refused: dtrain parallelizes a ``dtrain.Job`` itself (``dtrain launch``); a plain class,
    so ``isinstance(model, DistributedDataParallel)`` checks stay False."""

    def __init__(self, module: Module, *args, **kwargs):
        raise RuntimeError(
            "DistributedDataParallel is not supported: dtrain trains data-parallel by itself; "
            "put the model, loss, optimizer and data in a dtrain.Job and run it with "
            "`dtrain launch --workers N SCRIPT` (see the README's 'A job')")
