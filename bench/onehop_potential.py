"""What a one-hop local all-reduce would give small jobs (a design measurement for issue 14).

Today every step of local workers is a round through the coordinator: TASKs out, each worker's
GRADS in, the coordinator's tree sum and optimizer step, then the next TASKs. This script runs
the alternative on examples/digits.py without a coordinator: two forked processes each compute
their half of the micro-shards with dtrain's own ShardComputer, swap their node values through
shared memory with a one-byte pipe signal, and each finishes the tree and steps its own replica
(Trainer.reduce and the job's optimizer and scheduler), so both replicas must stay bit-identical
to a one-process loop of the same code. Validation, checkpoints and metrics are left out on both
sides, and nothing here handles a fault: it measures the step loop only.

Printed per round: ms per step for the one-process loop and the two processes, their ratio,
and whether the two replicas and the one-process result hold the same bits.
Run: ``python bench/onehop_potential.py [--epochs N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time

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


def two_processes(epochs: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(seconds per step, rank 0's parameters, rank 1's parameters)."""
    params = replica()[0].params
    shapes, dtype = [p._data.shape for p in params], params[0]._data.dtype
    exchange = Exchange(shapes, dtype)
    result = mmap.mmap(-1, sum(int(np.prod(s)) for s in shapes) * np.dtype(dtype).itemsize + 8)
    to_one, from_zero = os.pipe()
    to_zero, from_one = os.pipe()
    child = os.fork()
    rank = 1 if child == 0 else 0
    try:
        trainer, computer = replica()
        send, receive = (from_zero, to_zero) if rank == 0 else (from_one, to_one)

        def values_of(plan, step):
            nodes = assign(plan.micro_shards, [0, 1])
            (node, value), = computer.node_values(plan, nodes[rank], 0).items()
            exchange.put(rank, step, value)
            os.write(send, b"s")
            os.read(receive, 1)
            return {node: value, nodes[1 - rank][0]: exchange.get(1 - rank, step)}

        seconds = train(trainer, epochs, values_of)
        mine = flat(trainer)
        if rank == 1:
            out = np.frombuffer(result, dtype, mine.size)
            out[:] = mine
            os._exit(0)
    except BaseException:
        if rank == 1:
            os._exit(1)
        raise
    finally:
        if rank == 0:
            _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("rank 1 failed")
    return seconds, mine, np.frombuffer(result, dtype, mine.size).copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_num_threads(1)
    ratios = []
    for round_ in range(args.repeats):
        single, reference = one_process(args.epochs)
        pair, zero, one = two_processes(args.epochs)
        ratios.append(pair / single)
        print(f"round {round_ + 1}: one process {single * 1e3:.3f} ms/step, two processes "
              f"{pair * 1e3:.3f} ms/step ({pair / single:.2f}x); replicas equal: "
              f"{np.array_equal(zero, one)}, equal to one process: "
              f"{np.array_equal(zero, reference)}")
    print(f"median ratio {statistics.median(ratios):.2f}x (two processes / one process, step "
          "loop only)")


if __name__ == "__main__":
    main()
