"""What the ported programs would take from torchvision, written in NumPy alone.

There is no torchvision or download here: a data set becomes random images of the real one's
shape, and ``save_image`` writes a NumPy file. NumPy alone, so a program's dtrain run and its
torch twin import this same module and read the same numbers; the program passes its own
``torch.from_numpy`` as the transform that makes tensors.
"""

import os

import numpy as np


class RandomImages:
    """Stands in for a torchvision image data set (FashionMNIST, MNIST, FakeData): ``size``
    random images of ``image_size`` in [0, 1), labels 0-9, drawn from ``seed``.

    ``normalize=(mean, std)`` does what ``transforms.Normalize`` would, in float32; ``transform``
    makes an image the program's tensor, as ``transforms.ToTensor()`` would.
    """

    def __init__(self, size, seed, image_size=(1, 28, 28), transform=None, normalize=None):
        rng = np.random.default_rng(seed)
        self.images = rng.random((size,) + tuple(image_size), dtype=np.float32)
        if normalize is not None:
            mean, std = normalize
            self.images = (self.images - np.float32(mean)) / np.float32(std)
        self.labels = rng.integers(0, 10, size).tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), self.labels[index]


def save_image(tensor, filename, **options):
    """Stands in for torchvision.utils.save_image: the images as ``filename + '.npy'``."""
    folder = os.path.dirname(filename)
    if folder:
        os.makedirs(folder, exist_ok=True)
    np.save(filename + ".npy", tensor.numpy())
