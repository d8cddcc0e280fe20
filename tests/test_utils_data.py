"""dtrain.utils.data against torch.utils.data: batches, collation, lengths, indexing and errors.

The cases are written once for both libraries: ``lib`` is ``dtrain`` or ``torch`` and
``lib.utils.data`` its data package. Random orders are NumPy's, not PyTorch's, so shuffled
results are compared by their lengths and index sets, and checked against their definition.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

import dtrain
import dtrain.utils.data as D
from dtrain.data import epoch_permutation

Point = collections.namedtuple("Point", "x y")


def torch_or_skip():
    return pytest.importorskip("torch")


def plain(value):
    """A batch as nested plain values tagged with container types and dtypes, for both libraries.

    Tensors become ('tensor', dtype name, nested lists); containers keep their type's name.
    """
    if isinstance(value, dtrain.Tensor):
        return ("tensor", value._data.dtype.name, value._data.tolist())
    if type(value).__module__ == "torch" and type(value).__name__ in ("Tensor", "Parameter"):
        return ("tensor", str(value.dtype).removeprefix("torch."), value.tolist())
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.name, value.tolist())
    if isinstance(value, dict):
        return (type(value).__name__, {k: plain(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [plain(v) for v in value])
    return value


def libs():
    """(dtrain, torch) when torch is installed."""
    return dtrain, torch_or_skip()


def same_in_both(make):
    """``make(lib)`` for dtrain and torch, returned as plain values (they must be equal)."""
    ours, theirs = (plain(make(lib)) for lib in libs())
    assert ours == theirs
    return ours


def same_error(make):
    """``make(lib)`` raises the same exception type in dtrain and torch; returns ours."""
    errors = []
    for lib in libs():
        with pytest.raises(Exception) as info:
            make(lib)
        errors.append(info.value)
    assert type(errors[0]) is type(errors[1]), errors
    return errors[0]


# ------------------------------------------------------------------------------ import path
def test_import_path_and_attribute():
    import dtrain.utils.data as imported

    assert dtrain.utils.data is imported is D
    assert D.Dataset is dtrain.data.Dataset and D.TensorDataset is dtrain.data.TensorDataset
    assert D.DataLoader is dtrain.data.DataLoader
    from dtrain.utils.data import DataLoader, random_split  # noqa: F401


def test_classes_take_type_parameters_as_torch_annotations_write_them():
    class Pairs(D.Dataset[tuple[dtrain.Tensor, int]]):
        def __getitem__(self, i):
            return dtrain.tensor([float(i)]), i

        def __len__(self):
            return 3

    class Backwards(D.Sampler[int]):
        def __iter__(self):
            return iter([2, 1, 0])

    loader: D.DataLoader[tuple[dtrain.Tensor, int]] = D.DataLoader(Pairs(), sampler=Backwards(),
                                                                   batch_size=2)
    assert [b[1].tolist() for b in loader] == [[2, 1], [0]]
    assert issubclass(Pairs, D.Dataset) and D.IterableDataset[int] is not None


def test_names_exist_in_torch_too():
    torch = torch_or_skip()
    for name in D.__all__:
        assert hasattr(torch.utils.data, name), name


# ------------------------------------------------------------------------------ datasets
def tensor_dataset(lib, n=10):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    return lib.utils.data.TensorDataset(lib.tensor(x), lib.tensor(np.arange(n)))


def mixed_dataset(lib, n=7):
    """A map-style dataset of (array, int, float, str) samples, subclassing ``lib``'s Dataset."""

    class Mixed(lib.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return np.full(2, i, np.float32), i, float(i) ** 2, f"s{i}"

    return Mixed()


def dict_dataset(lib, n=5):
    class Dicts(lib.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"x": np.full((2, 2), i, np.int32), "y": Point(i, np.float64(i) / 2)}

    return Dicts()


DATASETS = {"tensor": tensor_dataset, "mixed": mixed_dataset, "dict": dict_dataset}


@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.parametrize("batch_size, drop_last", [(1, False), (3, False), (3, True), (5, True),
                                                   (20, False), (20, True), (None, False)])
def test_loader_batches_match_torch(name, batch_size, drop_last):
    def make(lib):
        loader = lib.utils.data.DataLoader(DATASETS[name](lib), batch_size=batch_size,
                                           drop_last=drop_last)
        return [len(loader), list(loader)]

    same_in_both(make)


@pytest.mark.parametrize("kwargs", [
    {"sampler": [4, 0, 3, 3], "batch_size": 3},
    {"sampler": [4, 0, 3], "batch_size": None},
    {"batch_sampler": [[1, 2], [0], [6, 5, 4]]},
    {"batch_size": 4, "num_workers": 0, "in_order": False},
], ids=["sampler", "sampler-no-batching", "batch-sampler", "process-options"])
def test_loader_with_samplers_matches_torch(kwargs):
    def make(lib):
        loader = lib.utils.data.DataLoader(mixed_dataset(lib), **kwargs)
        return [len(loader), list(loader)]

    same_in_both(make)


def test_loader_with_library_samplers_matches_torch():
    def make(lib):
        data = lib.utils.data
        ds = tensor_dataset(lib, 11)
        batches = data.BatchSampler(data.SequentialSampler(ds), 4, drop_last=False)
        return [list(data.DataLoader(ds, batch_sampler=batches)),
                list(data.DataLoader(ds, sampler=data.SequentialSampler(ds), batch_size=5,
                                     drop_last=True))]

    same_in_both(make)


def test_collate_fn_and_its_old_name_collate():
    seen = []

    def collate(samples):
        seen.append(len(samples))
        return [s[1] for s in samples]

    for loader in (D.DataLoader(mixed_dataset(dtrain), batch_size=3, collate_fn=collate),
                   D.DataLoader(mixed_dataset(dtrain), batch_size=3, collate=collate)):
        assert list(loader) == [[0, 1, 2], [3, 4, 5], [6]]
        assert loader.collate_fn is collate and loader.collate is collate
    assert seen == [3, 3, 1, 3, 3, 1]
    with pytest.raises(ValueError, match="collate_fn"):
        D.DataLoader(mixed_dataset(dtrain), collate=collate, collate_fn=collate)


def test_getitems_is_used_for_batched_reads():
    class Batched(D.Dataset):
        def __init__(self):
            self.calls = []

        def __len__(self):
            return 5

        def __getitem__(self, i):
            raise AssertionError("the loader should read through __getitems__")

        def __getitems__(self, indices):
            self.calls.append(indices)
            return [i * 10 for i in indices]

    ds = Batched()
    assert [b.tolist() for b in D.DataLoader(ds, batch_size=2)] == [[0, 10], [20, 30], [40]]
    assert ds.calls == [[0, 1], [2, 3], [4]]


def test_process_options_are_accepted_and_load_in_this_process():
    calls = []
    loader = D.DataLoader(tensor_dataset(dtrain), batch_size=4, num_workers=2,
                          pin_memory=True, worker_init_fn=calls.append, prefetch_factor=3,
                          persistent_workers=True, multiprocessing_context="spawn",
                          pin_memory_device="cuda", in_order=False)
    plain_batches = [plain(b) for b in loader]
    assert plain_batches == [plain(b) for b in D.DataLoader(tensor_dataset(dtrain), batch_size=4)]
    assert calls == [] and D.get_worker_info() is None
    assert loader.num_workers == 2 and loader.pin_memory and loader.prefetch_factor == 3
    assert D.DataLoader(tensor_dataset(dtrain), num_workers=1).prefetch_factor == 2


@pytest.mark.parametrize("kwargs", [
    {"num_workers": -1},
    {"timeout": -1},
    {"prefetch_factor": 2},
    {"num_workers": 1, "prefetch_factor": -1},
    {"persistent_workers": True},
    {"multiprocessing_context": "spawn"},
    {"sampler": [0, 1], "shuffle": True},
    {"batch_sampler": [[0]], "batch_size": 2},
    {"batch_sampler": [[0]], "shuffle": True},
    {"batch_sampler": [[0]], "sampler": [0]},
    {"batch_sampler": [[0]], "drop_last": True},
    {"batch_size": None, "drop_last": True},
    {"batch_size": 0},
    {"batch_size": -2},
    {"batch_size": 2.5},
    {"batch_size": True},
    {"batch_size": 2, "drop_last": 1},
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_loader_option_errors_match_torch(kwargs):
    error = same_error(lambda lib: lib.utils.data.DataLoader(tensor_dataset(lib), **kwargs))
    assert isinstance(error, ValueError)


def test_timeout_without_workers_fails_at_iteration_like_torch():
    error = same_error(lambda lib: iter(lib.utils.data.DataLoader(tensor_dataset(lib),
                                                                   timeout=2.0)))
    assert isinstance(error, AssertionError)
    assert D.DataLoader(tensor_dataset(dtrain), timeout=2.0, num_workers=1).timeout == 2.0


def test_loader_rejects_seed_and_generator_together():
    with pytest.raises(ValueError, match="not both"):
        D.DataLoader(tensor_dataset(dtrain), shuffle=True, seed=1, generator=2)


# ------------------------------------------------------------------------------ shuffling
@pytest.mark.parametrize("n, batch_size, drop_last", [(10, 3, False), (10, 3, True), (7, 7, True),
                                                      (1, 4, False)])
def test_shuffled_lengths_match_torch_and_batches_cover_a_permutation(n, batch_size, drop_last):
    def make(lib):
        loader = lib.utils.data.DataLoader(tensor_dataset(lib, n), batch_size=batch_size,
                                           shuffle=True, drop_last=drop_last)
        return [len(loader), [len(b[1]) for b in loader]]

    same_in_both(make)
    loader = D.DataLoader(tensor_dataset(dtrain, n), batch_size=batch_size, shuffle=True,
                          drop_last=drop_last, generator=5)
    for epoch in range(2):
        labels = np.concatenate([yb._data for _, yb in loader] or [np.zeros(0, np.int64)])
        kept = len(loader) * batch_size if drop_last else n
        assert np.array_equal(labels, epoch_permutation(n, 5, epoch)[:kept])


def test_generator_is_a_seed_or_a_numpy_generator_or_the_global_one():
    def order(loader):
        return np.concatenate([yb._data for _, yb in loader])

    def loader(**kwargs):
        return D.DataLoader(tensor_dataset(dtrain, 20), batch_size=6, shuffle=True, **kwargs)

    assert loader(generator=3).seed == 3 and loader(seed=3).seed == 3
    assert np.array_equal(order(loader(generator=3)), epoch_permutation(20, 3, 0))
    a = loader(generator=np.random.default_rng(1))
    b = loader(generator=np.random.default_rng(1))
    assert a.seed == b.seed and np.array_equal(order(a), order(b))
    dtrain.manual_seed(4)
    c = loader()
    dtrain.manual_seed(4)
    assert loader().seed == c.seed
    assert not np.array_equal(order(c), order(c)), "each pass is a new epoch"
    with pytest.raises(TypeError, match="generator must be None, a dtrain.Generator"):
        loader(generator="seed")
    with pytest.raises(ValueError, match="seed must be non-negative"):
        loader(generator=-1)


def test_dtrain_generator_as_torch_scripts_use_it():
    g = dtrain.Generator()
    assert g.initial_seed() == 67280421310721 and g.device == "cpu"  # torch's default seed
    assert g.manual_seed(42) is g and g.initial_seed() == 42
    a = [p.indices for p in D.random_split(range(20), [0.5, 0.5], generator=g)]
    b = [p.indices for p in D.random_split(range(20), [0.5, 0.5], generator=g)]
    assert a != b, "the generator's stream advances, as a torch.Generator's does"
    g.manual_seed(42)
    assert [p.indices for p in D.random_split(range(20), [0.5, 0.5], generator=g)] == a
    state = g.get_state()
    first = D.DataLoader(tensor_dataset(dtrain, 9), shuffle=True, generator=g).seed
    g.set_state(state)
    assert D.DataLoader(tensor_dataset(dtrain, 9), shuffle=True, generator=g).seed == first
    assert g.manual_seed(-1).initial_seed() == 2**64 - 1  # PyTorch's modulo 2**64
    with pytest.raises(RuntimeError, match="expected an int"):
        g.manual_seed(1.5)
    with pytest.raises(RuntimeError, match="CPU"):
        dtrain.Generator("cuda")
    assert dtrain.rand(3, generator=dtrain.Generator().manual_seed(1)).data.tolist() == \
        dtrain.rand(3, generator=dtrain.Generator().manual_seed(1)).data.tolist()
    assert dtrain.Generator().seed() != dtrain.Generator().seed()
    perm = dtrain.randperm(6, generator=dtrain.Generator().manual_seed(2))
    assert sorted(perm._data.tolist()) == list(range(6))
    assert perm._data.tolist() == dtrain.randperm(6, generator=g.manual_seed(2)).data.tolist()


def test_shuffled_loader_order_and_set_epoch():
    loader = D.DataLoader(mixed_dataset(dtrain), batch_size=3, shuffle=True, seed=8)
    assert isinstance(loader.sampler, D.RandomSampler)
    first = [i for _, ib, _, _ in loader for i in ib.tolist()]
    loader.set_epoch(0)
    assert [i for _, ib, _, _ in loader for i in ib.tolist()] == first
    assert first == loader.order(0).tolist() == epoch_permutation(7, 8, 0).tolist()
    assert loader.epoch == 1 and loader.sampler.epoch == 1
    with pytest.raises(TypeError, match="order"):
        D.DataLoader(mixed_dataset(dtrain), sampler=[1, 0]).order(0)


# ------------------------------------------------------------------------------ samplers
def test_sequential_and_batch_samplers_match_torch():
    def make(lib):
        data = lib.utils.data
        seq = data.SequentialSampler(range(7))
        return [list(seq), len(seq)] + [
            [list(b), len(b)] for b in (data.BatchSampler(seq, 3, False),
                                        data.BatchSampler(seq, 3, True),
                                        data.BatchSampler([5, 1, 2, 2], 2, True),
                                        data.BatchSampler(range(4), 8, False))]

    same_in_both(make)


@pytest.mark.parametrize("kwargs", [{}, {"num_samples": 3}, {"num_samples": 17},
                                    {"replacement": True}, {"replacement": True,
                                                            "num_samples": 25}])
def test_random_sampler_lengths_and_index_sets(kwargs):
    same_in_both(lambda lib: [len(lib.utils.data.RandomSampler(range(7), **kwargs)),
                              len(list(lib.utils.data.RandomSampler(range(7), **kwargs)))])
    sampler = D.RandomSampler(range(7), generator=11, **kwargs)
    drawn = list(sampler)
    assert all(isinstance(i, int) and 0 <= i < 7 for i in drawn)
    if not kwargs.get("replacement"):  # whole permutations first, then part of another
        full, rest = divmod(len(drawn), 7)
        for k in range(full):
            assert sorted(drawn[7 * k:7 * k + 7]) == list(range(7))
        assert len(set(drawn[7 * full:])) == rest
        assert drawn[:min(7, len(drawn))] == epoch_permutation(7, 11, 0).tolist()[:len(drawn)]
    assert list(sampler) == sampler.order(1).tolist() != drawn
    sampler.set_epoch(0)
    assert list(sampler) == drawn


@pytest.mark.parametrize("make", [
    lambda lib: lib.utils.data.RandomSampler(range(3), replacement=1),
    lambda lib: lib.utils.data.RandomSampler(range(3), num_samples=0),
    lambda lib: lib.utils.data.RandomSampler(range(3), num_samples=2.5),
    lambda lib: lib.utils.data.RandomSampler(range(0)),
    lambda lib: lib.utils.data.BatchSampler(range(3), 0, False),
    lambda lib: lib.utils.data.BatchSampler(range(3), 2, None),
    lambda lib: lib.utils.data.WeightedRandomSampler([1.0, 2.0], 0),
    lambda lib: lib.utils.data.WeightedRandomSampler([1.0, 2.0], 2, replacement=1),
    lambda lib: lib.utils.data.WeightedRandomSampler([[1.0, 2.0]], 2),
    lambda lib: list(lib.utils.data.WeightedRandomSampler([1.0, -2.0], 2)),
    lambda lib: list(lib.utils.data.WeightedRandomSampler([0.0, 0.0], 2)),
    lambda lib: list(lib.utils.data.WeightedRandomSampler([1.0, 2.0], 3, replacement=False)),
], ids=["replacement", "num-samples-0", "num-samples-float", "empty", "batch-size-0",
        "drop-last-none", "weighted-num-samples", "weighted-replacement", "weighted-2d",
        "weighted-negative", "weighted-zero", "weighted-too-many"])
def test_sampler_errors_match_torch(make):
    same_error(make)


def test_subset_random_and_weighted_samplers():
    sampler = D.SubsetRandomSampler([10, 20, 30, 40], generator=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == [10, 20, 30, 40] and len(sampler) == 4
    assert first == sampler.order(0).tolist() and second == sampler.order(1).tolist()
    weighted = D.WeightedRandomSampler([0.0, 1.0, 3.0, 0.0], 50, generator=1)
    drawn = list(weighted)
    assert len(drawn) == len(weighted) == 50 and set(drawn) == {1, 2}
    assert drawn.count(2) > drawn.count(1)
    distinct = list(D.WeightedRandomSampler([1.0, 1.0, 5.0], 3, replacement=False, generator=2))
    assert sorted(distinct) == [0, 1, 2]
    torch = torch_or_skip()
    assert len(torch.utils.data.SubsetRandomSampler([10, 20, 30, 40])) == len(sampler)


# ------------------------------------------------------------------------------ collation
COLLATE_CASES = {
    "ints": [1, 2, 3],
    "bools": [True, False],
    "ints-and-bools": [True, 2],
    "ints-then-a-float": [1, 2.5],
    "floats": [0.5, 1.5],
    "strings": ["a", "b"],
    "bytes": [b"a", b"b"],
    "numpy-scalars": [np.float32(1.5), np.float32(2.5)],
    "numpy-ints": [np.int32(1), np.int32(7)],
    "numpy-bools": [np.bool_(True), np.bool_(False)],
    "arrays-float16": [np.ones(2, np.float16), np.zeros(2, np.float16)],
    "arrays-uint8": [np.ones((2, 2), np.uint8), np.zeros((2, 2), np.uint8)],
    "arrays-0d": [np.array(1.5), np.array(2.5)],
    "tuples": [(1, 2.0, "a"), (3, 4.0, "b")],
    "lists": [[1, 2], [3, 4]],
    "dicts": [{"a": 1, "b": (np.zeros(2), 0.5)}, {"a": 2, "b": (np.ones(2), 1.5)}],
    "ordered-dicts": [collections.OrderedDict(z=1, a=2), collections.OrderedDict(z=3, a=4)],
    "named-tuples": [Point(1, np.float32(2)), Point(3, np.float32(4))],
    "nested": [([1, (2.0, "x")], {"k": [True]}), ([3, (4.0, "y")], {"k": [False]})],
}


@pytest.mark.parametrize("name", sorted(COLLATE_CASES))
def test_default_collate_matches_torch(name):
    batch = COLLATE_CASES[name]
    same_in_both(lambda lib: lib.utils.data.default_collate(batch))


def test_default_collate_of_tensors_matches_torch():
    same_in_both(lambda lib: lib.utils.data.default_collate(
        [lib.tensor(np.full((2, 3), i, np.float64)) for i in range(4)]))
    same_in_both(lambda lib: lib.utils.data.default_collate(
        [(lib.tensor([i]), {"t": lib.tensor(float(i))}) for i in range(3)]))


@pytest.mark.parametrize("name", sorted(COLLATE_CASES))
def test_default_convert_matches_torch(name):
    from torch.utils.data._utils.collate import default_convert as torch_convert

    for sample in COLLATE_CASES[name]:
        assert plain(D.default_convert(sample)) == plain(torch_convert(sample))


@pytest.mark.parametrize("batch", [
    [[1, 2], [3]],
    [np.zeros(2), np.zeros(3)],
    [np.array(["a"]), np.array(["b"])],
    [object(), object()],
    [None, None],
], ids=["ragged", "shapes", "strings-array", "object", "none"])
def test_default_collate_errors_match_torch(batch):
    same_error(lambda lib: lib.utils.data.default_collate(batch))


# ------------------------------------------------------------------------------ Subset / Concat
def test_subset_indexing_matches_torch():
    def make(lib):
        data = lib.utils.data
        sub = data.Subset(mixed_dataset(lib), [6, 0, 3, 3])
        inner = data.Subset(sub, [3, 1])
        return [len(sub), sub[0], sub[-1], sub.__getitems__([1, 2]), len(inner), inner[0],
                list(data.DataLoader(sub, batch_size=3))]

    same_in_both(make)
    same_error(lambda lib: lib.utils.data.Subset(mixed_dataset(lib), [0, 1])[2])


def test_subset_with_a_list_index_passes_the_list_on():
    class Recorder(D.Dataset):
        def __getitem__(self, i):
            return i

        def __len__(self):
            return 10

    assert D.Subset(Recorder(), [5, 6, 7])[[2, 0]] == [7, 5]


def test_concat_dataset_matches_torch():
    def make(lib):
        data = lib.utils.data
        parts = [mixed_dataset(lib, 3), mixed_dataset(lib, 0), mixed_dataset(lib, 2)]
        cat = data.ConcatDataset(parts)
        added = parts[0] + parts[2]
        return [len(cat), cat.cumulative_sizes, [cat[i] for i in range(-5, 5)],
                type(added).__name__, len(added), list(data.DataLoader(cat, batch_size=2))]

    same_in_both(make)


class Stream:
    """An IterableDataset of ``0..n-1`` (its base class from either library), with a length."""

    @staticmethod
    def make(lib, n=5, sized=True):
        class S(lib.utils.data.IterableDataset):
            def __iter__(self):
                return iter(range(n))

        if sized:
            S.__len__ = lambda self: n
        return S()


@pytest.mark.parametrize("make", [
    lambda lib: lib.utils.data.ConcatDataset([]),
    lambda lib: lib.utils.data.ConcatDataset([Stream.make(lib)]),
    lambda lib: lib.utils.data.ConcatDataset([mixed_dataset(lib, 3)])[-4],
    lambda lib: lib.utils.data.ConcatDataset([mixed_dataset(lib, 3)])[3],
], ids=["empty", "iterable", "negative-index", "past-the-end"])
def test_concat_dataset_errors_match_torch(make):
    same_error(make)


# ------------------------------------------------------------------------------ random_split
@pytest.mark.parametrize("n, lengths", [
    (10, [0.5, 0.5]),
    (10, [0.3, 0.3, 0.4]),
    (11, [0.3, 0.3, 0.4]),
    (7, [0.25, 0.25, 0.25, 0.25]),
    (100, [0.8, 0.1, 0.1]),
    (10, [3, 7]),
    (10, [10, 0]),
    (1, [1]),
])
def test_random_split_lengths_match_torch_and_split_disjointly(n, lengths):
    def make(lib):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty split warns (tested below)
            return [len(s) for s in lib.utils.data.random_split(mixed_dataset(lib, n), lengths)]

    _, sizes = same_in_both(make)
    parts = D.random_split(tensor_dataset(dtrain, n), lengths, generator=1)
    assert [len(p) for p in parts] == sizes
    indices = [i for p in parts for i in p.indices]
    assert sorted(indices) == list(range(n))
    assert [p.indices for p in D.random_split(tensor_dataset(dtrain, n), lengths, generator=1)] \
        == [p.indices for p in parts]
    for part in parts:
        if len(part):
            assert part[0][1].item() == part.indices[0]


def test_random_split_warns_about_an_empty_split_like_torch():
    for lib in libs():
        with pytest.warns(UserWarning, match="Length of split at index 2 is 0"):
            lib.utils.data.random_split(range(3), [0.5, 0.5, 0.0])


@pytest.mark.parametrize("lengths", [[3, 3], [0.5, 0.6], [1.2, -0.2], [11]],
                         ids=["short", "fractions-over-1", "fraction-out-of-range", "long"])
def test_random_split_errors_match_torch(lengths):
    error = same_error(lambda lib: lib.utils.data.random_split(range(10), lengths))
    assert isinstance(error, ValueError)


def test_random_split_generators():
    a = D.random_split(range(20), [0.5, 0.5], generator=np.random.default_rng(3))
    b = D.random_split(range(20), [0.5, 0.5], generator=np.random.default_rng(3))
    assert [p.indices for p in a] == [p.indices for p in b]
    dtrain.manual_seed(9)
    c = D.random_split(range(20), [10, 10])
    dtrain.manual_seed(9)
    assert [p.indices for p in c] == [p.indices for p in D.random_split(range(20), [10, 10])]
    with pytest.raises(ValueError, match="non-negative int"):
        D.random_split(range(4), [5, -1])


# ------------------------------------------------------------------------------ iterable datasets
@pytest.mark.parametrize("kwargs", [{"batch_size": 2}, {"batch_size": 2, "drop_last": True},
                                    {"batch_size": None}, {"batch_size": 5},
                                    {"batch_size": 5, "drop_last": True}])
def test_iterable_dataset_loader_matches_torch(kwargs):
    def make(lib):
        loader = lib.utils.data.DataLoader(Stream.make(lib), **kwargs)
        return [len(loader), list(loader)]

    same_in_both(make)


def test_iterable_dataset_without_len_and_chaining_match_torch():
    same_in_both(lambda lib: list(lib.utils.data.DataLoader(Stream.make(lib, 3, sized=False),
                                                            batch_size=2)))
    same_error(lambda lib: len(lib.utils.data.DataLoader(Stream.make(lib, 3, sized=False))))

    def chained(lib):
        both = Stream.make(lib, 2) + Stream.make(lib, 3)
        chain = lib.utils.data.ChainDataset([Stream.make(lib, 1), Stream.make(lib, 2)])
        return [type(both).__name__, list(both), len(both), list(chain), len(chain)]

    same_in_both(chained)
    same_error(lambda lib: list(lib.utils.data.ChainDataset([mixed_dataset(lib)])))


@pytest.mark.parametrize("kwargs", [{"shuffle": True}, {"sampler": [0, 1]},
                                    {"batch_sampler": [[0]]}])
def test_iterable_dataset_rejects_orders_like_torch(kwargs):
    same_error(lambda lib: lib.utils.data.DataLoader(Stream.make(lib), **kwargs))


# ------------------------------------------------------------------------------ a PyTorch script
def test_pytorch_mnist_example_pattern_runs_unchanged():
    """The shape of pytorch/examples' mnist main: loaders with its kwargs, Adadelta, StepLR."""
    torch = dtrain
    x, y = dtrain.datasets.load_digits("train")
    dataset = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
    train_set, test_set = torch.utils.data.random_split(dataset, [0.8, 0.2], generator=0)
    kwargs = {"batch_size": 64, "num_workers": 1, "pin_memory": True, "shuffle": True}
    train_loader = torch.utils.data.DataLoader(train_set, **kwargs)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    for _ in range(3):
        for data, target in train_loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
        scheduler.step()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            correct += int((model(data).argmax(1) == target).sum())
    assert len(train_loader) == 17 and optimizer.param_groups[0]["lr"] == pytest.approx(0.343)
    assert correct / len(test_set) > 0.75  # chance is 0.1


# ------------------------------------------------------------------------------ StackDataset
def test_stack_dataset_matches_torch():
    def make(lib):
        data = lib.utils.data
        a, b = mixed_dataset(lib, 4), tensor_dataset(lib, 4)
        pair, named = data.StackDataset(a, b), data.StackDataset(x=a, y=b)
        return [len(pair), pair[1], named[2], pair.__getitems__([3, 0]),
                named.__getitems__([1]), list(data.DataLoader(named, batch_size=3))]

    same_in_both(make)


@pytest.mark.parametrize("make", [
    lambda lib: lib.utils.data.StackDataset(),
    lambda lib: lib.utils.data.StackDataset(range(3), y=range(3)),
    lambda lib: lib.utils.data.StackDataset(range(3), range(4)),
    lambda lib: lib.utils.data.StackDataset(x=range(3), y=range(2)),
], ids=["empty", "both-kinds", "lengths", "named-lengths"])
def test_stack_dataset_errors_match_torch(make):
    assert isinstance(same_error(make), ValueError)


# ------------------------------------------------------------------------------ DistributedSampler
@pytest.mark.parametrize("n, replicas", [(10, 3), (10, 5), (2, 4), (7, 2), (0, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_sampler_shares_match_torch_in_order(n, replicas, drop_last):
    def make(lib):
        shares = [lib.utils.data.DistributedSampler(range(n), replicas, rank, shuffle=False,
                                                    drop_last=drop_last)
                  for rank in range(replicas)]
        return [[len(s), list(s), list(s)] for s in shares]

    same_in_both(make)


@pytest.mark.parametrize("n, replicas, drop_last", [(10, 3, False), (10, 3, True), (9, 3, False)])
def test_distributed_sampler_shuffled_shares_partition_the_epoch(n, replicas, drop_last):
    same_in_both(lambda lib: [len(lib.utils.data.DistributedSampler(range(n), replicas, r,
                                                                    drop_last=drop_last))
                              for r in range(replicas)])
    shares = [D.DistributedSampler(range(n), replicas, r, seed=4, drop_last=drop_last)
              for r in range(replicas)]
    for epoch in (0, 3):
        for s in shares:
            s.set_epoch(epoch)
        order = epoch_permutation(n, 4, epoch).tolist()
        order = order[:shares[0].total_size] + order[:max(0, shares[0].total_size - n)]
        assert [list(s) for s in shares] == [order[r::replicas] for r in range(replicas)]
        assert list(shares[0]) == list(shares[0]), "iterating does not advance the epoch"
    loader = D.DataLoader(tensor_dataset(dtrain, n), batch_size=2, sampler=shares[1])
    assert [i for _, yb in loader for i in yb.tolist()] == list(shares[1])


@pytest.mark.parametrize("kwargs", [{"num_replicas": 2, "rank": 2}, {"num_replicas": 2,
                                                                     "rank": -1}])
def test_distributed_sampler_rank_errors_match_torch(kwargs):
    assert isinstance(same_error(lambda lib: lib.utils.data.DistributedSampler(range(4),
                                                                                **kwargs)),
                      ValueError)


def test_distributed_sampler_needs_replicas_and_rank():
    with pytest.raises(RuntimeError, match="num_replicas and rank"):
        D.DistributedSampler(range(4))
