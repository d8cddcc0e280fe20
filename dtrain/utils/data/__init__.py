"""PyTorch's ``torch.utils.data``: datasets, samplers, collation and the ``DataLoader``.

Datasets, collation and the (seed, epoch) orders are defined in ``dtrain.data``; this package
adds the samplers (``sampler``), dataset combinators (``dataset``) and the loader
(``dataloader``), and gathers every name under the path a PyTorch program imports.
"""

from ...data import (
    Dataset,
    IterableDataset,
    TensorDataset,
    default_collate,
    default_convert,
)
from .dataloader import DataLoader, get_worker_info
from .dataset import ChainDataset, ConcatDataset, StackDataset, Subset, random_split
from .distributed import DistributedSampler
from .sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

__all__ = ["BatchSampler", "ChainDataset", "ConcatDataset", "DataLoader", "Dataset",
           "DistributedSampler", "IterableDataset", "RandomSampler", "Sampler",
           "SequentialSampler", "StackDataset", "Subset", "SubsetRandomSampler",
           "TensorDataset", "WeightedRandomSampler", "default_collate", "default_convert",
           "get_worker_info", "random_split"]
