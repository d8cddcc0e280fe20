"""PyTorch's "Datasets & DataLoaders" tutorial ported to dtrain: only the import lines differ.

FashionMNIST is replaced by random 1x28x28 images, and the custom dataset reads .npy images and
a CSV file of labels that this script writes first (no torchvision, pandas or download here).
"""

import csv
import os

import matplotlib
import numpy as np

import dtrain as torch
from dtrain.utils.data import DataLoader, Dataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class FakeFashionMNIST(Dataset):
    """Stands in for torchvision's FashionMNIST(transform=ToTensor()): (1x28x28 image, int)."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.images = rng.random((n, 1, 28, 28), dtype=np.float32)
        self.labels = rng.integers(0, 10, n).tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        return torch.from_numpy(self.images[idx]), self.labels[idx]


training_data = FakeFashionMNIST(100, seed=0)
test_data = FakeFashionMNIST(50, seed=1)

labels_map = {0: "T-Shirt", 1: "Trouser", 2: "Pullover", 3: "Dress", 4: "Coat",
              5: "Sandal", 6: "Shirt", 7: "Sneaker", 8: "Bag", 9: "Ankle Boot"}
figure = plt.figure(figsize=(8, 8))
cols, rows = 3, 3
for i in range(1, cols * rows + 1):
    sample_idx = torch.randint(len(training_data), size=(1,)).item()
    img, label = training_data[sample_idx]
    figure.add_subplot(rows, cols, i)
    plt.title(labels_map[label])
    plt.axis("off")
    plt.imshow(img.squeeze(), cmap="gray")
    print(sample_idx, labels_map[label])
plt.close(figure)

# The files a custom dataset reads: one image per file and a CSV of (file name, label).
img_dir = "images"
os.makedirs(img_dir, exist_ok=True)
with open("labels.csv", "w", newline="") as f:
    for idx in range(len(training_data)):
        name = f"img{idx}.npy"
        np.save(os.path.join(img_dir, name), (training_data.images[idx] * 255).astype(np.uint8))
        csv.writer(f).writerow([name, training_data.labels[idx]])


class CustomImageDataset(Dataset):
    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        with open(annotations_file, newline="") as f:
            self.img_labels = [(name, int(label)) for name, label in csv.reader(f)]
        self.img_dir = img_dir
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self):
        return len(self.img_labels)

    def __getitem__(self, idx):
        img_path = os.path.join(self.img_dir, self.img_labels[idx][0])
        image = torch.from_numpy(np.load(img_path))  # torchvision's read_image: a uint8 tensor
        label = self.img_labels[idx][1]
        if self.transform:
            image = self.transform(image)
        if self.target_transform:
            label = self.target_transform(label)
        return image, label


custom_data = CustomImageDataset("labels.csv", img_dir, transform=lambda x: x.float() / 255,
                                 target_transform=lambda y: torch.zeros(10).scatter_(
                                     0, torch.tensor(y), value=1))
image, target = custom_data[3]
print(image.dtype, image.shape, target)

train_dataloader = DataLoader(training_data, batch_size=64, shuffle=True)
test_dataloader = DataLoader(test_data, batch_size=64, shuffle=True)

train_features, train_labels = next(iter(train_dataloader))
print(f"Feature batch shape: {train_features.size()}")
print(f"Labels batch shape: {train_labels.size()}")
img = train_features[0].squeeze()
label = train_labels[0]
plt.imshow(img, cmap="gray")
plt.close("all")
print(f"Label: {label}")
