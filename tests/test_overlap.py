"""Overlap in the sharded reduction: a node's range slices leave while backward still runs.

The autograd engine reports each leaf as soon as its gradient is final
(``when_gradient_final``); a worker's ``RangePlane`` sends a range once every parameter it
covers is final, so the last layers' ranges are on the wire, and stepped by a reducer that has
the other nodes' slices, before the first layer's gradient exists. The bits stay those of the sequential path (``test_sharded.py`` compares whole runs).
"""

import os
import sys

import numpy as np
import zmq

import dtrain
import dtrain.nn.functional as F
from dtrain import nn, optim
from dtrain.autograd.engine import when_gradient_final
from dtrain.distributed import protocol as P
from dtrain.distributed.compute import SampleSource, ShardComputer
from dtrain.distributed.shards import Planner, assign

sys.path.insert(0, os.path.dirname(__file__))
from range_planes import owning_plane


class ThreeLayers(dtrain.Job):
    """An MLP of three Linear layers whose parameters are cut into six ranges."""

    batch_size = 32
    epochs = 1
    micro_shards = 4
    seed = 3
    param_ranges = 6

    def model(self):
        return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                             nn.Linear(16, 4))

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def optimizer(self, model):
        return optim.SGD(model.parameters(), lr=0.1)

    def train_data(self):
        rng = np.random.default_rng(0)
        return (rng.standard_normal((64, 12)).astype(np.float32),
                rng.integers(0, 4, 64).astype(np.int64))


def test_the_engine_reports_a_leaf_once_its_last_use_has_run():
    w1 = dtrain.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    w2 = dtrain.tensor(np.ones((3, 3)), requires_grad=True)
    x = dtrain.tensor(np.ones((1, 2)))
    heard = []
    with when_gradient_final(lambda leaf: heard.append((leaf, leaf.grad._data.copy()))):
        ((x @ w1) @ w2 @ w2).sum().backward()  # w2 feeds two nodes
    assert [leaf for leaf, _ in heard] == [w2, w1]  # the last layer first
    for leaf, grad in heard:  # reported with its whole gradient, not a partial one
        assert np.array_equal(grad, leaf.grad._data)
    heard.clear()
    (x @ w1).sum().backward()  # outside the block nothing is reported
    assert heard == []


def _ones(schema, plan, index: int, node) -> P.RangeGrads:
    """Another worker's slices of range ``index`` for ``node`` (all ones)."""
    grads = [np.ones(P.piece_spec(schema, p)[0], np.float32)
             for p in schema.ranges.ranges[index]]
    return P.RangeGrads(0, 1, 1, node, index, plan.node_count(node), grads)


def test_slices_and_new_parameters_of_the_last_layer_leave_before_the_first_layer_is_final():
    ctx = zmq.Context()
    job = ThreeLayers()
    plane, model, phases, settings = owning_plane(ctx, job, lambda msg: None)
    peer = ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    try:
        source = SampleSource(job.train_data(), settings.dtype)
        computer = ShardComputer(job, settings, model, source, phases)
        plan, ranges = Planner(len(source), settings).plan(0, 0, 0), plane.schema.ranges
        halves = assign(plan.micro_shards, ["a", "b"])  # two workers: this one computes "a"
        nodes, cover = halves["a"], halves["a"] + halves["b"]
        computer.node_values(plan, nodes)  # the layout's first pass, checked against shards
        peer.connect(plane.address)
        for index in range(len(ranges)):  # the other worker's slices are in already
            for node in halves["b"]:
                peer.send_multipart(P.pack(_ones(plane.schema, plan, index, node), "job"))
        while len(plane.reducer.early) < len(ranges) * len(halves["b"]):
            assert plane.mailbox.poll(10_000), "the other worker's slices never arrived"
            plane.poll()
        events = []
        send, take = plane._send_range, plane._take_params

        def recording_send(task, node, index, count, grads):
            events.append(("sent", index))
            send(task, node, index, count, grads)

        def recording_take(msg):
            events.append(("params", msg.range))
            take(msg)

        def computing(plan, nodes, on_final):
            def heard(param, node_grads):
                events.append(("final", param))
                on_final(param, node_grads)
            return computer.node_values(plan, nodes, 0, heard)

        plane._send_range, plane._take_params = recording_send, recording_take
        plane.computer = computing
        plane.task(P.StepTask(0, 0, 1, 0, 0, nodes, cover, [{"lr": 0.1}]), plan)
        last_layer = {i for i, pieces in enumerate(ranges.ranges)  # holds its weight
                      if any(p.param == 4 for p in pieces)}
        assert last_layer, ranges
        before = events[:events.index(("final", 0))]
        assert {index for kind, index in before if kind == "sent"} & last_layer, events
        assert {index for kind, index in before if kind == "params"} & last_layer, events
        sent = [index for kind, index in events if kind == "sent"]
        assert sorted(sent) == sorted(list(range(len(ranges))) * len(nodes))  # each once
        assert sorted(i for kind, i in events if kind == "params") == list(range(len(ranges)))
    finally:
        peer.close(0)
        plane.close()
        ctx.term()
