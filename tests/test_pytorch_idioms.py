"""Idioms of real PyTorch code (micrograd's tests, blogs, old tutorials) give torch's answers.

Each case is a function of the module alias ``torch``, run with dtrain and, when installed, with
torch; dtrain's result is also checked against the known answer so the test means something
without torch.
"""

import numpy as np
import pytest

import dtrain


def both(case):
    """``case(dtrain)`` and, when torch is installed, ``case(torch)`` (else None)."""
    try:
        import torch
    except ImportError:
        return case(dtrain), None
    return case(dtrain), case(torch)


def numbers(value):
    """Tensors, tuples and numbers as nested float arrays, to compare the two frameworks."""
    if isinstance(value, (tuple, list)):
        return [numbers(v) for v in value]
    if hasattr(value, "detach"):
        return np.asarray(value.detach().numpy(), dtype=np.float64)
    return np.float64(value)


def agree(case, expected, tol=1e-6):
    ours, theirs = both(case)
    for got in (ours, theirs) if theirs is not None else (ours,):
        for a, b in zip(numbers(got), expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def micrograd_sanity(torch):
    x = torch.Tensor([-4.0]).double()
    x.requires_grad = True
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    return y.data.item(), x.grad.item()


def micrograd_more_ops(torch):
    a = torch.Tensor([-4.0]).double()
    b = torch.Tensor([2.0]).double()
    a.requires_grad = True
    b.requires_grad = True
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + (b + a).relu()
    d = d + 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    return g.data.item(), a.grad.item(), b.grad.item()


def test_micrograd_engine_tests():
    agree(micrograd_sanity, [-20.0, 46.0])
    agree(micrograd_more_ops, [24.70408163265306, 138.83381924198252, 645.5772594752186])


def old_accuracy(torch):
    output = torch.tensor([[.1, .9, 0], [.8, .1, .1], [.2, .3, .5]], requires_grad=True)
    target = torch.tensor([1, 2, 2])
    pred = output.data.max(1)[1]
    correct = pred.eq(target.data.view_as(pred)).cpu().sum()
    return pred, correct


def test_old_style_accuracy_code():
    """``pred = output.data.max(1)[1]`` once counted wrong silently: ``.data`` is a Tensor."""
    agree(old_accuracy, [[1, 0, 2], 2])
    assert dtrain.tensor([[.1, .9, 0], [.8, .1, .1], [.2, .3, .5]]).data.max(1)[1].tolist() == [
        1, 0, 2]


def manual_sgd(torch):
    """Blog-style training: update ``p.data`` by hand and zero ``p.grad.data``."""
    w = torch.tensor([[0.5, -0.3], [0.1, 0.8]], requires_grad=True)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    for _ in range(3):
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        w.data.add_(-0.1 * w.grad.data)
        w.grad.data.zero_()
    return w, w.grad, loss


def test_manual_sgd_on_data():
    ours, theirs = both(manual_sgd)
    assert not ours[1].any() and ours[0].requires_grad and ours[0].grad_fn is None
    if theirs is not None:
        for a, b in zip(numbers(ours), numbers(theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def wgan_clipping(torch):
    critic = torch.nn.Linear(3, 2)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.5, -0.005, 0.02], [-0.3, 0.0, 0.009]]))
        critic.bias.copy_(torch.tensor([-0.02, 0.001]))
    for p in critic.parameters():
        p.data.clamp_(-0.01, 0.01)
    return critic.weight, critic.bias


def test_wgan_weight_clipping():
    agree(wgan_clipping, [[[0.01, -0.005, 0.01], [-0.01, 0.0, 0.009]], [-0.01, 0.001]])


def device_idiom(torch):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch.nn.Linear(2, 1).to(device)
    x = torch.ones(4, 2).to(device)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    model.to(device)
    return str(device), model(x.to(device)).shape, next(model.parameters()).device.type


def test_device_idiom_on_a_cpu_machine():
    ours, theirs = both(device_idiom)
    assert ours == ("cpu", (4, 1), "cpu")
    assert theirs is None or theirs == ours
    with pytest.raises(Exception, match="cuda"):
        dtrain.ones(2).to("cuda")


def zero_dim_formatting(torch):
    loss = torch.tensor(0.123456, requires_grad=True) * 2
    label = torch.tensor([3, 1])[0]
    return f"{loss:.4f} {label} {label:>3d} {torch.tensor(2.5)}"


def test_zero_dim_tensors_format_as_numbers():
    ours, theirs = both(zero_dim_formatting)
    assert ours == "0.2469 3   3 2.5"
    assert theirs is None or theirs == ours
    with pytest.raises(TypeError, match="unsupported format string"):
        f"{dtrain.ones(2):.2f}"


def one_hot_scatter(torch):
    """The transforms tutorial's target transform: a 0-d index on a 1-d tensor."""
    src = torch.tensor(5.0, requires_grad=True)
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    picked = x.gather(0, torch.tensor(2))
    out = torch.zeros(3).scatter(0, torch.tensor(1), src)
    (picked + out.sum()).backward()
    one_hot = torch.zeros(10, dtype=torch.float).scatter_(0, torch.tensor(3), value=1)
    return one_hot, picked, out, x.grad, src.grad


def test_zero_dim_index_on_a_vector():
    agree(one_hot_scatter, [np.eye(10)[3], 3.0, [0, 5, 0], [0, 0, 1], 1.0])
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        dtrain.zeros(2, 3).scatter(0, dtrain.tensor(1), value=1.0)


def test_torch_weights_come_over_through_numpy(tmp_path):
    """A file from torch.save is refused with the way round; numpy.savez carries the weights."""
    torch = pytest.importorskip("torch")
    source = torch.nn.Linear(3, 2)
    torch.save(source.state_dict(), tmp_path / "model.pth")
    with pytest.raises(dtrain.CheckpointError, match="written by torch.save.*numpy.savez"):
        dtrain.load(tmp_path / "model.pth")
    np.savez(tmp_path / "model.npz", **{k: v.numpy() for k, v in source.state_dict().items()})
    target = dtrain.nn.Linear(3, 2)
    target.load_state_dict(dict(np.load(tmp_path / "model.npz")))
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(target(dtrain.from_numpy(x)).detach().numpy(),
                               source(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)


FLAGS = ("is_cpu", "is_cuda", "is_mps", "is_xpu", "is_meta", "is_sparse", "is_quantized")


def test_placement_flags():
    """dcgan's ``if (input.is_cuda or input.is_xpu) and self.ngpu > 1`` takes the CPU branch."""
    ours, theirs = both(lambda m: [getattr(m.ones(2), flag) for flag in FLAGS])
    assert ours == [True] + [False] * (len(FLAGS) - 1)
    assert theirs is None or theirs == ours


INDEX_KEYS = [0, (0, 1), slice(0, 2), (slice(None), 0), (0, slice(1, 3)), (Ellipsis, -1), None,
              (None, 0), ([0, 1],), (slice(None), slice(None)), (slice(0, 3),),
              (Ellipsis, slice(1, None)), (0, Ellipsis, None), (slice(None, None, 2),)]
INDEX_NAMES = ["SelectBackward0", "SelectBackward0", "SliceBackward0", "SelectBackward0",
               "SliceBackward0", "SelectBackward0", "UnsqueezeBackward0", "SelectBackward0",
               "IndexBackward0", "AliasBackward0", "AliasBackward0", "SliceBackward0",
               "UnsqueezeBackward0", "SliceBackward0"]


def test_indexing_grad_fn_names():
    """``print(preds[0])`` shows torch's grad_fn: the last view the index applies."""
    ours, theirs = both(lambda m: [m.ones(3, 4, 5, requires_grad=True)[k].grad_fn.name()
                                   for k in INDEX_KEYS])
    assert ours == INDEX_NAMES
    assert theirs is None or theirs == ours


def running_count(torch):
    """Accuracy code that adds 0-d tensors into a Python number, then into itself."""
    correct = 0
    for pred, target in (([1, 0, 2], [1, 2, 2]), ([0, 0], [0, 0])):
        correct += torch.tensor(pred).eq(torch.tensor(target)).sum()
    total = torch.tensor(5) + 1
    total += 1
    return correct, total, type(total.numpy()).__name__


def test_zero_dim_results_stay_tensors_that_update_in_place():
    ours, theirs = both(running_count)
    assert (ours[0].item(), ours[1].item(), ours[2]) == (4, 7, "ndarray")
    assert theirs is None or (theirs[0].item(), theirs[1].item(), theirs[2]) == (4, 7, "ndarray")
