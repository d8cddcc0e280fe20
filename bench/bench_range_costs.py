"""What one range of the 10M-parameter exchange costs, part by part, in one machine's processes.

The parts behind ``bench_exchange10m.py``'s figures, each beside the way it was done before, in
the same run (interleaved, median of ``--repeats``):

- CURVE over loopback: one 5 MB range (1/8 of the 10.02M-parameter MLP, float32) sent DEALER to
  ROUTER in one frame, and in 1 MiB, 256 KiB (``protocol.CURVE_FRAME_BYTES``) and 64 KiB
  frames; plaintext for the floor;
- ZeroMQ I/O threads: two contexts, each a worker's (a ROUTER mailbox, a DEALER to the other's),
  both sending 8 such ranges to the other at once over CURVE, with 1 and 2 I/O threads each;
- the reducer's main-thread work on one range: the sum of two nodes and its division by the
  batch size into a new array and in place (``reducer.mean``); the RANGEPARAMS it sends, a copy
  of the range and its own array (``reducer.unshare`` then finds nothing holding it); decoding
  a range split over 256 KiB frames.

The machine's cores are shared: compare the rows of one part with each other. Run:
``python bench/bench_range_costs.py [--repeats N]`` (about 30 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import numpy as np
import zmq

from dtrain.autograd.tensor import Tensor
from dtrain.distributed import protocol as P
from dtrain.distributed.reducer import mean, unshare
from dtrain.distributed.protocol import CURVE_FRAME_BYTES

RANGE = 10_020_362 // 8  # elements of one of the 8 ranges of MLP 784-2048-2048-2048-10
RANGES_PER_STEP = 8  # what each of 2 workers sends the other a step: 4 ranges of slices, 4 new


def frames_of(data: np.ndarray, frame_bytes: int) -> list:
    raw = memoryview(data).cast("B")
    return [b"h"] + [raw[i:i + frame_bytes] for i in range(0, len(raw), frame_bytes)]


def curve_pair(ctx: zmq.Context, curve: bool, router_ctx: zmq.Context | None = None
               ) -> tuple[zmq.Socket, zmq.Socket]:
    """(DEALER, ROUTER) connected over loopback TCP, with CURVE when ``curve``; the ROUTER in
    ``router_ctx`` when given (another process's, as it were)."""
    router, dealer = (router_ctx or ctx).socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.LINGER, 0)
    if curve:
        server, client = zmq.curve_keypair(), zmq.curve_keypair()
        router.curve_server = True
        router.curve_publickey, router.curve_secretkey = server
        dealer.curve_publickey, dealer.curve_secretkey = client
        dealer.curve_serverkey = server[0]
    dealer.connect(f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}")
    return dealer, router


def one_send(dealer: zmq.Socket, router: zmq.Socket, frames: list) -> float:
    began = time.perf_counter()
    dealer.send_multipart(frames, copy=False)
    router.recv_multipart(copy=False)
    return time.perf_counter() - began


def both_ways(pairs: list, frames: list) -> float:
    """Seconds for each of two workers to send the other RANGES_PER_STEP ranges at once."""
    began = time.perf_counter()
    for _ in range(RANGES_PER_STEP):
        for dealer, _ in pairs:
            dealer.send_multipart(frames, copy=False)

    def drain(router: zmq.Socket) -> None:
        for _ in range(RANGES_PER_STEP):
            router.recv_multipart(copy=False)

    other = threading.Thread(target=drain, args=(pairs[0][1],))
    other.start()
    drain(pairs[1][1])
    other.join()
    return time.perf_counter() - began


def measure(repeats: int) -> dict:
    """Seconds per case (every repeat), the cases interleaved."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(RANGE, dtype=np.float32)
    b = rng.standard_normal(RANGE, dtype=np.float32)
    contexts = [zmq.Context(), zmq.Context(io_threads=1), zmq.Context(io_threads=1),
                zmq.Context(io_threads=2), zmq.Context(io_threads=2)]
    try:
        curve, plain = curve_pair(contexts[0], True), curve_pair(contexts[0], False)
        # each worker's context holds its mailbox and its DEALER to the other's mailbox
        workers = {io: [curve_pair(x, True, y), curve_pair(y, True, x)]
                   for io, (x, y) in ((1, contexts[1:3]), (2, contexts[3:5]))}
        tensor = Tensor._wrap(a.copy())
        split = [zmq.Frame(bytes(f)) for f in P.encode(
            P.Envelope(P.HEARTBEAT, "j", arrays={"p0": a}), CURVE_FRAME_BYTES)]

        def fresh_mean():
            return np.divide(a + b, 64).astype(np.float32, copy=False)

        def params_view():
            held = [tensor._data]
            del held
            unshare(tensor)

        cases = {
            "CURVE, 5 MB in 1 frame": lambda: one_send(*curve, frames_of(a, len(a) * 4)),
            "CURVE, 1 MiB frames": lambda: one_send(*curve, frames_of(a, 1 << 20)),
            "CURVE, 256 KiB frames": lambda: one_send(*curve, frames_of(a, 256 << 10)),
            "CURVE, 64 KiB frames": lambda: one_send(*curve, frames_of(a, 64 << 10)),
            "plaintext, 1 frame": lambda: one_send(*plain, frames_of(a, len(a) * 4)),
            "2 workers x 8 ranges, 1 I/O thread": lambda: both_ways(
                workers[1], frames_of(a, CURVE_FRAME_BYTES)),
            "2 workers x 8 ranges, 2 I/O threads": lambda: both_ways(
                workers[2], frames_of(a, CURVE_FRAME_BYTES)),
            "sum + mean into a new array": fresh_mean,
            "sum + mean in place": lambda: mean(a + b, 64, np.dtype(np.float32), True),
            "RANGEPARAMS: a copy": lambda: [tensor._data.copy()],
            "RANGEPARAMS: its own array": params_view,
            "decode, 256 KiB frames": lambda: P.decode(split),
        }
        for case in cases.values():  # warm up: connections, handshakes, pages
            case()
        out: dict = {name: [] for name in cases}
        for _ in range(repeats):
            for name, case in cases.items():
                began = time.perf_counter()
                result = case()
                seconds = time.perf_counter() - began
                out[name].append(result if isinstance(result, float) else seconds)
                del result
        return out
    finally:
        for ctx in contexts:
            ctx.destroy(linger=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats")
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; one range = "
          f"{RANGE * 4 / 1e6:.2f} MB; median of {args.repeats} (min-max), ms")
    for name, seconds in measure(args.repeats).items():
        ms = [s * 1e3 for s in seconds]
        print(f"{name:<38} {statistics.median(ms):8.2f} ({min(ms):.2f}-{max(ms):.2f})")


if __name__ == "__main__":
    main()
