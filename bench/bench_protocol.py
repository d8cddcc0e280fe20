"""Gradient round trip through dtrain.distributed.protocol against a hand-written ZeroMQ floor.

A DEALER sends the float32 gradients of an MLP to a ROUTER in another process over
tcp://127.0.0.1, which answers with arrays of the same sizes (its own, as a coordinator answers
GRADS with a TASK carrying parameters). The protocol path is ``send`` (encode) -> ``recv``
(decode) at both ends; the floor, measured in the same run and interleaved with it, sends the
same raw array bytes one frame each with ``copy=False`` and no header, and receives with
``copy=False``. Printed ratios are median time / median floor time. For reference, the small
case also times a raw server that relays the received zmq.Frames back.

Cases: MLP 784-512-512-10 (~2.7 MB, target <= 1.10x) and MLP 784-2048-2048-2048-10 (~42 MB,
target <= 2.0x). The big one is sent both as one array per parameter (each <= MAX_FRAME_BYTES,
so zero-copy end to end) and as one flat 42 MB vector (split over frames, so each receive joins
them into one buffer), the latter with fresh receive buffers and with a BufferPool.
Run: ``python bench/bench_protocol.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import time

import numpy as np
import zmq

from dtrain.distributed import protocol as P

SMALL = (784, 512, 512, 10)
BIG = (784, 2048, 2048, 2048, 10)
JOB = "bench"
QUIT = b"quit"


def gradients(sizes: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weight and bias gradients of an MLP, named as its state_dict would be."""
    rng = np.random.default_rng(seed)
    grads = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        grads[f"{2 * i}.weight"] = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        grads[f"{2 * i}.bias"] = rng.standard_normal(fan_out, dtype=np.float32)
    return grads


def case_arrays(case: str, seed: int) -> dict[str, np.ndarray]:
    """The arrays of a case: "small", "big" (one per parameter) or "flat" (big, one vector)."""
    grads = gradients(SMALL if case == "small" else BIG, seed)
    if case == "flat":
        return {"grads": np.concatenate([a.reshape(-1) for a in grads.values()])}
    return grads


def raw_frames(arrays: dict[str, np.ndarray]) -> list[memoryview]:
    """The floor's frames: each array's bytes as one memoryview, no header."""
    return [memoryview(a.reshape(-1).view(np.uint8)) for a in arrays.values()]


def reply_message(arrays: dict[str, np.ndarray]) -> P.Envelope:
    return P.Envelope(P.TASK, JOB, step=1, worker=0, fields={"epoch": 0}, arrays=arrays)


def serve(mode: str, case: str) -> None:
    """The server process: print the port, answer every message until QUIT.

    Modes: "raw" (the floor: receive frames, reply with raw frames), "relay" (send the received
    zmq.Frames straight back), "fresh" / "pool" (the protocol: recv+decode, reply with send;
    split arrays joined into fresh buffers or into a BufferPool).
    """
    arrays = case_arrays(case, seed=1)
    reply, raw = reply_message(arrays), raw_frames(arrays)
    pool = P.BufferPool() if mode == "pool" else None
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    print(router.bind_to_random_port("tcp://127.0.0.1"), flush=True)
    while True:
        frames = router.recv_multipart(copy=False)
        if len(frames) == 2 and frames[1].bytes == QUIT:
            break
        if mode == "raw":
            identity = frames[0].bytes
            del frames  # freed before replying, as the protocol server does
            router.send_multipart([identity, *raw], copy=False)
        elif mode == "relay":
            router.send_multipart(frames, copy=False)
        else:
            identity = frames[0].bytes
            msg = P.decode(frames[1:], buffers=pool)
            del msg, frames  # as a coordinator done with a message: frees pool buffers
            P.send(router, reply, identity)
    router.close()
    ctx.term()


class Servers:
    """One server process per mode, started and reaped by this object."""

    def __init__(self, ctx: zmq.Context, modes: list[str], case: str):
        self.procs, self.socks = {}, {}
        for mode in modes:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", mode, case],
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs[mode] = proc
            port = int(proc.stdout.readline())
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(f"tcp://127.0.0.1:{port}")
            self.socks[mode] = sock

    def close(self) -> None:
        for mode, sock in self.socks.items():
            sock.send(QUIT)
            try:
                self.procs[mode].wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.procs[mode].kill()
                self.procs[mode].wait()
            sock.close()


def measure(case: str, modes: list[str], repeats: int) -> dict[str, float]:
    """Median seconds per round trip for the floor and each other mode, interleaved."""
    arrays = case_arrays(case, seed=0)
    expected = case_arrays(case, seed=1)  # what the servers answer with
    raw = raw_frames(arrays)
    msg = P.Envelope(P.GRADS, JOB, step=0, worker=0, fields={"nodes": [[0, 8]]}, arrays=arrays)
    pools = {mode: P.BufferPool() if mode == "pool" else None for mode in modes}
    ctx = zmq.Context()
    servers = Servers(ctx, ["raw", *modes], case)
    socks = servers.socks

    def trip(mode: str):
        sock = socks[mode]
        if mode in ("raw", "relay"):
            sock.send_multipart(raw, copy=False)
            return sock.recv_multipart(copy=False)
        P.send(sock, msg)
        return P.recv(sock, router=False, buffers=pools[mode])[1]

    try:
        for mode in socks:  # warm up; check that the right bytes come back
            back = trip(mode)
            if mode == "raw":
                assert [bytes(f.buffer) for f in back] == [bytes(b) for b in raw_frames(expected)]
            elif mode == "relay":
                assert [bytes(f.buffer) for f in back] == [bytes(b) for b in raw]
            else:
                assert back == reply_message(expected), mode
            del back
        times: dict[str, list[float]] = {mode: [] for mode in socks}
        order = list(socks)
        for r in range(repeats):
            for mode in order[r % len(order) :] + order[: r % len(order)]:  # rotate: no bias
                start = time.perf_counter()
                back = trip(mode)
                times[mode].append(time.perf_counter() - start)
                del back
    finally:
        servers.close()
        ctx.term()
    return {mode: statistics.median(t) for mode, t in times.items()}


LABELS = {
    "fresh": "protocol, fresh buffers",
    "pool": "protocol, BufferPool",
    "relay": "(raw, server relays zmq.Frames)",
}


def report(title: str, nbytes: int, medians: dict[str, float], target: float) -> None:
    floor = medians["raw"]
    print(f"\n{title}: {nbytes / 1e6:.1f} MB each way, median round trip")
    print(f"  {'floor (raw frames, copy=False)':<31} {floor * 1e3:8.2f} ms")
    for mode, seconds in medians.items():
        if mode == "raw":
            continue
        line = f"  {LABELS[mode]:<31} {seconds * 1e3:8.2f} ms  {seconds / floor:5.2f}x"
        if mode != "relay":
            verdict = "ok" if seconds / floor <= target else "OVER TARGET"
            line += f"  (target {target}x: {verdict})"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=0, help="round trips per mode (0: auto)")
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    print(f"MAX_FRAME_BYTES = {P.MAX_FRAME_BYTES} ({P.MAX_FRAME_BYTES / 2**20:.0f} MiB)")
    nbytes = sum(a.nbytes for a in case_arrays("small", 0).values())
    medians = measure("small", ["fresh", "relay"], args.repeats or 1000)
    report(f"MLP {SMALL}, one array per parameter", nbytes, medians, 1.10)

    nbytes = sum(a.nbytes for a in case_arrays("big", 0).values())
    medians = measure("big", ["fresh"], args.repeats or 40)
    report(f"MLP {BIG}, one array per parameter", nbytes, medians, 2.0)

    frames = -(-nbytes // P.MAX_FRAME_BYTES)
    medians = measure("flat", ["fresh", "pool"], args.repeats or 40)
    report(f"MLP {BIG}, one flat vector in {frames} frames", nbytes, medians, 2.0)


if __name__ == "__main__":
    main()
