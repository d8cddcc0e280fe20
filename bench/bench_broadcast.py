"""How to broadcast parameters: ROUTER replies (one per worker) or one PUB send, measured.

Sends the parameters of the MLP 784-512-512-10 (2.7 MB float32) and of the 10M-parameter MLP
(40 MB) to N subscribers/dealers over tcp loopback, each receiver acknowledging every round so
both variants time the same thing: one broadcast until every worker holds the bytes.

    python bench/bench_broadcast.py [--quick]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import zmq


def _receiver(ctx, kind: str, address: str, ack: str, rounds: int, ready: threading.Event):
    sock = ctx.socket(zmq.SUB if kind == "pub" else zmq.DEALER)
    if kind == "pub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    back = ctx.socket(zmq.PUSH)
    back.connect(ack)
    if kind == "router":
        sock.send(b"hello")
    ready.set()
    for _ in range(rounds):
        sock.recv_multipart(copy=False)
        back.send(b"ok")
    sock.close(0)
    back.close(0)


def measure(kind: str, nbytes: int, workers: int, rounds: int) -> float:
    """Median seconds per broadcast round to ``workers`` receivers."""
    ctx = zmq.Context()
    out = ctx.socket(zmq.PUB if kind == "pub" else zmq.ROUTER)
    out.setsockopt(zmq.SNDHWM, 0)
    port = out.bind_to_random_port("tcp://127.0.0.1")
    ack = ctx.socket(zmq.PULL)
    ack_port = ack.bind_to_random_port("tcp://127.0.0.1")
    total = rounds + 3
    threads, readies = [], []
    for _ in range(workers):
        ready = threading.Event()
        t = threading.Thread(target=_receiver, args=(ctx, kind, f"tcp://127.0.0.1:{port}",
                                                     f"tcp://127.0.0.1:{ack_port}", total, ready),
                             daemon=True)
        t.start()
        threads.append(t)
        readies.append(ready)
    for r in readies:
        r.wait()
    identities = []
    if kind == "router":
        identities = [out.recv_multipart()[0] for _ in range(workers)]
    else:
        time.sleep(0.3)  # PUB's slow-joiner gap: subscriptions must arrive first
    payload = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)
    times = []
    for _ in range(total):
        started = time.perf_counter()
        if kind == "pub":
            out.send_multipart([b"params", memoryview(payload)], copy=False)
        else:
            for ident in identities:
                out.send_multipart([ident, memoryview(payload)], copy=False)
        for _ in range(workers):
            ack.recv()
        times.append(time.perf_counter() - started)
    for t in threads:
        t.join(timeout=10)
    out.close(0)
    ack.close(0)
    ctx.term()
    return float(np.median(times[3:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 10 if args.quick else 40
    print(f"{'payload':>10} {'workers':>7} {'ROUTER ms':>10} {'PUB ms':>8} {'PUB/ROUTER':>10}")
    for nbytes in (669_706 * 4, 10_020_874 * 4):
        for workers in (2, 4):
            router = measure("router", nbytes, workers, rounds)
            pub = measure("pub", nbytes, workers, rounds)
            print(f"{nbytes / 2**20:9.1f}M {workers:>7} {router * 1e3:10.2f} {pub * 1e3:8.2f} "
                  f"{pub / router:10.2f}")


if __name__ == "__main__":
    main()
