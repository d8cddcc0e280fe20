"""End-to-end throughput of dtrain's data-parallel path against floors measured in the same run.

Part 1, MLP 784-512-512-10 (float32, SGD, 8 micro-shards) at global batch 256 and 64, trained by
``dtrain.fit`` in-process (workers=0) and with 1 and 2 local worker processes. For each run the
median 'seconds' of the steady-state steps of ``history.steps`` (after a warm-up) gives the
step time and samples/s; the per-worker cumulative ``worker_times`` give each step's worker
compute and communication. Next to them, measured in the same run:

- the communication floor of the path the run's arrays take, median seconds per hand-written
  round with a helper per worker process: for local workers (the default) shared memory, as
  dtrain moves them (each helper writes its gradients into a slot file and sends a small
  message over a Unix socket, as a local link does; the other side writes the parameters once
  into a board file and replies with a small message, the helper copies them out); for the
  'net' runs (``shared_memory=False``, the path
  of workers on other machines) the socket (the gradient arrays as raw ``copy=False`` frames
  up, the parameter arrays down, over CURVE when the run encrypts);
- PyTorch DDP (gloo, 2 processes, 1 thread each, same model and global batch) when torch is
  installed (``ddp_reference.py``).

Targets: per-step communication <= 1.10x the floor; 2-worker step time <= 0.90x DDP's. Where
``dtrain.fit`` encrypts local traffic with CURVE by default, both the default and the
``insecure=True`` runs are shown, and the socket floor is also measured over ipc:// and
through a worker-style I/O thread (an inproc PAIR hop), to tell the transport's share from
dtrain's own. A 2-worker run with ``micro_shards=2`` shows the cost of finer micro-shards.
Nothing here crosses a link: ``bench_crosshost.py`` measures workers on other hosts.

Part 2, MLP 784-2048-2048-2048-10 (10.0M parameters): one exchange (the gradient message up,
the parameter message down, one worker) measured directly with ``dtrain.distributed.protocol``
(encode/send/recv/decode through a ROUTER/DEALER pair, with and without ``BufferPool``, and with
the coordinator's checks and copies) and as step time minus worker compute in a 1-worker
``dtrain.fit`` (the worker's arrays through shared memory, and with ``shared_memory=False``
over the socket), against a gloo ``all_reduce`` of the same gradient (2 processes, loopback).
Target <= 2.0x.

BLAS is pinned to 1 thread in every process (threadpoolctl here and in the DDP ranks, the
launcher's environment in the workers). On a 2-core machine a 2-worker run has 3 busy processes
(coordinator + 2 workers), and a floor with 2 dealers 3 as well: both oversubscribe alike.

Every figure is the best of ``--repeats`` interleaved repeats (the least disturbed by other load
on a shared machine). ``--profile`` adds cProfile breakdowns of the coordinator and of both
workers' compute threads in a 2-worker run at each batch size.

Run: ``python bench/bench_distributed.py [--quick] [--profile] [--part none|1|2]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import pstats
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import zmq
from threadpoolctl import threadpool_limits

HERE = os.path.dirname(os.path.abspath(__file__))
JOB = os.path.join(HERE, "dist_mlp_job.py")
DDP = os.path.join(HERE, "ddp_reference.py")
RUN_LENGTH = {"warmup": ("untimed steps per run", 2, 5),  # (help, with --quick, without)
              "steps": ("timed steps per dtrain run", 4, 30),
              "rounds": ("timed rounds per exchange", 4, 20),
              "repeats": ("interleaved repeats of every measurement; the best one is shown",
                          1, 3)}
CHILD_TIMEOUT = 300.0  # seconds any helper process may take before the bench gives up on it
ROUND_TIMEOUT = 60.0  # seconds to wait for one message from a helper process

sys.path.insert(0, HERE)
from dist_mlp_job import SIZES
from run_length import add_run_length_options, settle_run_length


def param_shapes(model: str) -> list[tuple[int, ...]]:
    """Weight and bias shapes of the named MLP, in ``model.parameters()`` order."""
    sizes = SIZES[model]
    shapes = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        shapes += [(fan_out, fan_in), (fan_out,)]
    return shapes


def child_env() -> dict:
    """Environment of every helper process: one BLAS/OpenMP thread, gloo on loopback."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["GLOO_SOCKET_IFNAME"] = "lo"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    """A TCP port that was free a moment ago (for gloo's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reap(procs: list[subprocess.Popen]) -> None:
    """Wait for helper processes, killing the ones still running after a short grace."""
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------- helper roles
def dealer(ctx: zmq.Context, connect: str, server_key: str | None) -> zmq.Socket:
    """A DEALER connected to ``connect``; a CURVE client (fresh key pair) when a key is given."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if server_key:
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        sock.curve_serverkey = server_key.encode()
    sock.connect(connect)
    return sock


def role_floor_dealer(connect: str, model: str, rounds: int, server_key: str | None,
                      hop: bool = False) -> None:
    """Floor worker: send the gradient bytes as raw frames, receive the parameter bytes.

    With ``hop`` the frames take the path of a dtrain worker's: the main thread hands them over
    an inproc PAIR to an I/O thread that owns the DEALER, and the reply comes back the same way.
    """
    ctx = zmq.Context()
    grads = [np.full(s, 0.5, np.float32) for s in param_shapes(model)]
    if hop:
        sock = ctx.socket(zmq.PAIR)
        sock.bind("inproc://bench-hop")
        thread = threading.Thread(target=_hop_thread, args=(ctx, connect, server_key, rounds),
                                  daemon=True)
        thread.start()
    else:
        sock = dealer(ctx, connect, server_key)
    for _ in range(rounds):
        sock.send_multipart(grads, copy=False)
        if not sock.poll(int(ROUND_TIMEOUT * 1000)):
            raise SystemExit("floor dealer: no reply from the router")
        sock.recv_multipart(copy=False)
    if hop:
        thread.join()
    sock.close()
    ctx.term()


def _hop_thread(ctx: zmq.Context, connect: str, server_key: str | None, rounds: int) -> None:
    """The I/O thread of a hop floor: forward pipe -> DEALER and DEALER -> pipe, as a worker."""
    pipe = ctx.socket(zmq.PAIR)
    pipe.connect("inproc://bench-hop")
    sock = dealer(ctx, connect, server_key)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(pipe, zmq.POLLIN)
    replies = 0
    while replies < rounds:
        events = dict(poller.poll(int(ROUND_TIMEOUT * 1000)))
        if not events:
            break
        if pipe in events:
            sock.send_multipart(pipe.recv_multipart(copy=False), copy=False)
        if sock in events:
            pipe.send_multipart(sock.recv_multipart(copy=False), copy=False)
            replies += 1
    pipe.close()
    sock.close()


def shared_views(path: str, shapes: list) -> list[np.ndarray]:
    """Arrays of ``shapes`` in one memory-mapped file, each on a 64-byte boundary (as dtrain's)."""
    offsets, end = [], 0
    for shape in shapes:
        end = -(-end // 64) * 64
        offsets.append(end)
        end += int(np.prod(shape)) * 4
    mode = "r+" if os.path.exists(path) else "w+"
    flat = np.memmap(path, np.uint8, mode, shape=(max(end, 64),))
    return [flat[o:o + int(np.prod(s)) * 4].view(np.float32).reshape(s)
            for o, s in zip(offsets, shapes)]


def role_shm_floor_dealer(connect: str, model: str, rounds: int, shm: str, slot: int) -> None:
    """Shared-memory floor worker: gradients into its slot file, a small message up its Unix
    socket (``connect`` is the socket's path); on the small reply, the parameters copied out of
    the board file (the path of a local worker and its local link)."""
    link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link.connect(connect)
    link.settimeout(ROUND_TIMEOUT)
    shapes = param_shapes(model)
    grads = [np.full(s, 0.5, np.float32) for s in shapes]
    params = [np.zeros(s, np.float32) for s in shapes]
    board = shared_views(os.path.join(shm, "params"), shapes)
    mine = shared_views(os.path.join(shm, f"grads{slot}"), shapes)
    for _ in range(rounds):
        for view, g in zip(mine, grads):
            np.copyto(view, g)
        link.send(b"grads in slot")
        try:
            link.recv(64)
        except TimeoutError:
            raise SystemExit("shm floor dealer: no reply from the router") from None
        for p, view in zip(params, board):
            np.copyto(p, view)
    del board, mine
    link.close()


def role_exchange_dealer(connect: str, model: str, rounds: int, checks: bool,
                         server_key: str | None) -> None:
    """Protocol worker: GRADS message up (as a worker encodes it), TASK message down, decoded."""
    from dtrain.distributed import protocol as P

    ctx = zmq.Context()
    sock = dealer(ctx, connect, server_key)
    shapes = param_shapes(model)
    grads = {i: np.full(s, 0.5, np.float32) for i, s in enumerate(shapes)}
    params = [np.zeros(s, np.float32) for s in shapes]
    names = [f"p{i}" for i in range(len(shapes))]
    for step in range(rounds):
        msg = P.Grads(step, 0, 0, 0, (0, 8), count=64, loss_sum=1.0, grads=grads)
        sock.send_multipart(P.encode(msg.envelope("bench")), copy=False)
        if not sock.poll(int(ROUND_TIMEOUT * 1000)):
            raise SystemExit("exchange dealer: no reply from the router")
        task = P.decode(sock.recv_multipart(copy=False), job="bench")
        if checks:  # what workers/worker.py does with a TASK before computing
            P.expect_arrays(task, {n: (p.shape, p.dtype) for n, p in zip(names, params)})
            for n, p in zip(names, params):
                np.copyto(p, task.arrays[n])
    sock.close()
    ctx.term()


def spawn_role(role: str, router: Router, model: str, rounds: int, checks: bool = False,
               hop: bool = False, shm: tuple[str, int] | None = None):
    """Start one helper process of this file in the given role, connecting to ``router``."""
    argv = [sys.executable, os.path.abspath(__file__), "--role", role, "--connect",
            router.address, "--model", model, "--rounds", str(rounds)]
    argv += ["--checks"] if checks else []
    argv += ["--hop"] if hop else []
    argv += ["--shm", shm[0], "--slot", str(shm[1])] if shm else []
    # "=": a z85 key may begin with "-", which argparse would take for an option
    argv += [f"--server-key={router.public_key.decode()}"] if router.public_key else []
    return subprocess.Popen(argv, env=child_env(), stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------- zmq rounds
class Router:
    """The coordinator side of the hand-made rounds: a ROUTER on a random loopback port.

    With ``curve`` it is a CURVE server (fresh keys, no ZAP allow-list: the handshake cost is
    paid once per connection, while encryption is paid on every byte, which is what we time).
    """

    def __init__(self, curve: bool = False, ipc: bool = False):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.public_key = None
        self.tmpdir = None
        if curve:
            self.public_key, self.sock.curve_secretkey = zmq.curve_keypair()
            self.sock.curve_publickey = self.public_key
            self.sock.curve_server = True
        if ipc:  # a Unix socket in a private directory: only this user can connect
            self.tmpdir = tempfile.mkdtemp(prefix="dtrain-bench-")
            self.address = f"ipc://{self.tmpdir}/router"
            self.sock.bind(self.address)
        else:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
            self.address = f"tcp://127.0.0.1:{port}"

    def recv(self, procs) -> list:
        """One multipart message, failing (not hanging) when no helper sends one."""
        deadline = time.monotonic() + ROUND_TIMEOUT
        while not self.sock.poll(100):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("a helper process died or fell silent; see its output above")
        return self.sock.recv_multipart(copy=False)

    def close(self) -> None:
        self.sock.close(linger=0)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def timed_rounds(one_round, warmup: int, rounds: int) -> list[float]:
    """Seconds of each of ``rounds`` calls of ``one_round`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        one_round()
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        one_round()
        seconds.append(time.perf_counter() - began)
    return seconds


def floor_round(model: str, dealers: int, warmup: int, rounds: int, curve: bool = False,
                hop: bool = False, ipc: bool = False) -> float:
    """Median seconds of one raw round: every dealer's gradient bytes in, parameter bytes out."""
    router = Router(curve, ipc)
    procs = [spawn_role("floor-dealer", router, model, warmup + rounds, hop=hop)
             for _ in range(dealers)]
    params = [np.full(s, 0.25, np.float32) for s in param_shapes(model)]

    def one_round():
        peers = [router.recv(procs)[0] for _ in range(dealers)]
        for peer in peers:
            router.sock.send_multipart([peer, *params], copy=False)

    try:
        return statistics.median(timed_rounds(one_round, warmup, rounds))
    finally:
        reap(procs)
        router.close()


class LinkEnd:
    """Where the shared-memory floor's dealers connect: a Unix SOCK_SEQPACKET socket (the
    transport of dtrain's local links), for ``spawn_role``."""

    def __init__(self, path: str):
        self.address, self.public_key = path, None


def shm_floor_round(model: str, dealers: int, warmup: int, rounds: int) -> float:
    """Median seconds of one shared-memory round, the path dtrain's local workers take: each
    dealer writes its gradients into its own slot file and sends a small message over its Unix
    socket; the router side writes the parameters once into the board file and replies with a
    small message to each."""
    from dtrain.distributed.shared_memory import shm_root

    tmpdir = tempfile.mkdtemp(prefix="dtrain-bench-shm-", dir=shm_root())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(os.path.join(tmpdir, "link"))
    listener.listen(dealers)
    listener.settimeout(ROUND_TIMEOUT)
    procs, links = [], []
    try:
        shapes = param_shapes(model)
        board = shared_views(os.path.join(tmpdir, "params"), shapes)
        for slot in range(dealers):  # created here, as dtrain's coordinator creates them
            shared_views(os.path.join(tmpdir, f"grads{slot}"), shapes)
        params = [np.full(s, 0.25, np.float32) for s in shapes]
        end = LinkEnd(os.path.join(tmpdir, "link"))
        procs = [spawn_role("shm-floor-dealer", end, model, warmup + rounds,
                            shm=(tmpdir, slot)) for slot in range(dealers)]
        links = [listener.accept()[0] for _ in range(dealers)]
        poller = select.poll()
        for link in links:
            poller.register(link, select.POLLIN)
        by_fd = {link.fileno(): link for link in links}

        def one_round():
            waiting, deadline = set(by_fd), time.monotonic() + ROUND_TIMEOUT
            while waiting:
                for fd, _ in poller.poll(100):
                    if fd in waiting:
                        by_fd[fd].recv(64)
                        waiting.discard(fd)
                if waiting and (time.monotonic() > deadline
                                or any(p.poll() not in (None, 0) for p in procs)):
                    raise RuntimeError("a helper process died or fell silent")
            for view, p in zip(board, params):
                np.copyto(view, p)
            for link in links:
                link.send(b"params on the board")

        return statistics.median(timed_rounds(one_round, warmup, rounds))
    finally:
        reap(procs)
        for link in links:
            link.close()
        listener.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


def protocol_exchange(model: str, warmup: int, rounds: int, *, pool: bool, checks: bool,
                      curve: bool = False) -> tuple[float, str]:
    """Median seconds of one protocol exchange with one worker process; also a pool note.

    Up: the GRADS message a worker encodes, decoded here (into a ``BufferPool`` when ``pool``).
    Down: a TASK message of the parameters, decoded and (``checks``) copied into the replica.
    With ``checks`` the coordinator's work is included too: the snapshot copy of the
    parameters, ``expect_arrays``, ``check_finite`` and the owned gradient copies.
    """
    from dtrain.distributed import protocol as P

    router = Router(curve)
    procs = [spawn_role("exchange-dealer", router, model, warmup + rounds, checks)]
    shapes = param_shapes(model)
    params = {f"p{i}": np.full(s, 0.25, np.float32) for i, s in enumerate(shapes)}
    spec = {f"g{i}": (s, np.float32) for i, s in enumerate(shapes)}
    buffers = P.BufferPool() if pool else None
    state = {"step": 0}

    def one_round():
        frames = router.recv(procs)
        msg = P.decode(frames[1:], job="bench", buffers=buffers)
        if checks:
            P.expect_arrays(msg, spec)
            P.check_finite(msg.arrays)
            grads = [np.array(msg.arrays[f"g{i}"]) for i in range(len(shapes))]
            del grads
            arrays = {name: np.array(a) for name, a in params.items()}
        else:
            arrays = params
        del msg
        task = P.Envelope(P.TASK, "bench", state["step"], 0,
                         {"epoch": 0, "batch": state["step"], "nodes": [[0, 8]]}, arrays)
        router.sock.send_multipart([frames[0], *P.encode(task)], copy=False)
        state["step"] += 1

    try:
        median = statistics.median(timed_rounds(one_round, warmup, rounds))
    finally:
        reap(procs)
        router.close()
    note = f"pool hits {buffers.hits}, misses {buffers.misses}" if buffers is not None else ""
    return median, note


# ---------------------------------------------------------------------------- dtrain runs
def shuffle_override() -> dict:
    """Shuffling needs dtrain.data; without it the runs read samples in order (noted)."""
    try:
        import dtrain.data  # noqa: F401
    except ImportError:
        return {"shuffle": False}
    return {}


def per_step_workers(steps: list) -> list[dict]:
    """Per-step compute/comm seconds of each worker from the cumulative ``worker_times``."""
    out = []
    for prev, rec in itertools.pairwise(steps):
        now, before = rec.get("worker_times") or {}, prev.get("worker_times") or {}
        out.append({w: {k: t[k] - before.get(w, {}).get(k, 0.0) for k in ("compute_s", "comm_s")}
                    for w, t in now.items()})
    return out


def secure_by_default() -> bool:
    """True when ``dtrain.fit`` encrypts local worker traffic (CURVE) unless ``insecure=True``."""
    import inspect

    import dtrain

    return "insecure" in inspect.signature(dtrain.fit).parameters


def fit_run(job_name: str, workers: int, batch: int, warmup: int, steps: int, *,
            insecure: bool = False, **settings) -> dict:
    """Median step figures of one ``dtrain.fit`` run (steps after ``warmup`` only)."""
    import dtrain

    settings = {**shuffle_override(), **settings}
    if insecure and workers and secure_by_default():
        settings["insecure"] = True
    _, history = dtrain.fit(JOB, workers=workers, job_name=job_name, batch_size=batch,
                            max_steps=warmup + steps, **settings)
    records = history.steps
    seconds = [r["seconds"] for r in records[warmup:]]
    result = {"step": statistics.median(seconds), "batch": batch, "workers": workers}
    if workers:
        per = per_step_workers(records)[warmup - 1:]
        compute = [max(t["compute_s"] for t in s.values()) for s in per]
        comm = [statistics.mean(t["comm_s"] for t in s.values()) for s in per]
        result.update(compute=statistics.median(compute), comm=statistics.median(comm),
                      overhead=statistics.median(s - c for s, c in zip(seconds, compute)))
    return result


def best(runs: list[dict]) -> dict:
    """Of repeated runs of one configuration, the least disturbed (lowest median step time)."""
    return min(runs, key=lambda r: r["step"])


def ddp(mode: str, steps: int, **options) -> list[float] | None:
    """Per-step (or per-round) seconds from rank 0 of a 2-process gloo run; None without torch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    init = f"tcp://127.0.0.1:{free_port()}"
    extra = [f"--{k}={v}" for k, v in options.items()]
    procs = [subprocess.Popen([sys.executable, DDP, "--mode", mode, "--rank", str(rank),
                               "--world", "2", "--init", init, "--steps", str(steps), *extra],
                              env=child_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL)
             for rank in range(2)]
    try:
        out, _ = procs[0].communicate(timeout=CHILD_TIMEOUT)
        procs[1].wait(timeout=CHILD_TIMEOUT)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if procs[0].returncode or procs[1].returncode:
        raise RuntimeError(f"ddp_reference.py --mode {mode} failed (exit codes "
                           f"{procs[0].returncode}, {procs[1].returncode})")
    return json.loads(out.decode().strip().splitlines()[-1])["seconds"]


# ---------------------------------------------------------------------------- report
def fmt_ms(seconds: float | None) -> str:
    return f"{'-':>8}" if seconds is None else f"{seconds * 1e3:8.2f}"


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def fmt_x(ratio: float | None, target: float | None = None) -> str:
    if ratio is None:
        return "-"
    mark = "" if target is None else (" ok" if ratio <= target else " MISS")
    return f"{ratio:.2f}x{mark}"


def part_one_runs(secure: bool) -> list[tuple[str, int, bool, dict]]:
    """(label, workers, CURVE, extra settings) of the dtrain runs of part 1."""
    runs = [("in-process", 0, False, {})]
    for workers in (1, 2):
        name = f"{workers} worker" + ("s" if workers > 1 else "")
        if secure:
            runs.append((f"{name}, CURVE", workers, True, {}))
        runs.append((f"{name}" + (", insecure" if secure else ""), workers, False, {}))
    runs.append(("2 workers, 2 shards" + (", CURVE" if secure else ""), 2, secure,
                 {"micro_shards": 2}))
    if secure:  # the like-for-like comparison with DDP: one shard per worker, no encryption
        runs.append(("2 workers, 2 shards, insecure", 2, False, {"micro_shards": 2}))
    # every array over the socket, as for workers on other machines (minus the link itself)
    off = {"shared_memory": False}
    if secure:
        runs.append(("2 workers, net, CURVE", 2, True, off))
    runs.append(("2 workers, net" + (", insecure" if secure else ""), 2, False, off))
    return runs


def path_floor(floor: dict, workers: int, curve: bool, extra: dict) -> float | None:
    """The floor of the path a run's arrays take: shared memory, or the socket (with CURVE when
    the run encrypts: there every array is encrypted, not only headers)."""
    if not workers:
        return None
    if extra.get("shared_memory", True):
        return floor.get((workers, "shm"))
    return floor.get((workers, curve))


def part_one(args) -> None:
    """Throughput table of the 784-512-512-10 MLP."""
    warm, steps = args.warmup, args.steps
    secure = secure_by_default()
    runs = part_one_runs(secure)
    print(f"\n== MLP 784-512-512-10 float32 SGD, 8 micro-shards: median of {steps} steps after "
          f"{warm} warm-up, best of {args.repeats} interleaved repeat(s) ==")
    if shuffle_override():
        print("   (dtrain.data missing: runs read samples in order instead of shuffled)")
    rounds = max(steps, 10)
    fits: dict = {}
    floors: dict = {}
    ddps: dict = {}
    for _ in range(args.repeats):
        for batch in args.batches:
            seconds = ddp("train", warm + steps, model="MLP512", batch=batch)
            if seconds:
                ddps.setdefault(batch, []).append(statistics.median(seconds[warm:]))
            for dealers in (1, 2):
                floors.setdefault((dealers, "shm"), []).append(
                    shm_floor_round("MLP512", dealers, warm, rounds))
                for curve in (False, True) if secure else (False,):
                    floors.setdefault((dealers, curve), []).append(
                        floor_round("MLP512", dealers, warm, rounds, curve))
            floors.setdefault("hop", []).append(
                floor_round("MLP512", 1, warm, rounds, hop=True))
            floors.setdefault("ipc", []).append(floor_round("MLP512", 1, warm, rounds, ipc=True))
            for label, workers, curve, extra in runs:
                fits.setdefault((batch, label), []).append(
                    fit_run("MLP512", workers, batch, warm, steps, insecure=not curve, **extra))
    floor = {key: min(v) for key, v in floors.items()}
    head = (f"{'batch':>5} {'run':<32} {'step ms':>8} {'samples/s':>9} {'compute':>8} "
            f"{'comm':>8} {'floor':>8} {'comm/floor':>11} {'(step-cmp)/floor':>17} "
            f"{'step/DDP':>10}")
    print(head + "\n" + "-" * len(head))
    for batch in args.batches:
        ddp_step = min(ddps[batch]) if batch in ddps else None
        for label, workers, curve, extra in runs:
            r = best(fits[(batch, label)])
            f = path_floor(floor, workers, curve, extra)
            ddp_x = r["step"] / ddp_step if ddp_step and workers == 2 else None
            print(f"{batch:>5} {label:<32} {fmt_ms(r['step'])} {batch / r['step']:9.0f} "
                  f"{fmt_ms(r.get('compute'))} {fmt_ms(r.get('comm'))} {fmt_ms(f)} "
                  f"{fmt_x(ratio(r.get('comm'), f), 1.10):>11} "
                  f"{fmt_x(ratio(r.get('overhead'), f)):>17} "
                  f"{fmt_x(ddp_x, 0.90):>10}")
        if ddp_step:
            print(f"{batch:>5} {'DDP gloo 2 procs':<32} {fmt_ms(ddp_step)} "
                  f"{batch / ddp_step:9.0f}")
        base = best(fits[(batch, "in-process")])["step"]
        ratios = ", ".join(f"{label} {base / best(fits[(batch, label)])['step']:.2f}x"
                           for label, workers, _, _ in runs if workers)
        print(f"{'':>5} speed-up over in-process: {ratios}")
    for dealers in (1, 2):
        line = (f"floors, {dealers} dealer(s): shared memory {fmt_ms(floor[(dealers, 'shm')])}, "
                f"socket {fmt_ms(floor[(dealers, False)])}")
        if secure:
            line += f", socket with CURVE {fmt_ms(floor[(dealers, True)])}"
        print(line + " ms")
    print(f"socket floor through a worker-style I/O thread (inproc PAIR hop), 1 dealer: "
          f"{fmt_ms(floor['hop']).strip()} ms = {floor['hop'] / floor[(1, False)]:.2f}x the "
          "raw socket floor")
    print(f"socket floor over ipc:// (Unix socket) instead of tcp://127.0.0.1, 1 dealer: "
          f"{fmt_ms(floor['ipc']).strip()} ms = {floor['ipc'] / floor[(1, False)]:.2f}x")
    print("compute: the slower worker's forward/backward per step; comm: a worker's TASK-sent "
          "to GRADS-handled time minus its compute\n(the coordinator's measure, mean of "
          "workers); step-cmp: step time minus the slower worker's compute (adds planning,\n"
          "reduction, optimizer); floor: a hand-written round of the same bytes over the path "
          "the run's arrays take, with as\nmany dealers (best of repeats): shared memory for "
          "the default runs (gradients into a slot file and the parameters\nout of a board "
          "file, small ZeroMQ messages), the socket for 'net' runs (every array in raw "
          "frames, CURVE if the run\nencrypts). 'net' runs are the path of workers on other "
          "machines without a link in between: bench_crosshost.py adds\nthe link. Targets: "
          "comm/floor <= 1.10x; 2-worker step/DDP <= 0.90x, marked on every 2-worker row: 2 "
          "micro-shards\nis the like-for-like setting (one shard per worker, as DDP computes), "
          "8 the default.")


# (label, BufferPool, coordinator work, CURVE) of the protocol exchanges in part 2
EXCHANGES = [("protocol, no pool", False, False, False),
             ("protocol, BufferPool", True, False, False),
             ("protocol + coordinator work", False, True, False),
             ("  the same over CURVE", False, True, True)]


def part_two(args) -> None:
    """One exchange of the 10M-parameter MLP against a gloo all_reduce of its gradient."""
    shapes = param_shapes("MLP2048")
    numel = sum(int(np.prod(s)) for s in shapes)
    warm, rounds = args.warmup, args.rounds
    secure = secure_by_default()
    print(f"\n== MLP 784-2048-2048-2048-10: {numel / 1e6:.2f}M parameters, "
          f"{numel * 4 / 2**20:.1f} MiB each way: median of {rounds} rounds after {warm} warm-up, "
          f"best of {args.repeats} interleaved repeat(s) ==")
    found: dict = {}
    fit_steps = max(3, args.steps // 3)
    # (label, CURVE, shared memory): the local path, and every array over the socket
    fits = [("dtrain.fit step-compute", False, True), ("  the same, network", False, False)]
    if secure:
        fits = [("dtrain.fit step-compute, CURVE", True, True),
                ("dtrain.fit, insecure", False, True),
                ("dtrain.fit, network, CURVE", True, False),
                ("dtrain.fit, network, insecure", False, False)]
    for _ in range(args.repeats):
        seconds = ddp("allreduce", warm + rounds, numel=numel)
        if seconds:
            found.setdefault("all_reduce", []).append((statistics.median(seconds[warm:]), ""))
        found.setdefault("raw ZeroMQ round (floor)", []).append(
            (floor_round("MLP2048", 1, warm, rounds), ""))
        found.setdefault("  raw round over CURVE", []).append(
            (floor_round("MLP2048", 1, warm, rounds, curve=True), ""))
        found.setdefault("  raw round over ipc://", []).append(
            (floor_round("MLP2048", 1, warm, rounds, ipc=True), ""))
        for label, pool, checks, curve in EXCHANGES:
            found.setdefault(label, []).append(
                protocol_exchange("MLP2048", warm, rounds, pool=pool, checks=checks, curve=curve))
        for label, curve, shared in fits:
            r = fit_run("MLP2048", 1, 64, warm, fit_steps, insecure=not curve,
                        shared_memory=shared)
            note = (f"step {r['step'] * 1e3:.1f} ms, compute {r['compute'] * 1e3:.1f} ms, "
                    f"comm {r['comm'] * 1e3:.1f} ms")
            found.setdefault(label, []).append((r["overhead"], note))
    figure = {key: min(v, key=lambda t: t[0]) for key, v in found.items()}
    ar_s = figure.pop("all_reduce")[0] if "all_reduce" in figure else None
    floor = figure["raw ZeroMQ round (floor)"][0]
    print(f"{'exchange (1 worker, batch 64)':<32} {'ms':>8} {'/all_reduce':>12} {'/floor':>7}  "
          "note")
    for label, (seconds, note) in figure.items():
        print(f"{label:<32} {fmt_ms(seconds)} {fmt_x(ratio(seconds, ar_s), 2.0):>12} "
              f"{fmt_x(seconds / floor):>7}  {note}")
    if ar_s:
        print(f"{'gloo all_reduce, 2 procs':<32} {fmt_ms(ar_s)}")
    print("protocol rows: encode/send/recv/decode of the full GRADS message up and of the TASK "
          "message down through ROUTER/DEALER;\n'+ coordinator work' adds the parameter "
          "snapshot, expect_arrays, check_finite and owned gradient copies (coordinator) and\n"
          "expect_arrays + copy into the replica (worker). BufferPool only serves arrays split "
          "over several frames\n(> protocol.MAX_FRAME_BYTES). dtrain.fit rows: step time minus "
          "worker compute (adds the optimizer step);\nthe local worker's arrays go through "
          "shared memory, or over the socket in the 'network' rows (shared_memory=False),\n"
          "the path of a worker on another machine. Target: one exchange <= 2.0x the "
          "all_reduce.")


def profile_run(args, batch: int) -> None:
    """cProfile of the coordinator (this process) and of both workers in a 2-worker run.

    Workers run under ``python -m cProfile`` (their compute thread is profiled; the I/O thread
    is not). Only the timed steps are profiled in the coordinator; the workers' profiles also
    hold their start-up, the join and the warm-up steps, so their per-step figures are upper
    bounds except the forward/backward and message rows, which only steps produce.
    """
    from dtrain.distributed.coordinator import Coordinator
    from dtrain.distributed.job import new_job_id, resolve_job
    from dtrain.distributed.trainer import Trainer
    from dtrain.launcher.local import worker_env

    job, digest, script = resolve_job(JOB, "MLP512")
    warm, steps = args.warmup, args.steps
    settings = job.settings(batch_size=batch, max_steps=warm + steps, **shuffle_override())
    job_id = new_job_id()
    keys, env = {}, worker_env(1)
    secure = secure_by_default() and not args.insecure
    if secure:
        from dtrain.distributed.security import ephemeral_pair

        server_keys, client_keys = ephemeral_pair()
        keys, env = {"keys": server_keys}, worker_env(1, client_keys.env())
    executor = Coordinator(expected_workers=2, job_id=job_id, digest=digest, settings=settings,
                           **keys)
    tmp = tempfile.mkdtemp(prefix="dtrain-bench-prof-")
    outs = [os.path.join(tmp, f"worker{rank}.prof") for rank in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "cProfile", "-o", outs[rank], "-m", "dtrain",
                               "worker", "--rank", str(rank), "--connect", executor.address,
                               "--job-id", job_id, "--job", "MLP512", script]
                              + ([] if secure else ["--insecure"]),
                              env=env, stdin=subprocess.DEVNULL)
             for rank in range(2)]
    profiler = cProfile.Profile()
    try:
        trainer = Trainer(job, settings, executor)
        executor.start(trainer)
        if trainer.batches_per_epoch() < warm + steps:
            raise ValueError(f"profile needs {warm + steps} steps inside one epoch")
        for _ in range(warm):
            trainer.train_step()
        profiler.enable()
        for _ in range(steps):
            trainer.train_step()
        profiler.disable()
    finally:
        executor.close()
        reap(procs)
    step_ms = statistics.median(r["seconds"] for r in trainer.history.steps[warm:]) * 1e3
    print(f"\n== profile: 2 workers{', CURVE' if secure else ''}, batch {batch}, {steps} "
          f"profiled steps after {warm}, median {step_ms:.1f} ms per step under the profiler ==")
    print_breakdown("coordinator", pstats.Stats(profiler), steps, COORDINATOR_PARTS)
    for rank, path in enumerate(outs):
        if os.path.exists(path):
            print_breakdown(f"worker {rank} (compute thread; all {warm + steps} tasks)",
                            pstats.Stats(path), warm + steps, WORKER_PARTS)
    print_top("coordinator", pstats.Stats(profiler), args.top)
    if os.path.exists(outs[0]):
        print_top("worker 0, whole run", pstats.Stats(outs[0]), args.top)


# (label, file suffix, function name): cumulative time of that function, per step
COORDINATOR_PARTS = [
    ("step total (Trainer.train_step)", "trainer.py", "train_step"),
    ("  executor.compute (send, wait, receive)", "coordinator.py", "compute"),
    ("    snapshot copy of parameters", "coordinator.py", "<dictcomp>@snapshot"),
    ("    TASK encode + send", "coordinator.py", "_ask"),
    ("    waiting (socket poll)", "socket.py", "poll"),
    ("    GRADS handling (decode + checks)", "coordinator.py", "handle"),
    ("      protocol.decode", "protocol.py", "decode"),
    ("      _node_value (checks + copies)", "coordinator.py", "_node_value"),
    ("        check_finite", "protocol.py", "check_finite"),
    ("  Trainer.reduce (tree sum, mean gradients)", "trainer.py", "reduce"),
    ("    tree sum", "shards.py", "tree_sum"),
    ("  optimizer.step (SGD)", "sgd.py", "step"),
    ("  Trainer.plan", "trainer.py", "plan"),
]
WORKER_PARTS = [
    ("TASK handling (Worker._task)", "worker.py", "_task"),
    ("  forward/backward (ShardComputer.node_value)", "compute.py", "node_value"),
    ("  blas_threads enter+exit (threadpoolctl)", "trainer.py", "blas_threads"),
    ("  TASK checks (expect_arrays)", "protocol.py", "expect_arrays"),
    ("  GRADS encode", "protocol.py", "encode"),
    ("  GRADS handed to the I/O thread (send)", "socket.py", "send_multipart"),
    ("TASK decode (compute thread)", "protocol.py", "decode"),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float | None:
    """Cumulative seconds of every profiled function ``name`` defined in a file ``*suffix``.

    ``name`` may end in ``@text``: then only a function (e.g. a ``<dictcomp>``) whose first
    line contains ``text`` counts. None when no such function ran (renamed in this version?).
    """
    name, _, marker = name.partition("@")
    total = None
    for (path, line, func), (_, _, _, ct, _) in stats.stats.items():
        if func == name and path.endswith(suffix) and (not marker or marker in _line(path, line)):
            total = (total or 0.0) + ct
    return total


def _line(path: str, number: int) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return next(itertools.islice(f, number - 1, None), "")
    except OSError:
        return ""


def print_breakdown(who: str, stats: pstats.Stats, steps: int, parts) -> None:
    print(f"-- {who}: cumulative ms per step (cProfile inflates Python-heavy code)")
    for label, suffix, name in parts:
        seconds = cumulative(stats, suffix, name)
        shown = "     n/a" if seconds is None else f"{seconds / steps * 1e3:8.2f}"
        print(f"   {label:<46} {shown}   {suffix}:{name}")


def print_top(who: str, stats: pstats.Stats, top: int) -> None:
    buf = io.StringIO()
    stats.stream = buf
    stats.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    print(f"-- {who}: top {top} functions by own time")
    print("\n".join(lines[start:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_length_options(parser, "a short smoke run (few steps)", RUN_LENGTH)
    parser.add_argument("--part", choices=("all", "1", "2", "none"), default="all",
                        help="which tables to measure (none: only --profile)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the coordinator and workers of a 2-worker run")
    parser.add_argument("--insecure", action="store_true",
                        help="profile without CURVE encryption (when dtrain.fit has it)")
    parser.add_argument("--top", type=int, default=15, help="functions listed by the profile")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--connect", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="MLP512", help=argparse.SUPPRESS)
    parser.add_argument("--checks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-key", help=argparse.SUPPRESS)
    parser.add_argument("--hop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shm", help=argparse.SUPPRESS)
    parser.add_argument("--slot", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "floor-dealer":
        return role_floor_dealer(args.connect, args.model, args.rounds, args.server_key,
                                 args.hop)
    if args.role == "shm-floor-dealer":
        return role_shm_floor_dealer(args.connect, args.model, args.rounds, args.shm, args.slot)
    if args.role == "exchange-dealer":
        return role_exchange_dealer(args.connect, args.model, args.rounds, args.checks,
                                    args.server_key)
    if args.role is not None:
        parser.error(f"unknown --role {args.role!r}")
    settle_run_length(args, RUN_LENGTH)
    args.batches = (256, 64)
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; 1 BLAS thread per "
          "process; 2 workers + coordinator = 3 processes on these cores")
    with threadpool_limits(limits=1):
        if args.part in ("all", "1"):
            part_one(args)
        if args.part in ("all", "2"):
            part_two(args)
        if args.profile:
            for batch in args.batches:
                profile_run(args, batch)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
