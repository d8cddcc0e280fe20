"""``GraphBuilder``: collects ONNX nodes, initializers and unique value names during a trace.

Nodes are kept as plain records until ``build``, so graph outputs can be renamed to the names
the caller asked for without an extra Identity node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ExportError(RuntimeError):
    """The model cannot be expressed in ONNX (an op or layer without converter, bad arguments)."""


@dataclass
class NodeRecord:
    """One ONNX node before it becomes a protobuf: its op type, value names and attributes."""

    op_type: str
    inputs: list
    outputs: list
    name: str
    attrs: dict = field(default_factory=dict)


class GraphBuilder:
    """Unique names, nodes and constant initializers of the graph being traced."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[NodeRecord] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.scope = ""  # module path of the layer being converted, prefixes node names
        self._taken: set[str] = set()
        self._counts: dict[str, int] = {}
        self._small: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        """A value or node name not used before, derived from ``hint``."""
        hint = hint or "v"
        if hint not in self._taken:
            self._taken.add(hint)
            return hint
        n = self._counts.get(hint, 0)
        while f"{hint}_{n}" in self._taken:
            n += 1
        self._counts[hint] = n + 1
        name = f"{hint}_{n}"
        self._taken.add(name)
        return name

    def reserve(self, name: str) -> None:
        """Mark a caller-chosen name (a graph input) as taken; duplicates are an error."""
        if name in self._taken:
            raise ExportError(f"ONNX export: the name {name!r} is used twice")
        self._taken.add(name)

    def op(self, op_type: str, inputs, n_outputs: int = 1, **attrs):
        """Append a node; returns its output name (or a list of names when ``n_outputs`` > 1)."""
        prefix = f"{self.scope}/" if self.scope else ""
        outputs = [self.fresh(f"{prefix}{op_type}_out") for _ in range(n_outputs)]
        name = self.fresh(f"{prefix}{op_type}")
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(NodeRecord(op_type, list(inputs), outputs, name, attrs))
        return outputs[0] if n_outputs == 1 else outputs

    def const(self, value, dtype=None, name: str | None = None) -> str:
        """An initializer holding ``value``; small constants are shared by value."""
        array = np.asarray(value, dtype=dtype)
        if array.dtype.kind not in "fiub":
            raise ExportError(f"ONNX export: cannot store a constant of dtype {array.dtype}")
        key = None
        if name is None and array.size <= 16:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._small:
                return self._small[key]
        out = self.fresh(name or "const")
        self.initializers[out] = np.array(array, order="C")  # ascontiguousarray makes 0-d 1-d
        if key is not None:
            self._small[key] = out
        return out

    def ints(self, values) -> str:
        """A 1-D int64 constant (shapes, axes, pads as ONNX takes them as inputs)."""
        return self.const(np.asarray(list(values), dtype=np.int64).reshape(-1))

    def rename(self, old: str, new: str) -> None:
        """Give a node output a new name everywhere it appears."""
        for node in self.nodes:
            node.inputs = [new if v == old else v for v in node.inputs]
            node.outputs = [new if v == old else v for v in node.outputs]

    def produced(self) -> set[str]:
        """Names written by some node."""
        return {v for node in self.nodes for v in node.outputs}

    def to_proto(self, graph_name: str, inputs, outputs):
        """The ``onnx.GraphProto`` of the recorded nodes (``inputs``/``outputs``: ValueInfoProtos)."""
        from onnx import helper, numpy_helper

        nodes = [helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, **n.attrs)
                 for n in self.nodes]
        inits = [numpy_helper.from_array(a, name) for name, a in self.initializers.items()]
        return helper.make_graph(nodes, graph_name, inputs, outputs, initializer=inits)
