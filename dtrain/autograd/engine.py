"""Reverse-mode engine: walks the recorded nodes from the outputs back to the leaves.

The walk is iterative (Kahn's algorithm over the reachable nodes), so graphs of any depth work,
and each node's closure is dropped after use unless the graph is retained, which frees the saved
arrays as backward goes. Gradient arrays produced by closures are adopted without copying when
they are fresh; arrays that are views or handed to two places are copied before they become a
leaf's ``.grad``, so in-place accumulation never leaks from one tensor into another.
"""

from __future__ import annotations

import operator
import threading
import warnings
from contextlib import contextmanager

import numpy as np

from . import anomaly
from .grad_mode import no_grad
from .graph_engine import _accumulate as accumulate_graph
from .graph_engine import _add_to, _pass_to, run_backward_graph
from .tensor import Tensor

_FREED = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you call "
    ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through "
    "the graph a second time or if you need to access saved tensors after calling backward."
)
_NO_GRAD = "element {} of tensors does not require grad and does not have a grad_fn"

_hooks: dict = {}  # id(tensor) -> (weakref(tensor), [hooks])
_final = threading.local()  # .listener: the callback of ``when_gradient_final``, per thread


@contextmanager
def when_gradient_final(listener):
    """Within this block (this thread), ``listener(leaf)`` runs as soon as a backward pass has
    run every node that feeds gradient into ``leaf``: its gradient for this pass is final.

    PyTorch's ``register_post_accumulate_grad_hook`` for a whole pass: a caller can ship a
    parameter's gradient while backward goes on to earlier layers. The gradient is wherever
    the pass put it (``.grad``, or a ``row_segments`` pass's per-shard sums). Leaves that are
    themselves outputs, and ``autograd.grad`` (which writes no leaf), are not reported.
    """
    previous = getattr(_final, "listener", None)
    _final.listener = listener
    try:
        yield
    finally:
        _final.listener = previous


def _leaf_uses(nodes) -> dict:
    """id(leaf) -> how many input slots of ``nodes`` pass gradient to that leaf."""
    uses: dict = {}
    for node in nodes:
        for t, child in zip(node.inputs, node.edges):
            if child is None and t.requires_grad:
                uses[id(t)] = uses.get(id(t), 0) + 1
    return uses


def _count_down(node, uses: dict, listener) -> None:
    """``node`` has run: report the leaves it was the last to feed."""
    for t, child in zip(node.inputs, node.edges):
        if child is None and t.requires_grad:
            uses[id(t)] -= 1
            if uses[id(t)] == 0:
                listener(t)


def _forget_hooks(ref, hooks=_hooks) -> None:
    """A hooked tensor died: drop its entry (only its own: the id may already be reused).

    ``hooks`` is bound at definition, since at interpreter exit the module global is None."""
    for key, entry in list(hooks.items()):
        if entry[0] is ref:
            del hooks[key]


def register_hook(tensor: Tensor, hook):
    """Register ``hook(grad) -> Tensor | None`` on ``tensor``; returns a handle with ``remove()``."""
    import weakref

    if not tensor.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    key = id(tensor)
    entry = _hooks.get(key)
    if entry is None or entry[0]() is not tensor:
        entry = (weakref.ref(tensor, _forget_hooks), [])
        _hooks[key] = entry
        if tensor.grad_fn is not None:
            tensor.grad_fn.retained = tensor.grad_fn.retained or weakref.ref(tensor)
    entry[1].append(hook)

    class _Handle:
        def remove(self):
            if hook in entry[1]:
                entry[1].remove(hook)

    return _Handle()


def _apply_hooks(tensor: Tensor, grad: np.ndarray) -> np.ndarray:
    entry = _hooks.get(id(tensor))
    if entry is None or entry[0]() is not tensor:
        return grad
    for hook in list(entry[1]):
        result = hook(Tensor._wrap(grad))
        if result is not None:
            grad = result._data if isinstance(result, Tensor) else np.asarray(result)
    return grad


def _root_gradients(outputs, grad_outputs):
    grads = []
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            raise RuntimeError(_NO_GRAD.format(i))
        g = None if grad_outputs is None else grad_outputs[i]
        if g is None:
            if out._data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            g = np.ones(out._data.shape, dtype=out._data.dtype)
        else:
            g = g._data if isinstance(g, Tensor) else np.asarray(g, dtype=out._data.dtype)
            if g.shape != out._data.shape:
                raise RuntimeError(
                    f"Mismatch in shape: grad_output[{i}] has a shape of {tuple(g.shape)} and "
                    f"output[{i}] has a shape of {tuple(out.shape)}."
                )
        grads.append(g)
    return grads


def _topological_nodes(roots):
    """Reachable nodes and, for each, how many reachable nodes feed gradients into it."""
    dependents = {}
    stack = [n for n in roots if n is not None]
    for n in stack:
        dependents.setdefault(n, 0)
    seen = set(stack)
    while stack:
        node = stack.pop()
        if node.backward_fn is None:
            raise RuntimeError(_FREED)
        for t, child in zip(node.inputs, node.edges):
            if child is not None and t.requires_grad:
                dependents[child] = dependents.get(child, 0) + 1
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
    return dependents


def run_backward(outputs, grad_outputs, retain_graph: bool, capture=None) -> dict | None:
    """Propagate from ``outputs``; accumulate into leaves' ``.grad``, or into ``capture`` tensors.

    With ``capture`` (a list of tensors, for ``autograd.grad``) nothing is written to ``.grad``;
    the gradients of the captured tensors are returned by id instead.
    """
    root_grads = _root_gradients(outputs, grad_outputs)
    captured = {} if capture is not None else None
    capture_ids = {id(t) for t in capture} if capture is not None else None
    node_of = {id(t.grad_fn): t for t in capture if t.grad_fn is not None} if capture else {}

    def store_leaf(t: Tensor, g: np.ndarray, shared: bool):
        hooked = _apply_hooks(t, g)
        shared = shared or hooked is not g
        g = hooked
        if captured is not None:
            if id(t) in capture_ids:
                prev = captured.get(id(t))
                captured[id(t)] = g if prev is None else prev + g
            return
        if g.dtype != t._data.dtype:
            g = g.astype(t._data.dtype)
        if t.grad is None:
            if shared or g.base is not None or not g.flags.writeable:
                g = g.copy()
            t.grad = Tensor._wrap(g)
        else:
            t.grad._data += g

    buffers: dict = {}
    roots = []
    for out, g in zip(outputs, root_grads):
        if out.grad_fn is None:
            store_leaf(out, g, True)
            continue
        roots.append(out.grad_fn)
        _add_to(buffers, out.grad_fn, g, operator.add)

    dependents = _topological_nodes(roots)
    listener = getattr(_final, "listener", None) if captured is None else None
    uses = _leaf_uses(dependents) if listener is not None else None
    ready = [n for n in roots if dependents.get(n, 0) == 0]
    ready = list(dict.fromkeys(ready))
    # inf and nan in gradients (sqrt at 0, division by 0) come silently, as in torch
    with no_grad(), np.errstate(all="ignore"):
        while ready:
            node = ready.pop()
            g = buffers.pop(node)
            if node.retained is not None:
                t = node.retained()
                if t is not None:
                    g = _apply_hooks(t, g)
                    if captured is not None and id(t) in capture_ids:
                        captured[id(t)] = g
                    elif t._retains_grad and captured is None:
                        if t.grad is None:
                            t.grad = Tensor._wrap(g.copy())
                        else:
                            t.grad._data += g
            elif captured is not None and id(node) in node_of:
                captured[id(node_of[id(node)])] = g
            fn = node.backward_fn
            if fn is None:
                raise RuntimeError(_FREED)
            grads = fn(g)
            if anomaly._enabled[0]:
                anomaly.check_gradients(node._name, grads)
            if not retain_graph:
                node.backward_fn = node.graph_fn = None
            for i, (t, child, gi) in enumerate(zip(node.inputs, node.edges, grads)):
                if gi is None or not t.requires_grad:
                    continue
                if child is None:
                    # a leaf may adopt a fresh array; one passed through or returned twice is copied
                    shared = gi is g or any(gi is other for other in grads[:i])
                    store_leaf(t, gi, shared)
                    continue
                _pass_to(child, gi, buffers, dependents, ready, operator.add)
            if uses is not None:
                _count_down(node, uses, listener)
            if not retain_graph:
                node.inputs = node.edges = ()
    return captured


_CYCLE = (
    "Using backward() with create_graph=True will create a reference cycle between the parameter "
    "and its gradient which can cause a memory leak. We recommend using autograd.grad when "
    "creating the graph to avoid this. If you have to use this function, make sure to reset the "
    ".grad fields of your parameters to None after use to break the cycle and avoid the leak."
)


def _tensor_list(tensors, name: str) -> list:
    if isinstance(tensors, Tensor):
        return [tensors]
    if type(tensors) is dict:
        tensors = tensors.values()
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(f"`inputs` argument to `{name}()` cannot be empty.")
    return tensors


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False,
             grad_variables=None, inputs=None) -> None:
    """Compute and accumulate gradients of ``tensors`` into the leaves' ``.grad``.

    With ``create_graph=True`` each ``.grad`` is a Tensor with a graph (``retain_graph`` then
    defaults to True), as ``torch.autograd.backward``.
    """
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_variables is not None:
        if grad_tensors is not None:
            raise RuntimeError("`grad_tensors` and `grad_variables` (deprecated) arguments both "
                               "passed to `backward()`. Please only use `grad_tensors`.")
        warnings.warn("`grad_variables` is deprecated. Use `grad_tensors` instead.",
                      FutureWarning, stacklevel=2)
        grad_tensors = grad_variables
    if grad_tensors is not None and not isinstance(grad_tensors, (list, tuple)):
        grad_tensors = [grad_tensors]
    if inputs is not None:
        inputs = _tensor_list(inputs, "backward")
    if retain_graph is None:
        retain_graph = create_graph
    if create_graph:
        warnings.warn(_CYCLE, UserWarning, stacklevel=3)
        captured = run_backward_graph(tensors, grad_tensors, inputs, bool(retain_graph))
        for t in inputs or ():
            if captured.get(id(t)) is not None:
                accumulate_graph(t, captured[id(t)])
        return
    if inputs is not None:
        captured = run_backward(tensors, grad_tensors, bool(retain_graph), capture=inputs)
        for t in inputs:
            g = captured.get(id(t))
            if g is None:
                continue
            if t.grad is None:
                t.grad = Tensor._wrap(np.array(g, dtype=t._data.dtype, copy=True))
            else:
                t.grad._data += g
        return
    run_backward(tensors, grad_tensors, bool(retain_graph))


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """Return d(outputs)/d(inputs) without touching any ``.grad``, as ``torch.autograd.grad``.

    With ``create_graph=True`` the results carry a graph and can be differentiated again.
    ``inputs`` may be a dict (of named parameters): the result is then a dict with its keys.
    """
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when "
                         "materialize_grads=True, but got: allow_unused=False.")
    if allow_unused is None:
        allow_unused = materialize_grads
    if not only_inputs:
        warnings.warn("only_inputs argument is deprecated and is ignored now (defaults to True). "
                      "To accumulate gradient for other parts of the graph, please use "
                      "torch.autograd.backward.", FutureWarning, stacklevel=2)
    keys = list(inputs.keys()) if type(inputs) is dict else None
    if is_grads_batched:
        result = _batched_grad(outputs, _tensor_list(inputs, "grad"), grad_outputs, retain_graph,
                               create_graph, allow_unused, materialize_grads)
        return dict(zip(keys, result)) if keys is not None else result
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = _tensor_list(inputs, "grad")
    if grad_outputs is not None and not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    if create_graph:
        captured = run_backward_graph(outputs, grad_outputs, inputs, bool(retain_graph))
    else:
        captured = run_backward(outputs, grad_outputs, bool(retain_graph), capture=inputs)
    result = []
    for i, t in enumerate(inputs):
        g = captured.get(id(t))
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    "One of the differentiated Tensors appears to not have been used in the graph. "
                    "Set allow_unused=True if this is the desired behavior."
                )
            if materialize_grads:
                g = Tensor._wrap(np.zeros_like(t._data), requires_grad=bool(create_graph))
            result.append(g)
        elif create_graph:
            result.append(g)
        else:
            result.append(Tensor._wrap(np.array(g, dtype=t._data.dtype, copy=True)))
    if keys is not None:
        return dict(zip(keys, result))
    return tuple(result)


def _batched_grad(outputs, inputs, grad_outputs, retain_graph, create_graph, allow_unused,
                  materialize_grads) -> tuple:
    """``grad(is_grads_batched=True)``: one backward per leading index of the ``grad_outputs``
    (torch vectorizes this with vmap), the results stacked along a new first dimension."""
    from .tensor import stack

    grad_outputs = [grad_outputs] if isinstance(grad_outputs, Tensor) else list(grad_outputs)
    count = grad_outputs[0].shape[0]
    rows = []
    for b in range(count):
        rows.append(grad(outputs, inputs, [go[b] for go in grad_outputs],
                         retain_graph=True if b < count - 1 else retain_graph,
                         create_graph=create_graph, allow_unused=allow_unused,
                         materialize_grads=materialize_grads))
    return tuple(None if column[0] is None else stack(list(column), 0) for column in zip(*rows))
