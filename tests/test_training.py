"""End-to-end training on real data, PyTorch-style, single process and distributed."""

import os
import subprocess
import sys
import textwrap

import numpy as np

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim
from dtrain.data import DataLoader, TensorDataset
from dtrain.datasets import load_digits

ROOT = os.path.dirname(os.path.dirname(__file__))
CNN = os.path.join(ROOT, "examples", "cnn_digits.py")


def _accuracy(model, x, y):
    model.eval()
    with dtrain.no_grad():
        return float((model(dtrain.tensor(x))._data.argmax(axis=1) == y).mean())


def test_mlp_single_process_reaches_97_percent():
    dtrain.manual_seed(0)
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=25)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, seed=0)
    for _ in range(25):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        sched.step()
    assert _accuracy(model, xt, yt) >= 0.97


def test_small_cnn_loss_falls():
    dtrain.manual_seed(0)
    x, y = load_digits("train")
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    xb, yb = dtrain.tensor(x[:256]), dtrain.tensor(y[:256])
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_cnn_with_batch_norm_is_bit_identical_across_workers():
    reference, _ = dtrain.fit(CNN, workers=0, max_steps=12)
    ref = reference.state_dict()
    assert any("running_mean" in k for k in ref)
    assert float(ref["2.running_mean"].abs().sum()) > 0  # running stats did move
    for workers in (1, 3):
        model, _ = dtrain.fit(CNN, workers=workers, max_steps=12)
        state = model.state_dict()
        assert list(state) == list(ref)
        for k in ref:
            assert np.array_equal(state[k], ref[k]), f"{k} differs with {workers} workers"


LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    import dtrain, dtrain.nn as nn, dtrain.nn.functional as F
    from dtrain import optim
    from dtrain.datasets import load_digits

    steps, stop_at, ckpt, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    x, y = load_digits("train")
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    start = 0
    if stop_at < 0:  # resume
        state = dtrain.load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        dtrain.set_rng_state(state["rng"])
        start = state["step"]
    rng = np.random.default_rng(1)
    batches = [rng.choice(len(x), 32, replace=False) for _ in range(steps)]
    for step in range(start, steps):
        if step == stop_at:
            dtrain.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "rng": dtrain.get_rng_state(),
                         "step": step}, ckpt)
            sys.exit(0)
        opt.zero_grad()
        loss = F.cross_entropy(model(dtrain.tensor(x[batches[step]])), dtrain.tensor(y[batches[step]]))
        loss.backward()
        opt.step()
        sched.step()
    dtrain.save(model.state_dict(), out)
""")


def test_checkpointed_loop_resumed_in_a_new_process_is_identical(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    ckpt, full, resumed = (str(tmp_path / n) for n in ("ckpt", "full", "resumed"))

    def run(*args):
        subprocess.run([sys.executable, str(script), *map(str, args)], check=True, timeout=120)

    run(30, 1000, ckpt, full)  # uninterrupted
    run(30, 13, ckpt, "-")  # stops after saving at step 13
    run(30, -1, ckpt, resumed)  # a new process continues from the checkpoint
    a, b = dtrain.load(full), dtrain.load(resumed)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
