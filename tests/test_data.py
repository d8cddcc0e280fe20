"""dtrain.data (orders, loaders, array files) and dtrain.datasets (the bundled digits)."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain
from dtrain import nn
from dtrain.data import (
    DataLoader,
    Dataset,
    NpzArrays,
    TensorDataset,
    default_collate,
    epoch_permutation,
    load_arrays,
)


# ------------------------------------------------------------------------- epoch permutation
def test_epoch_permutation_is_a_permutation_keyed_by_seed_and_epoch():
    p = epoch_permutation(1000, seed=7, epoch=3)
    assert p.dtype == np.int64 and p.shape == (1000,)
    assert np.array_equal(np.sort(p), np.arange(1000))
    assert np.array_equal(p, epoch_permutation(1000, 7, 3))
    assert not np.array_equal(p, epoch_permutation(1000, 7, 4))
    assert not np.array_equal(p, epoch_permutation(1000, 8, 3))
    assert not np.array_equal(epoch_permutation(1000, 3, 7), p), "(seed, epoch) is ordered"


def test_epoch_permutation_ignores_global_rng_and_matches_its_definition():
    dtrain.manual_seed(0)
    a = epoch_permutation(50, 11, 2)
    dtrain.manual_seed(123)
    np.random.seed(5)
    b = epoch_permutation(50, 11, 2)
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence([11, 2]))).permutation(50)
    assert np.array_equal(a, b) and np.array_equal(a, expected)
    assert len(epoch_permutation(0, 1, 1)) == 0


@pytest.mark.parametrize("args, error, message", [
    ((10, -1, 0), ValueError, "seed must be non-negative"),
    ((10, 0, -2), ValueError, "epoch must be non-negative"),
    ((-1, 0, 0), ValueError, "n must be non-negative"),
    ((10, 1.5, 0), TypeError, "seed must be an int"),
])
def test_epoch_permutation_rejects_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        epoch_permutation(*args)


# ------------------------------------------------------------------------------ datasets
def test_tensor_dataset_rows_and_size_check():
    x = np.arange(12.0).reshape(6, 2)
    y = dtrain.tensor([0, 1, 2, 3, 4, 5])
    ds = TensorDataset(x, y)
    assert len(ds) == 6
    xi, yi = ds[4]
    assert isinstance(xi, dtrain.Tensor) and np.array_equal(xi._data, [8.0, 9.0])
    assert yi.shape == () and yi.item() == 4
    assert ds.tensors[1] is y and np.array_equal(ds.tensors[0]._data, x)
    with pytest.raises(AssertionError, match=r"Size mismatch between tensors: first dimensions "
                                             r"are \[6, 5\]"):
        TensorDataset(x, np.arange(5))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(ValueError, match="tensor 1 is 0-d"):
        TensorDataset(x, np.array(3))


def test_dataset_base_class_requires_getitem_and_len():
    with pytest.raises(NotImplementedError, match="Dataset must define __getitem__"):
        Dataset()[0]
    with pytest.raises(TypeError, match="has no len"):  # as torch's Dataset
        len(Dataset())


# ---------------------------------------------------------------------------- DataLoader
def make_dataset(n=10):
    return TensorDataset(np.arange(n * 3, dtype=np.float32).reshape(n, 3), np.arange(n))


@pytest.mark.parametrize("n, batch_size, drop_last, sizes", [
    (10, 3, False, [3, 3, 3, 1]),
    (10, 3, True, [3, 3, 3]),
    (10, 5, False, [5, 5]),
    (10, 5, True, [5, 5]),
    (10, 20, False, [10]),
    (10, 20, True, []),
    (0, 4, False, []),
])
def test_loader_batch_sizes_and_len(n, batch_size, drop_last, sizes):
    loader = DataLoader(make_dataset(n), batch_size=batch_size, drop_last=drop_last)
    batches = list(loader)
    assert len(loader) == len(sizes)
    assert [len(xb) for xb, _ in batches] == sizes


def test_loader_without_shuffle_is_in_order_and_yields_lists_of_tensors():
    batches = list(DataLoader(make_dataset(), batch_size=4))
    xb, yb = batches[0]
    assert isinstance(batches[0], list) and isinstance(xb, dtrain.Tensor)  # as torch's
    assert xb.dtype == np.float32 and yb.dtype == np.int64
    assert np.array_equal(np.concatenate([yb._data for _, yb in batches]), np.arange(10))
    assert np.array_equal(xb._data, np.arange(12, dtype=np.float32).reshape(4, 3))
    xb._data[...] = -1  # batches are copies: writing to one leaves the dataset alone
    assert np.array_equal(next(iter(DataLoader(make_dataset(), batch_size=4)))[0]._data[0],
                          [0, 1, 2])


def test_shuffled_order_is_the_epoch_permutation_and_set_epoch_repeats_it():
    loader = DataLoader(make_dataset(), batch_size=3, shuffle=True, seed=42)

    def order():
        return np.concatenate([yb._data for _, yb in loader])

    first, second = order(), order()
    assert np.array_equal(first, epoch_permutation(10, 42, 0))
    assert np.array_equal(second, epoch_permutation(10, 42, 1)), "each pass is a new epoch"
    loader.set_epoch(0)
    assert np.array_equal(order(), first)
    loader.set_epoch(5)
    assert np.array_equal(order(), epoch_permutation(10, 42, 5))
    assert loader.epoch == 6
    assert np.array_equal(loader.order(1), second)


def test_shuffled_drop_last_drops_the_tail_of_the_permutation():
    loader = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=1, drop_last=True)
    labels = np.concatenate([yb._data for _, yb in loader])
    assert np.array_equal(labels, epoch_permutation(10, 1, 0)[:8])
    xb, yb = next(iter(loader))
    assert np.array_equal(xb._data[:, 0], yb._data * 3), "inputs and targets stay paired"


def test_seed_none_draws_once_from_the_global_generator():
    dtrain.manual_seed(3)
    a = DataLoader(make_dataset(), batch_size=10, shuffle=True)
    dtrain.manual_seed(3)
    b = DataLoader(make_dataset(), batch_size=10, shuffle=True)
    assert a.seed == b.seed and a.seed is not None
    dtrain.randn(3)  # moving the global generator after construction changes nothing
    assert np.array_equal(next(iter(a))[1]._data, next(iter(b))[1]._data)
    assert DataLoader(make_dataset(), shuffle=False).seed is None


class Squares(Dataset):
    """A plain map-style dataset of (array, int, float) samples, for the collate path."""

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return np.full(2, i, np.float32), i, float(i) ** 2


def test_generic_dataset_uses_default_collate_with_the_same_order():
    loader = DataLoader(Squares(), batch_size=3, shuffle=True, seed=9)
    batches = list(loader)
    xb, ib, sb = batches[0]
    order = epoch_permutation(7, 9, 0)
    assert np.array_equal(ib._data, order[:3]) and ib.dtype == np.int64
    assert xb.dtype == np.float32 and xb.shape == (3, 2)
    assert sb.dtype == np.float64 and np.array_equal(sb._data, order[:3] ** 2.0)
    assert [len(b[1]) for b in batches] == [3, 3, 1]


def test_custom_collate_and_tensor_dataset_agree():
    calls = []

    def collate(samples):
        calls.append(len(samples))
        return default_collate(samples)

    fast = list(DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=2))
    slow = list(DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=2, collate=collate))
    assert calls == [4, 4, 2]
    for (xf, yf), (xs, ys) in zip(fast, slow):
        assert np.array_equal(xf._data, xs._data) and np.array_equal(yf._data, ys._data)


def test_default_collate_structures_and_errors():
    out = default_collate([{"a": 1, "b": [np.zeros(2), "x"]}, {"a": 2, "b": [np.ones(2), "y"]}])
    assert np.array_equal(out["a"]._data, [1, 2]) and out["b"][1] == ("x", "y")
    assert out["b"][0].shape == (2, 2)
    assert default_collate([True, False]).dtype == np.bool_
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(TypeError, match="batch must contain tensors.*found <class 'object'>"):
        default_collate([object()])


@pytest.mark.parametrize("kwargs, error, message", [
    ({"batch_size": 0}, ValueError, "batch_size should be a positive integer value"),
    ({"batch_size": True}, ValueError, "batch_size should be a positive integer value"),
    ({"batch_size": 2.5}, ValueError, "batch_size should be a positive integer value"),
    ({"shuffle": True, "seed": -3}, ValueError, "seed must be non-negative"),
])
def test_loader_rejects_bad_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        DataLoader(make_dataset(), **kwargs)


def test_loader_rejects_non_datasets_and_bad_epochs():
    with pytest.raises(TypeError, match="map-style dataset"):
        DataLoader(iter(range(3)))
    with pytest.raises(ValueError, match="epoch must be non-negative"):
        DataLoader(make_dataset()).set_epoch(-1)


# ----------------------------------------------------------------------------- array files
def test_load_arrays_memory_maps_npy(tmp_path):
    data = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.save(tmp_path / "x.npy", data)
    mapped = load_arrays(tmp_path / "x.npy")
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert np.array_equal(mapped, data)
    loaded = load_arrays(str(tmp_path / "x.npy"), mmap=False)
    assert not isinstance(loaded, np.memmap) and loaded.flags.writeable
    ds = TensorDataset(mapped, np.arange(4))
    xb, _ = next(iter(DataLoader(ds, batch_size=2, shuffle=True, seed=0)))
    assert type(xb._data) is np.ndarray and xb._data.flags.writeable
    assert np.array_equal(xb._data, data[epoch_permutation(4, 0, 0)[:2]])


def test_load_arrays_npz_lazy_and_eager(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", x=np.ones((3, 2)), y=np.arange(3))
    lazy = load_arrays(tmp_path / "d.npz")
    assert isinstance(lazy, NpzArrays) and list(lazy) == ["x", "y"] and len(lazy) == 2
    assert np.array_equal(lazy["y"], np.arange(3)) and lazy["y"] is lazy["y"]
    with pytest.raises(KeyError, match="'z' is not in"):
        lazy["z"]
    eager = load_arrays(tmp_path / "d.npz", mmap=False)
    assert type(eager) is dict and np.array_equal(eager["x"], np.ones((3, 2)))


def test_load_arrays_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file: .*missing.npy"):
        load_arrays(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match=r"reads .npy or .npz files, got '.csv'"):
        load_arrays(tmp_path / "data.csv")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy: cannot read arrays: .*allow_pickle=False"):
        load_arrays(tmp_path / "objects.npy", mmap=False)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz: cannot read arrays"):
        load_arrays(tmp_path / "broken.npz")


# ---------------------------------------------------------------------------- digits dataset
def test_load_digits_splits_shapes_and_ranges():
    x, y = dtrain.datasets.load_digits()
    xt, yt = dtrain.datasets.load_digits("test")
    xa, ya = dtrain.datasets.load_digits("all", dtype=np.float64)
    assert x.shape == (1347, 64) and y.shape == (1347,) and xt.shape == (450, 64)
    assert xa.shape == (1797, 64) and xa.dtype == np.float64
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    assert np.array_equal(np.unique(x * 16), np.arange(17)), "pixels are the integers 0..16 / 16"
    counts, test_counts = np.bincount(y), np.bincount(yt)
    assert counts.min() >= 130 and test_counts.min() >= 43, "the split is stratified"
    # train and test partition 'all': every sample of the full set is in exactly one split
    rows = {r.tobytes() + bytes([c]) for r, c in zip(xa.astype(np.float32), ya)}
    split_rows = [r.tobytes() + bytes([c]) for r, c in zip(np.vstack([x, xt]),
                                                           np.concatenate([y, yt]))]
    assert set(split_rows) <= rows and len(split_rows) == 1797


def test_load_digits_is_fixed_and_returns_fresh_arrays():
    x1, _ = dtrain.datasets.load_digits("train")
    x1[...] = 5
    x2, y2 = dtrain.datasets.load_digits("train")
    assert x2.max() == 1.0 and x2.flags.writeable
    assert y2[:10].tolist() == dtrain.datasets.load_digits("train")[1][:10].tolist()
    raw = load_arrays(dtrain.datasets.digits_path())
    assert sorted(raw) == ["images", "target", "test_index", "train_index"]
    assert raw["images"].dtype == np.uint8 and len(raw["train_index"]) == 1347
    assert not set(raw["train_index"]) & set(raw["test_index"])
    assert np.array_equal(x2, raw["images"][raw["train_index"]] / np.float32(16))


def test_load_digits_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        dtrain.datasets.load_digits("validation")
    with pytest.raises(TypeError, match="floating dtype"):
        dtrain.datasets.load_digits(dtype=np.int32)


def test_digits_train_with_the_loader():
    """A linear softmax model fit on the training split classifies the test split well."""
    dtrain.manual_seed(0)
    x, y = dtrain.datasets.load_digits("train")
    xt, yt = dtrain.datasets.load_digits("test")
    model = nn.Linear(64, 10)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, seed=0)
    for _ in range(15):
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(model(xb), yb)
            model.zero_grad()
            loss.backward()
            for p in model.parameters():
                p._data -= 0.5 * p.grad._data
    with dtrain.no_grad():
        accuracy = (model(dtrain.tensor(xt))._data.argmax(axis=1) == yt).mean()
    assert accuracy > 0.9
