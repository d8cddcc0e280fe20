"""Gradient round trip through dtrain.dist.protocol against a hand-written ZeroMQ floor.

A DEALER sends the float32 gradients of an MLP to a ROUTER over tcp://127.0.0.1, which answers
with arrays of the same sizes (its own copy, as a coordinator answers GRADS with a TASK carrying
parameters). The protocol path is ``send`` (encode) -> ``recv`` (decode) at both ends; the
floor, measured in the same run and interleaved with it, sends the same raw array bytes one
frame each with ``copy=False`` and no header, and receives with ``copy=False``. Printed ratios
are median time / median floor time. For reference, the small case also times a raw server that
relays the received zmq.Frames back (cheaper for pyzmq than sending memory it does not own).

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
import threading
import time

import numpy as np
import zmq

from dtrain.dist import protocol as P

SMALL = (784, 512, 512, 10)
BIG = (784, 2048, 2048, 2048, 10)
JOB = "bench"


def gradients(sizes: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weight and bias gradients of an MLP, named as its state_dict would be."""
    rng = np.random.default_rng(seed)
    grads = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        grads[f"{2 * i}.weight"] = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        grads[f"{2 * i}.bias"] = rng.standard_normal(fan_out, dtype=np.float32)
    return grads


def raw_frames(arrays: dict[str, np.ndarray]) -> list[memoryview]:
    """The floor's frames: each array's bytes as one memoryview, no header."""
    return [memoryview(a.reshape(-1).view(np.uint8)) for a in arrays.values()]


class Server(threading.Thread):
    """A ROUTER on a random loopback port that answers every message with arrays of its own.

    Modes: "raw" (the floor: receive frames, reply with raw frames), "relay" (receive frames and
    send the received zmq.Frames straight back), "fresh" / "pool" (the protocol: recv+decode,
    reply with send of a Message; split arrays joined into fresh buffers or a BufferPool).
    """

    def __init__(self, ctx: zmq.Context, mode: str, arrays: dict[str, np.ndarray]):
        super().__init__(daemon=True)
        self.mode = mode
        self.reply = P.Message(P.TASK, JOB, step=1, worker=0, fields={"epoch": 0}, arrays=arrays)
        self.raw = raw_frames(arrays)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.stop = threading.Event()

    def run(self) -> None:
        pool = P.BufferPool() if self.mode == "pool" else None
        while not self.stop.is_set():
            if not self.router.poll(50):
                continue
            if self.mode == "raw":
                identity = self.router.recv_multipart(copy=False)[0]
                self.router.send_multipart([identity, *self.raw], copy=False)
            elif self.mode == "relay":
                self.router.send_multipart(self.router.recv_multipart(copy=False), copy=False)
            else:
                identity, msg = P.recv(self.router, router=True, buffers=pool)
                del msg
                P.send(self.router, self.reply, identity)
        self.router.close()


def dealer(ctx: zmq.Context, port: int) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def floor_trip(sock: zmq.Socket, buffers: list[memoryview]) -> list:
    sock.send_multipart(buffers, copy=False)
    return sock.recv_multipart(copy=False)


def protocol_trip(sock: zmq.Socket, msg: P.Message, pool: P.BufferPool | None) -> P.Message:
    P.send(sock, msg)
    return P.recv(sock, router=False, buffers=pool)[1]


def measure(arrays: dict[str, np.ndarray], modes: list[str], repeats: int) -> dict[str, float]:
    """Median seconds per round trip for the floor and each other mode, interleaved."""
    ctx_server, ctx_client = zmq.Context(), zmq.Context()  # one IO thread per side
    replies = {name: a.copy() for name, a in arrays.items()}  # the server's own arrays
    servers = {mode: Server(ctx_server, mode, replies) for mode in ["raw", *modes]}
    for server in servers.values():
        server.start()
    socks = {mode: dealer(ctx_client, s.port) for mode, s in servers.items()}
    raw = raw_frames(arrays)
    msg = P.Message(P.GRADS, JOB, step=0, worker=0, fields={"nodes": [[0, 8]]}, arrays=arrays)
    pools = {mode: P.BufferPool() if mode == "pool" else None for mode in modes}

    def trip(mode: str):
        if mode in ("raw", "relay"):
            return floor_trip(socks[mode], raw)
        return protocol_trip(socks[mode], msg, pools[mode])

    for mode, server in servers.items():  # warm up; check that the right bytes come back
        back = trip(mode)
        if mode in ("raw", "relay"):
            assert [bytes(f.buffer) for f in back] == [bytes(b) for b in raw], mode
        else:
            assert back == server.reply, mode
        del back
    times: dict[str, list[float]] = {mode: [] for mode in servers}
    order = list(servers)
    for r in range(repeats):
        for mode in order[r % len(order) :] + order[: r % len(order)]:  # rotate: no order bias
            start = time.perf_counter()
            back = trip(mode)
            times[mode].append(time.perf_counter() - start)
            del back
    for server in servers.values():
        server.stop.set()
        server.join()
    for sock in socks.values():
        sock.close()
    ctx_server.term()
    ctx_client.term()
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
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=0, help="round trips per mode (0: auto)")
    args = parser.parse_args()
    print(f"MAX_FRAME_BYTES = {P.MAX_FRAME_BYTES} ({P.MAX_FRAME_BYTES / 2**20:.0f} MiB)")

    small = gradients(SMALL)
    nbytes = sum(a.nbytes for a in small.values())
    medians = measure(small, ["fresh", "relay"], args.repeats or 400)
    report(f"MLP {SMALL}, one array per parameter", nbytes, medians, 1.10)

    big = gradients(BIG)
    nbytes = sum(a.nbytes for a in big.values())
    medians = measure(big, ["fresh"], args.repeats or 30)
    report(f"MLP {BIG}, one array per parameter", nbytes, medians, 2.0)

    flat = {"grads": np.concatenate([a.reshape(-1) for a in big.values()])}
    frames = -(-flat["grads"].nbytes // P.MAX_FRAME_BYTES)
    medians = measure(flat, ["fresh", "pool"], args.repeats or 30)
    report(f"MLP {BIG}, one flat vector in {frames} frames", nbytes, medians, 2.0)


if __name__ == "__main__":
    main()
