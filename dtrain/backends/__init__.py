"""``dtrain.backends``: torch.backends' switches scripts set or query (mps, cudnn), for the CPU."""

from . import cudnn, mps

__all__ = ["cudnn", "mps"]
