"""The ``create_graph=True`` backward: gradients are Tensors, computed by differentiable ops.

The first-order engine (``engine.run_backward``) keeps its NumPy closures and stays as it is.
This walk visits the same nodes but calls each node's ``graph_fn``, the op's backward written in
Tensor ops, with grad mode on, so the gradients it returns carry a graph of their own and can be
differentiated again (gradient penalties, Hessian-vector products). An op without a ``graph_fn``
raises ``NotImplementedError`` naming it when the walk reaches it, never a silent wrong answer.

With ``capture`` (``autograd.grad``) only the nodes that lead to a captured tensor run, as in
torch: the parts of the graph upstream of the inputs are never differentiated.
"""

from __future__ import annotations

import numpy as np

from . import tensor as _t
from .grad_mode import enable_grad
from .tensor import Tensor

_MODIFIED = (
    "one of the variables needed for gradient computation has been modified by an inplace "
    "operation: the input of {} changed after it was recorded; create_graph=True needs its "
    "original value"
)


def _no_double_backward(node) -> NotImplementedError:
    return NotImplementedError(
        f"create_graph=True: {node.name()} has no double backward in dtrain yet (its gradient "
        "cannot be differentiated again); use create_graph=False or express the op with "
        "supported ops"
    )


def _hooked(t: Tensor, g: Tensor) -> Tensor:
    """``g`` after ``t``'s tensor hooks, which receive and return Tensors."""
    from .engine import _hooks

    entry = _hooks.get(id(t))
    if entry is None or entry[0]() is not t:
        return g
    for hook in list(entry[1]):
        result = hook(g)
        if result is not None:
            g = result if isinstance(result, Tensor) else Tensor._wrap(np.asarray(result))
    return g


def _copy(g: Tensor) -> Tensor:
    """A differentiable copy with its own memory (what a leaf's ``.grad`` first holds)."""
    return _t._op(g._data.copy(), (g,), lambda gg: (gg,), "CopyBackwards", graph=lambda gg: (gg,))


def _accumulate(t: Tensor, g: Tensor) -> None:
    """``t.grad`` becomes a copy of ``g``, or ``t.grad + g`` out of place (torch's rule)."""
    if g._data.dtype != t._data.dtype:
        g = g.type(t._data.dtype)
    t.grad = _copy(g) if t.grad is None else _t.add(t.grad, g)


def _root_tensors(outputs, grad_outputs) -> list:
    from .engine import _root_gradients

    arrays = _root_gradients(outputs, grad_outputs)
    roots = []
    for i, arr in enumerate(arrays):
        given = None if grad_outputs is None else grad_outputs[i]
        roots.append(given if isinstance(given, Tensor) else Tensor._wrap(arr))
    return roots


def _walk(roots):
    """Every reachable node, children after parents' discovery, and each node's child nodes."""
    from .engine import _FREED

    order, children, stack = [], {}, [n for n in dict.fromkeys(roots)]
    seen = set(stack)
    while stack:
        node = stack.pop()
        if node.backward_fn is None:
            raise RuntimeError(_FREED)
        order.append(node)
        kids = [c for t, c in zip(node.inputs, node.edges) if c is not None and t.requires_grad]
        children[node] = kids
        for c in kids:
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return order, children


def _needed(order, children, capture_ids, capture_nodes):
    """The nodes whose backward leads to a captured tensor (all of them without capture)."""
    if capture_ids is None:
        return set(order)
    parents = dict.fromkeys(order, 0)
    for node in order:
        for c in children[node]:
            parents[c] += 1
    topo = [n for n in order if parents[n] == 0]
    for node in topo:  # grows while it is walked: Kahn's order, parents before children
        for c in children[node]:
            parents[c] -= 1
            if parents[c] == 0:
                topo.append(c)
    needed = set()
    for node in reversed(topo):
        if (node in capture_nodes
                or any(c in needed for c in children[node])
                or any(c is None and id(t) in capture_ids
                       for t, c in zip(node.inputs, node.edges))):
            needed.add(node)
    return needed


def _runs(node, needed, capture_ids) -> bool:
    """Whether the node's backward must run (a captured node may just be read)."""
    if capture_ids is None:
        return True
    return any(c in needed if c is not None else id(t) in capture_ids
               for t, c in zip(node.inputs, node.edges) if t.requires_grad)


def _add_to(buffers: dict, node, g, add) -> None:
    """Adds ``g`` to the gradient ``buffers`` holds for ``node`` with ``add``, or starts it."""
    prev = buffers.get(node)
    buffers[node] = g if prev is None else add(prev, g)


def _pass_to(child, g, buffers: dict, dependents: dict, ready: list, add) -> None:
    """Adds ``g`` to ``child``'s gradient; ``child`` is ready once its last dependent has run."""
    _add_to(buffers, child, g, add)
    dependents[child] -= 1
    if dependents[child] == 0:
        ready.append(child)


def run_backward_graph(outputs, grad_outputs, capture=None, retain_graph: bool = True):
    """Propagate Tensor gradients from ``outputs``; as ``engine.run_backward`` otherwise."""
    from .segments import _local as _segments_local

    seg = getattr(_segments_local, "segments", None)
    if seg is not None:  # the graph closures reduce over the whole batch, not per micro-shard
        seg.refuse("create_graph=True inside a micro-shard pass")
    roots_g = _root_tensors(outputs, grad_outputs)
    captured = {} if capture is not None else None
    capture_ids = {id(t) for t in capture} if capture is not None else None
    node_of = {t.grad_fn: t for t in capture if t.grad_fn is not None} if capture else {}

    def store_leaf(t: Tensor, g: Tensor):
        g = _hooked(t, g)
        if captured is None:
            _accumulate(t, g)
        elif id(t) in capture_ids:
            prev = captured.get(id(t))
            captured[id(t)] = g if prev is None else _t.add(prev, g)

    buffers: dict = {}
    roots = []
    for out, g in zip(outputs, roots_g):
        if out.grad_fn is None:
            store_leaf(out, g)
            continue
        roots.append(out.grad_fn)
        _add_to(buffers, out.grad_fn, g, _t.add)

    order, children = _walk(roots)
    needed = _needed(order, children, capture_ids, set(node_of))
    dependents = dict.fromkeys(needed, 0)
    for node in needed:
        if _runs(node, needed, capture_ids):
            for c in children[node]:
                if c in needed:
                    dependents[c] += 1
    ready = [n for n in dict.fromkeys(roots) if n in needed and dependents[n] == 0]
    with enable_grad(), np.errstate(all="ignore"):
        while ready:
            node = ready.pop()
            g = buffers.pop(node)
            g = _retained(node, g, captured, capture_ids, node_of)
            if not _runs(node, needed, capture_ids):
                continue
            grads = _node_grads(node, g)
            if not retain_graph:
                node.backward_fn = node.graph_fn = None
            for t, child, gi in zip(node.inputs, node.edges, grads):
                if gi is None or not t.requires_grad:
                    continue
                if child is None:
                    store_leaf(t, gi)
                    continue
                if child not in needed:
                    continue
                _pass_to(child, gi, buffers, dependents, ready, _t.add)
            if not retain_graph:
                node.inputs = node.edges = ()
    return captured


def _retained(node, g, captured, capture_ids, node_of):
    """Hooks, ``retain_grad`` and capture of the non-leaf tensor ``node`` produced."""
    t = node.retained() if node.retained is not None else None
    if t is not None:
        g = _hooked(t, g)
        if t._retains_grad and captured is None:
            _accumulate(t, g)
    if captured is not None and node in node_of:
        captured[id(node_of[node])] = g
    return g


def _node_grads(node, g: Tensor) -> tuple:
    if node.backward_fn is None:
        from .engine import _FREED

        raise RuntimeError(_FREED)
    if node.graph_fn is None:
        raise _no_double_backward(node)
    for t, edge in zip(node.inputs, node.edges):
        if t.grad_fn is not edge:
            raise RuntimeError(_MODIFIED.format(node.name()))
    return node.graph_fn(g)


def vjp_via(decomposition, inputs: tuple, g: Tensor) -> tuple:
    """A fused op's graph backward: differentiate ``decomposition(*inputs)``, the same function
    in differentiable ops, at ``g``; one result per input (None where no grad is needed).

    Aliases of the inputs stand for them, so the walk stops there and gives the op's partial
    derivatives, not the total ones through paths that join upstream.
    """
    aliases = tuple(_alias(t) if isinstance(t, Tensor) and t.requires_grad else t
                    for t in inputs)
    with enable_grad():
        out = decomposition(*aliases)
    wanted = [a for a in aliases if isinstance(a, Tensor) and a.requires_grad]
    if not out.requires_grad or not wanted:
        return tuple(None for _ in inputs)
    got = run_backward_graph([out], [g], capture=wanted)
    return tuple(got.get(id(a)) if isinstance(a, Tensor) and a.requires_grad else None
                 for a in aliases)


def _alias(t: Tensor) -> Tensor:
    return _t._op(t._data, (t,), lambda g: (g,), "AliasBackward0", graph=lambda g: (g,))


def linear_graph(forward, backward_fn, name: str):
    """The graph backward of an op linear in its one input (pooling, resampling, shuffles).

    Its gradient is the NumPy ``backward_fn`` applied to ``g``, recorded as an op whose own
    backward is ``forward`` (the op itself, a function of a Tensor) again: a linear map's
    adjoint's adjoint is the map.
    """

    def graph(g: Tensor) -> tuple:
        def back(gg):
            return (forward(Tensor._wrap(gg))._data,)

        value = backward_fn(g._data)[0]
        return (_t._op(value, (g,), back, name, graph=lambda gg: (forward(gg),)),)

    return graph
