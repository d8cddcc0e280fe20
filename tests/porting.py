"""Run a ported PyTorch program twice, under dtrain and under torch, and record what to compare.

A program in ``examples/ported/`` is a dtrain script; its torch twin is the same text with
``torch`` for ``dtrain`` in the import lines, and nothing else. The two frameworks draw different
random numbers, so the dtrain run records its random draws and the torch run replays them:

- every layer's initial parameters (at the end of its ``reset_parameters``, in creation order),
- tensors from ``rand``/``randn``/``randint``/``*_like``/``multinomial``/... and the random
  fills of ``nn.init`` and ``Tensor.normal_``/``uniform_`` called on the program's own lines,
- dropout keep-masks, and the index orders of shuffling samplers.

Both runs record the program's ``.item()`` values and backward losses, its stdout and every
layer's final parameters.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

PROGRAMS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", "ported")
HELPERS = ("standins",)  # modules beside the programs that they import, not programs themselves
RANDOM_FACTORIES = ("rand", "randn", "randint", "rand_like", "randn_like", "randint_like",
                    "randperm", "normal", "bernoulli", "multinomial")
RANDOM_INITS = ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
                "kaiming_uniform_", "kaiming_normal_", "orthogonal_")


@dataclass
class Trace:
    """What one run of a program drew, printed and computed."""

    inits: list = field(default_factory=list)      # initial parameter arrays, one list per layer
    layers: list = field(default_factory=list)     # the layers, to read their final parameters
    draws: list = field(default_factory=list)      # random factory results (arrays)
    masks: list = field(default_factory=list)      # dropout keep-masks (bool arrays)
    orders: list = field(default_factory=list)     # sampler index orders
    values: list = field(default_factory=list)     # (what, float): .item() results and losses
    warnings: list = field(default_factory=list)   # the distinct UserWarning messages
    stdout: str = ""

    def final_parameters(self) -> list:
        """Every recorded layer's own parameters at the end of the run, as arrays."""
        return [[_array(p) for p in layer.parameters(recurse=False)] for layer in self.layers]


def torch_source(source: str) -> str:
    """The torch twin of a dtrain program: ``dtrain`` becomes ``torch`` in import lines only."""
    out = []
    for line in source.splitlines(keepends=True):
        if re.match(r"\s*(import|from)\s+dtrain\b", line):
            line = line.replace("import dtrain as torch", "import torch")
            line = re.sub(r"\bdtrain\b", "torch", line)
        out.append(line)
    return "".join(out)


def _array(t) -> np.ndarray:
    return t._data.copy() if hasattr(t, "_data") else t.detach().numpy().copy()


def _from_program(path: str) -> bool:
    """True when the caller of the patched function is a line of the program itself."""
    return sys._getframe(2).f_code.co_filename == path


_INHERITED = object()


def _subclasses(cls) -> set:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


class _Patcher:
    """Framework-agnostic recording and replaying hooks, undone on exit."""

    def __init__(self, fw, trace: Trace, replay: Trace | None, path: str):
        self.fw, self.trace, self.replay, self.path = fw, trace, replay, path
        self.undo: list = []
        self.seen: set = set()
        self.loading = False

    def set(self, owner, name, value):
        self.undo.append((owner, name, vars(owner).get(name, _INHERITED)))
        setattr(owner, name, value)

    def restore(self):
        for owner, name, value in reversed(self.undo):
            if value is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, value)

    def next(self, kind: str):
        items = getattr(self.replay, kind)
        index = len(getattr(self.trace, kind))
        if index >= len(items):
            raise AssertionError(f"the torch run made more {kind} than the dtrain run")
        return items[index]

    def install(self):
        for cls in {c for c in _subclasses(self.fw.nn.Module) if "reset_parameters" in vars(c)}:
            self.set(cls, "reset_parameters", self._reset(cls.__dict__["reset_parameters"]))
        for name in RANDOM_FACTORIES:
            if hasattr(self.fw, name):
                self.set(self.fw, name, self._factory(getattr(self.fw, name)))
        for name in RANDOM_INITS:
            if hasattr(self.fw.nn.init, name):
                self.set(self.fw.nn.init, name, self._filled(getattr(self.fw.nn.init, name)))
        for name in ("uniform_", "normal_"):
            self.set(self.fw.Tensor, name, self._filled(getattr(self.fw.Tensor, name)))
        self.set(self.fw, "load", self._loading(self.fw.load))
        tensor = self.fw.Tensor
        self.set(tensor, "item", self._value("item", tensor.item))
        self.set(tensor, "backward", self._value("backward", tensor.backward))
        if self.replay is None:
            self._record_dtrain_internals()
        else:
            self._replay_torch_internals()

    def _loading(self, original):
        """dtrain.load rebuilds a whole model through its classes' __init__ (torch unpickles):
        the layers it makes hold loaded weights, not draws to replay."""
        def load(*args, **kwargs):
            self.loading = True
            try:
                return original(*args, **kwargs)
            finally:
                self.loading = False
        return load

    def _reset(self, original):
        def reset_parameters(module):
            original(module)
            if self.loading or id(module) in self.seen:  # (or a subclass's reset calls its base's)
                return
            self.seen.add(id(module))
            params = list(module.parameters(recurse=False))
            if self.replay is not None:
                with self.fw.no_grad():
                    for p, a in zip(params, self.next("inits"), strict=True):
                        p.copy_(self.fw.from_numpy(a))
            self.trace.inits.append([_array(p) for p in params])
            self.trace.layers.append(module)
        return reset_parameters

    def _drawn(self, tensor):
        """A random draw of the program's, now in ``tensor``: the torch run overwrites it with
        the dtrain run's draw; both record it."""
        if self.replay is not None:
            with self.fw.no_grad():
                tensor.copy_(self.fw.from_numpy(self.next("draws")))
        self.trace.draws.append(_array(tensor))

    def _factory(self, original):
        def factory(*args, **kwargs):
            out = original(*args, **kwargs)
            if _from_program(self.path):
                self._drawn(out)
            return out
        return factory

    def _filled(self, original):
        """In-place random fills the program calls (``nn.init.normal_(m.weight, ...)``,
        ``m.weight.data.normal_(...)``): recorded, then replayed into the same tensor."""
        def fill(tensor, *args, **kwargs):
            out = original(tensor, *args, **kwargs)
            if _from_program(self.path):
                self._drawn(tensor)
            return out
        return fill

    def _value(self, what, original):
        def method(tensor, *args, **kwargs):
            if _from_program(self.path) and tensor.numel() == 1:
                self.trace.values.append((what, float(_array(tensor).reshape(()))))
            return original(tensor, *args, **kwargs)
        return method

    def _record_dtrain_internals(self):
        from dtrain.nn import dropout as dropout_module
        from dtrain.utils.data import sampler

        keep_mask = dropout_module._keep_mask

        def recorded_mask(*args):
            mask = keep_mask(*args)
            self.trace.masks.append(mask.copy())
            return mask
        self.set(dropout_module, "_keep_mask", recorded_mask)
        epoch_order = sampler.RandomSampler.order  # both the sampler and the loader use it

        def recorded_order(s, epoch):
            order = epoch_order(s, epoch)
            self.trace.orders.append(order.tolist())
            return order
        self.set(sampler.RandomSampler, "order", recorded_order)

    def _replayed_dropout(self, original, trailing: tuple):
        """torch's ``original`` dropout with dtrain's keep-mask, whose shape is the input's but
        for ``trailing`` axes of 1 (dropout2d draws once per channel: ``(1, 1)``)."""
        def dropout(input, p=0.5, training=True, inplace=False):
            if not training or p == 0.0:
                return original(input, p, training, inplace)
            mask = self.next("masks")
            self.trace.masks.append(mask)
            keep = self.fw.from_numpy(mask.reshape(mask.shape + trailing)).to(input.dtype)
            return input * (keep / (1.0 - p))
        return dropout

    def _replay_torch_internals(self):
        fw = self.fw
        functional = fw.nn.functional
        self.set(functional, "dropout", self._replayed_dropout(functional.dropout, ()))
        self.set(functional, "dropout2d", self._replayed_dropout(functional.dropout2d, (1, 1)))

        def replayed_order(s):
            order = self.next("orders")
            self.trace.orders.append(order)
            return iter(order)
        self.set(fw.utils.data.RandomSampler, "__iter__", replayed_order)


def run(name: str, framework: str, workdir: str, argv=(), replay: Trace | None = None) -> Trace:
    """Run ``examples/ported/NAME.py`` under ``framework`` ('dtrain' or 'torch') in ``workdir``."""
    with open(os.path.join(PROGRAMS, f"{name}.py")) as f:
        source = f.read()
    if framework == "torch":
        source = torch_source(source)
    path = os.path.join(workdir, f"{name}_{framework}.py")
    with open(path, "w") as f:
        f.write(source)
    fw = __import__(framework)
    trace = Trace()
    patcher = _Patcher(fw, trace, replay, path)
    out = io.StringIO()
    old_argv, old_cwd, old_threads = sys.argv, os.getcwd(), fw.get_num_threads()
    sys.argv = [path, *argv]
    sys.path.insert(0, PROGRAMS)  # the program runs from a copy: its helpers stay importable
    os.chdir(workdir)
    fw.set_num_threads(1)  # torch's own thread pool crawls on a shared 2-core machine
    try:
        patcher.install()
        with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runpy.run_path(path, run_name="__main__")
        # what the program is warned about (torch also warns that its __array__ lacks copy=)
        trace.warnings = sorted({str(w.message) for w in caught
                                 if issubclass(w.category, UserWarning)})
    finally:
        patcher.restore()
        fw.set_num_threads(old_threads)
        sys.argv = old_argv
        sys.path.remove(PROGRAMS)
        os.chdir(old_cwd)
    trace.stdout = out.getvalue()
    if replay is not None:
        for kind in ("inits", "draws", "masks", "orders"):
            assert len(getattr(trace, kind)) == len(getattr(replay, kind)), kind
    return trace


_NUMBER = re.compile(r"-?\d+\.?\d*(?:e[-+]?\d+)?")


def same_text(dtrain_out: str, torch_out: str, tol: float = 1e-4) -> None:
    """Assert two stdouts read the same: equal text, numbers equal to ``tol``, object addresses
    and the ``dtrain.``/``torch.`` prefix aside."""
    def split(text):
        text = re.sub(r" at 0x[0-9a-f]+", " at 0x?", text).replace("dtrain.", "torch.")
        return _NUMBER.split(text), [float(x) for x in _NUMBER.findall(text)]

    (words_a, nums_a), (words_b, nums_b) = split(dtrain_out), split(torch_out)
    if words_a != words_b or len(nums_a) != len(nums_b):
        import difflib

        diff = "\n".join(difflib.unified_diff(dtrain_out.splitlines(), torch_out.splitlines(),
                                              "dtrain", "torch", lineterm=""))
        raise AssertionError(f"the programs printed different text:\n{diff}")
    np.testing.assert_allclose(nums_a, nums_b, rtol=tol, atol=tol)
