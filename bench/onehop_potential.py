"""What a one-hop local all-reduce would give small jobs (a design measurement for issue 14).

Today every step of local workers is a round through the coordinator: TASKs out, each worker's
GRADS in, the coordinator's tree sum and optimizer step, then the next TASKs. This script runs
the alternative on examples/digits.py without a coordinator: two forked processes each compute
their half of the micro-shards with dtrain's own ShardComputer, swap their node values through
shared memory with a one-byte pipe signal, and each finishes the tree and steps its own replica
(Trainer.reduce and the job's optimizer and scheduler), so both replicas must stay bit-identical
to a one-process loop of the same code. A second variant adds what a coordinator would still do
in that design, in this process: follow as a passive replica (read both node values of every
step, reduce and step its own copy, write a metrics line), with the workers reusing a slot only
once it acknowledged the step the slot held. Validation and checkpoints are left out, and
nothing here handles a fault: it measures the step loop only.

Printed per round: ms per step for the one-process loop and for both variants (worker 0's
loop), their ratios, and whether every replica holds the one-process result's bits.
Run: ``python bench/onehop_potential.py [--epochs N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import time
import traceback

import numpy as np

from dtrain.distributed.compute import ShardComputer, ShardValue
from dtrain.distributed.job import load_job
from dtrain.distributed.shards import assign
from dtrain.distributed.trainer import Trainer
from dtrain.process import set_num_threads

DIGITS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                      "digits.py")


def replica():
    """A trainer (model, optimizer, scheduler, data, planner) and a computer over its model."""
    job, _ = load_job(DIGITS, None)
    trainer = Trainer(job, job.settings())
    return trainer, ShardComputer(job, trainer.settings, trainer.model, trainer.train_source,
                                  trainer.phases)


def train(trainer, epochs: int, values_of) -> float:
    """Seconds per step of ``epochs`` epochs, each step's node values from ``values_of``."""
    per_epoch, step = trainer.batches_per_epoch(), 0
    phase = trainer.phases[0]
    start = time.perf_counter()
    for epoch in range(epochs):
        for batch in range(per_epoch):
            plan = trainer.plan(epoch, batch, step)
            trainer.reduce(plan, values_of(plan, step), 0)
            phase.optimizer.step()
            step += 1
        if phase.scheduler is not None:
            phase.scheduler.step()
    return (time.perf_counter() - start) / step


def flat(trainer) -> np.ndarray:
    return np.concatenate([p._data.ravel() for p in trainer.model.parameters()])


def one_process(epochs: int) -> tuple[float, np.ndarray]:
    trainer, computer = replica()
    seconds = train(trainer, epochs, lambda plan, step: computer.node_values(
        plan, [(0, plan.micro_shards)], 0))
    return seconds, flat(trainer)


class Exchange:
    """Each rank's node value of a step in shared memory, two steps' slots per rank (a rank
    rewrites a slot only after the peer's signal for the next step, so after its read)."""

    def __init__(self, shapes: list, dtype):
        self.shapes = shapes
        self.sizes = [int(np.prod(s)) for s in shapes]
        n = sum(self.sizes)
        self.memory = mmap.mmap(-1, 2 * 2 * (n * np.dtype(dtype).itemsize + 16))
        grads_bytes = 2 * 2 * n * np.dtype(dtype).itemsize
        self.grads = np.frombuffer(self.memory, dtype, 2 * 2 * n).reshape(2, 2, n)
        self.head = np.frombuffer(self.memory, np.float64, 2 * 2 * 2,
                                  offset=grads_bytes).reshape(2, 2, 2)

    def put(self, rank: int, step: int, value) -> None:
        slot, off = self.grads[rank, step % 2], 0
        for g, n in zip(value.grads, self.sizes):
            slot[off:off + n] = g.ravel()
            off += n
        self.head[rank, step % 2] = (value.count, value.loss_sum)

    def get(self, rank: int, step: int):
        slot, off, grads = self.grads[rank, step % 2], 0, []
        for shape, n in zip(self.shapes, self.sizes):
            grads.append(slot[off:off + n].reshape(shape).copy())
            off += n
        count, loss_sum = self.head[rank, step % 2]
        return ShardValue(grads=grads, loss_sum=float(loss_sum), count=int(count), bn_stats={})


def one_hop(epochs: int, coordinator: bool) -> tuple[float, list]:
    """Two forked workers; with ``coordinator``, this process follows as a passive replica: it
    reads every step's two node values, reduces and steps its own copy and writes a metrics
    line, and a worker reuses a slot only once it acknowledged the step that slot held.
    Returns (worker 0's seconds per step, [each worker's parameters(, this process's)])."""
    params = replica()[0].params
    shapes, dtype = [p._data.shape for p in params], params[0]._data.dtype
    size = sum(int(np.prod(s)) for s in shapes)
    exchange = Exchange(shapes, dtype)
    results = mmap.mmap(-1, 2 * (size * np.dtype(dtype).itemsize + 8))
    peer = [os.pipe(), os.pipe()]  # peer[r]: rank r's "my value is in" to the other rank
    told = [os.pipe(), os.pipe()]  # told[r]: the same, to this process
    acks = [os.pipe(), os.pipe()]  # acks[r]: this process has read a step of rank r
    children = []
    for rank in (0, 1):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _worker(rank, epochs, exchange, peer, told if coordinator else None,
                        acks if coordinator else None, results, size, dtype)
                code = 0
            except BaseException:  # noqa: BLE001 - shown, then the exit code says it
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    try:
        mine = None
        if coordinator:
            trainer, _ = replica()
            log = open(os.devnull, "w")  # noqa: SIM115 - the metrics line's cost, not its file

            def values_of(plan, step):
                nodes = assign(plan.micro_shards, [0, 1])
                for r in (0, 1):
                    os.read(told[r][0], 1)
                values = {nodes[r][0]: exchange.get(r, step) for r in (0, 1)}
                for r in (0, 1):
                    os.write(acks[r][1], b"a")
                return values

            def logged(plan, step):
                values = values_of(plan, step)
                loss = sum(v.loss_sum for v in values.values()) / plan.size
                log.write(json.dumps({"type": "step", "step": step, "loss": loss}) + "\n")
                return values

            with log:
                train(trainer, epochs, logged)
            mine = flat(trainer)
    finally:
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    if codes != [0, 0]:
        raise RuntimeError(f"a worker failed: exit codes {codes}")
    stride = size * np.dtype(dtype).itemsize + 8
    seconds = float(np.frombuffer(results, np.float64, 1, offset=size * np.dtype(dtype).itemsize)[0])
    found = [np.frombuffer(results, dtype, size, offset=r * stride).copy() for r in (0, 1)]
    return seconds, found + ([mine] if mine is not None else [])


def _worker(rank, epochs, exchange, peer, told, acks, results, size, dtype) -> None:
    """One forked worker's loop; its parameters (and rank 0's seconds per step) into
    ``results``."""
    trainer, computer = replica()

    def values_of(plan, step):
        nodes = assign(plan.micro_shards, [0, 1])
        (node, value), = computer.node_values(plan, nodes[rank], 0).items()
        if acks is not None and step >= 2:
            os.read(acks[rank][0], 1)  # the step this slot held was read
        exchange.put(rank, step, value)
        os.write(peer[rank][1], b"s")
        if told is not None:
            os.write(told[rank][1], b"s")
        os.read(peer[1 - rank][0], 1)
        return {node: value, nodes[1 - rank][0]: exchange.get(1 - rank, step)}

    seconds = train(trainer, epochs, values_of)
    stride = size * np.dtype(dtype).itemsize + 8
    np.frombuffer(results, dtype, size, offset=rank * stride)[:] = flat(trainer)
    if rank == 0:
        np.frombuffer(results, np.float64, 1, offset=size * np.dtype(dtype).itemsize)[0] = seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_num_threads(1)
    ratios = {False: [], True: []}
    for round_ in range(args.repeats):
        single, reference = one_process(args.epochs)
        print(f"round {round_ + 1}: one process {single * 1e3:.3f} ms/step")
        for coordinator in (False, True):
            seconds, found = one_hop(args.epochs, coordinator)
            ratios[coordinator].append(seconds / single)
            name = "two workers and a passive coordinator" if coordinator else "two workers"
            same = all(np.array_equal(f, reference) for f in found)
            print(f"  {name}: {seconds * 1e3:.3f} ms/step ({seconds / single:.2f}x); all "
                  f"{len(found)} replicas equal to one process: {same}")
    for coordinator, values in ratios.items():
        name = "with a passive coordinator" if coordinator else "workers alone"
        print(f"median ratio, {name}: {statistics.median(values):.2f}x (step loop only)")


if __name__ == "__main__":
    main()
