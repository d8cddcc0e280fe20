"""PyTorch references for ``bench_distributed.py`` and ``bench_crosshost.py``: DDP and all_reduce.

Started by the bench as ``world`` separate processes (``--rank 0..world-1``), never through
multiprocessing, so nothing is pickled. Each rank pins itself to one thread
(``torch.set_num_threads(1)`` and threadpoolctl), joins a gloo group over TCP (loopback, or the
namespace hosts' links with ``GLOO_SOCKET_IFNAME``), and rank 0 prints one JSON line with its
timings:

- ``--mode train``: DistributedDataParallel over the bench's MLP and synthetic data, each rank
  computing ``batch // world`` samples of a global batch, SGD; per-step seconds.
- ``--mode allreduce``: ``dist.all_reduce`` of one float32 tensor of ``--numel`` elements (the
  whole gradient, as DDP would bucket it); per-round seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

from threadpoolctl import threadpool_limits

HERE = os.path.dirname(os.path.abspath(__file__))


def _torch():
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    return torch


def train(args, torch, dist) -> list[float]:
    """DDP steps on this rank's part of each global batch; per-step seconds (all steps)."""
    sys.path.insert(0, HERE)
    from dist_mlp_job import LR, SIZES, synthetic

    sizes = SIZES[args.model]
    torch.manual_seed(0)
    layers = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(fan_in, fan_out))
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*layers))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all, y_all = (torch.from_numpy(a) for a in synthetic())
    local = args.batch // args.world
    n = len(x_all)
    seconds = []
    for step in range(args.steps):
        start = (step * args.batch) % (n - args.batch + 1) + args.rank * local
        x, y = x_all[start:start + local], y_all[start:start + local]
        began = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()  # DDP all-reduces the gradient buckets here
        opt.step()
        loss.item()
        seconds.append(time.perf_counter() - began)
    return seconds


def allreduce(args, torch, dist) -> list[float]:
    """Seconds of each gloo all_reduce round of one ``numel``-element float32 tensor."""
    grad = torch.ones(args.numel, dtype=torch.float32)
    seconds = []
    for _ in range(args.steps):
        dist.barrier()
        began = time.perf_counter()
        dist.all_reduce(grad)
        seconds.append(time.perf_counter() - began)
        grad.fill_(1.0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("train", "allreduce"), required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--init", required=True,
                        help="tcp://HOST:PORT of the rendezvous (rank 0's)")
    parser.add_argument("--model", default="MLP512", help="MLP512 or MLP2048 (train mode)")
    parser.add_argument("--batch", type=int, default=256, help="global batch (train mode)")
    parser.add_argument("--steps", type=int, default=30, help="steps or rounds, warm-up included")
    parser.add_argument("--numel", type=int, default=0, help="elements (allreduce mode)")
    args = parser.parse_args()
    if args.mode == "train" and args.batch % args.world:
        parser.error(f"--batch {args.batch} is not divisible by --world {args.world}")
    torch = _torch()
    import torch.distributed as dist

    with threadpool_limits(limits=1):
        dist.init_process_group("gloo", init_method=args.init, rank=args.rank,
                                world_size=args.world)
        seconds = (train if args.mode == "train" else allreduce)(args, torch, dist)
        dist.barrier()
    if args.rank == 0:
        print(json.dumps({"mode": args.mode, "seconds": seconds}), flush=True)
    # Every rank has passed the last barrier: leave without gloo's teardown, which now and then
    # aborts a rank ("terminate called without an active exception", seen with torch 2.13)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
