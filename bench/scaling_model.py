"""A model of one training step on 8, 64 and 512 hosts: today's star, the planned sharded reducers,
and the ring all-reduce bound.

Nothing here is measured on many hosts: the model computes, per step, the bytes each host's link
carries in each direction and the step time, from (a) the real code where the code decides:
which tree nodes each worker sends (``shards.assign``), how many samples they hold
(``BatchPlan``) and every message's header (``protocol.pack``, see ``wire_bytes.py``); and (b) a
few costs measured on this machine (``Costs``). The designs:

- ``star`` (today): the coordinator and worker 0 share host 0 (shared memory); every other
  worker with nodes gets a TASK with all the parameters, computes, and sends one GRADS per node.
  Through the coordinator's link the TASKs go out together and share it, the workers compute,
  the GRADS come back together; then the tree sum and the optimizer. Nothing overlaps.
- ``sharded`` (the design being built): host h also runs the reducer of a fixed range of about
  P/N parameters, cut out of every layer. Each worker sends every other owner its slice of each
  node value, owners add in tree order, step the optimizer on their range and send the range's
  new parameters to every other worker. Every link carries ~2·P·4·(N-1)/N bytes each way, both
  ways at once. ``sharded, overlapped``: a layer's slices leave as soon as backward has
  produced them and the first layers' parameters are sent first (a discrete-event run of one
  host's uplink; all hosts are alike, so its downlink sees the same traffic at the same time).
- ``ring bound``: compute, then 2·P·4·(N-1)/N bytes per link at the link's rate (the issue's
  bound). ``ring, overlapped``: a DDP-like ring all-reduce per layer in backward order, each of
  its 2·(N-1) steps paying the latency and a message's CPU; plaintext, as gloo and NCCL send.

A phase (one exchange) costs the latency plus the larger of its wire time and the CPU of the
busiest process in it (encoding, checks, CURVE on the coordinator's sockets, AES-256-GCM
sealing between the sharded reduction's peers), which run alongside the wire. Bytes are
reported as the link carries them (TCP/IP headers per MSS-sized packet, acknowledgements
included); the issue's formulas count the arrays alone, so the model's figures sit ~5% above.

Run: ``python bench/scaling_model.py`` (the table), ``--markdown`` (the README's table),
``--check`` (model against the measurements of ``bench_crosshost.py`` in README.md; exits 1 when
the bytes are off by more than 10%).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import wire_bytes as wb

from dtrain.distributed.sealing import peers_seal
from dtrain.distributed.shards import BatchPlan, assign


@dataclass(frozen=True)
class Costs:
    """CPU seconds of the work around the wire, measured on this machine (1 BLAS thread)."""

    # bench_shards.py, batch 32-256 at 1-8 micro-shards: ~25 us per sample of the 0.67M MLP
    # (its multiply-adds scale with the parameters), ~0.4 ms per extra micro-shard (its own
    # weight gradients and one tree addition), ~1.5 ms per step whatever the work
    sample_param_s: float = 3.7e-11
    shard_param_s: float = 0.6e-9
    step_fixed_s: float = 1.5e-3
    optimizer_param_s: float = 2e-9  # SGD, NumPy, per parameter
    add_byte_s: float = 0.1e-9  # one tree-sum addition, per byte of one operand
    # timed_dtrain.py on a quiet machine: the coordinator's decode and checks 1.0-1.3 ms and its
    # sends 0.7-1.6 ms for 2.7 MB
    handle_byte_s: float = 0.4e-9
    message_s: float = 30e-6  # per message at each end: Python encode/decode, ZeroMQ
    # CURVE minus insecure step: 4.7 ms for the 5.4 MB through the coordinator at 2 hosts
    # (quiet), 14-34 ms for 16 MB at 4 hosts (README, loaded machine)
    curve_byte_s: float = 1.0e-9
    # peers sealing with AES-256-GCM (sealing.py), in the workers' main threads: 23 ms of CPU a
    # worker-step for 86 MB sent and received (bench_exchange10m, Intel Xeon, 2026-12-07 night;
    # 0.12 ns a byte alone)
    seal_byte_s: float = 0.27e-9
    cores: int | None = None  # None: every host has its own cores; n: all hosts share n cores


@dataclass(frozen=True)
class Setup:
    """One configuration: model, hosts (one worker each), global batch, micro-shards, link."""

    model: str  # a model of dist_mlp_job.SIZES: MLP512 (0.67M parameters), MLP2048 (10M)
    hosts: int
    batch: int
    micro_shards: int
    rate_bps: float
    curve: bool = True  # keys on: CURVE on the coordinator's sockets, peers as peer_cipher says
    peer_cipher: str = "aes-gcm"  # the sharded peers': sealed (AES-256-GCM) or curve
    latency_s: float = 50e-6  # one way, per exchange
    costs: Costs = field(default_factory=Costs)
    counting: wb.Counting = wb.ON_THE_WIRE  # how reported bytes count packets

    @property
    def params(self) -> int:
        return wb.parameter_count(self.model)


@dataclass(frozen=True)
class Link:
    """Bytes one host's link carries per step, in each direction."""

    sent: int
    received: int

    @property
    def busier(self) -> int:
        return max(self.sent, self.received)


@dataclass(frozen=True)
class Step:
    """The model's answer for one design: links, hosts with work, seconds per step."""

    design: str
    micro_shards: int
    working: int  # hosts whose worker computes
    busiest: Link
    typical: Link
    seconds: float


@dataclass(frozen=True)
class Work:
    """What one worker does in a step, from ``shards.assign`` and the batch's plan."""

    nodes: int  # tree nodes it sends a value for
    valued: int  # of which hold samples (the others send a header alone)
    shards: int
    samples: int


def host_work(hosts: int, micro_shards: int, batch: int) -> list[Work]:
    """Every worker's work, worker 0 first, exactly as the coordinator assigns it."""
    plan = BatchPlan(step=0, epoch=0, batch=0, sample_ids=np.arange(batch),
                     micro_shards=micro_shards)
    out = []
    for nodes in assign(micro_shards, list(range(hosts))).values():
        counts = [plan.node_count(node) for node in nodes]
        out.append(Work(nodes=len(nodes), valued=sum(c > 0 for c in counts),
                        shards=sum(hi - lo for lo, hi in nodes), samples=sum(counts)))
    return out


def compute_seconds(work: Work, params: int, costs: Costs) -> float:
    """Forward and backward of a worker's shards (0 when it has none)."""
    if not work.nodes:
        return 0.0
    return (costs.step_fixed_s + work.samples * params * costs.sample_param_s
            + work.shards * params * costs.shard_param_s)


def on_cores(seconds: list[float], cores: int | None) -> float:
    """Wall time of processes running at once: their longest, or their sum over shared cores."""
    longest = max(seconds, default=0.0)
    return longest if cores is None else max(longest, sum(seconds) / cores)


def phase_seconds(setup: Setup, wire_stream: int, cpu: list[float]) -> float:
    """One exchange: latency, then the wire or the busiest CPU, whichever is slower."""
    wire = wb.with_packets(wire_stream) * 8 / setup.rate_bps
    return setup.latency_s + max(wire, on_cores(cpu, setup.costs.cores))


def handling_seconds(setup: Setup, stream: int, messages: int, curve: bool | None = None,
                     peers: bool = False) -> float:
    """CPU of one process sending or receiving ``messages`` totalling ``stream`` bytes
    (``peers``: between the sharded reduction's workers, which seal under ``peer_cipher``)."""
    c = setup.costs
    crypto = 0.0
    if setup.curve if curve is None else curve:
        crypto = c.seal_byte_s if peers and sealed(setup) else c.curve_byte_s
    return stream * (c.handle_byte_s + crypto) + messages * c.message_s


def sealed(setup: Setup) -> bool:
    """The sharded reduction's peers seal their messages (keys on, peer_cipher aes-gcm)."""
    return peers_seal(setup.curve, setup.peer_cipher)


def counted(setup: Setup, sent: int, received: int) -> Link:
    """A host's link as counted: streams with their packet headers, plus the acknowledgements."""
    k = setup.counting
    return Link(sent=wb.with_packets(sent, k) + wb.acks(received, k),
                received=wb.with_packets(received, k) + wb.acks(sent, k))


# ---------------------------------------------------------------------------- today's star
def star(setup: Setup) -> Step:
    """Today's coordinator: all parameters down to every worker, every node value back up."""
    work = host_work(setup.hosts, setup.micro_shards, setup.batch)
    task = wb.zmq_bytes(wb.task_frames(setup.model), setup.curve)
    grads = wb.zmq_bytes(wb.grads_frames(setup.model), setup.curve)
    empty = wb.zmq_bytes(wb.empty_grads_frames(), setup.curve)
    asked = [w for w in work[1:] if w.nodes]  # worker 0 shares the coordinator's memory
    up = [w.valued * grads + (w.nodes - w.valued) * empty for w in asked]
    down_stream, up_stream = len(asked) * task, sum(up)
    coordinator = counted(setup, down_stream, up_stream)
    typical = typical_link([counted(setup, u, task) for u in up] or [Link(0, 0)])

    p, c = setup.params, setup.costs
    down = phase_seconds(setup, down_stream, [
        handling_seconds(setup, down_stream, len(asked)),
        *(handling_seconds(setup, task, 1) for _ in asked)])
    compute = on_cores([compute_seconds(w, p, c) for w in work], c.cores)
    back = phase_seconds(setup, up_stream, [
        handling_seconds(setup, up_stream, sum(w.nodes for w in asked)),
        *(handling_seconds(setup, u, w.nodes) for u, w in zip(up, asked))])
    values = sum(w.valued for w in work)
    reduce = values * p * 4 * c.add_byte_s + p * c.optimizer_param_s  # the sum, the mean, SGD
    return Step("star (today)", setup.micro_shards, sum(1 for w in work if w.nodes),
                coordinator, typical, down + compute + back + reduce)


# ---------------------------------------------------------------------------- sharded reducers
def ranges(values: int, owners: int) -> list[int]:
    """Sizes of ``owners`` balanced contiguous ranges of ``values`` numbers."""
    return [(o + 1) * values // owners - o * values // owners for o in range(owners)]


def slice_stream(values: int, setup: Setup) -> int:
    """Stream bytes of one message holding a slice of ``values`` parameters."""
    frames = wb.slice_frames(values)
    if sealed(setup):
        return wb.zmq_bytes(wb.sealed_frames(frames), curve=False)
    return wb.zmq_bytes(frames, setup.curve)


def slices_stream(sizes: Counter, setup: Setup) -> int:
    """Stream bytes of one message per range, for ranges counted by size."""
    return sum(count * slice_stream(size, setup) for size, count in sizes.items())


@dataclass(frozen=True)
class Exchange:
    """One host's part in one all-to-all exchange: stream bytes and messages each way."""

    sent: int
    received: int
    messages_out: int
    messages_in: int


def bucket_exchanges(setup: Setup, work: list[Work], values: int, host: int) -> tuple:
    """(gradient slices, new parameters) of one bucket of ``values`` parameters for ``host``.

    The bucket is cut into one range per host; the host sends each other owner its slice of
    each node value and receives the slices of its own range; then it sends its range's
    parameters to every other host and receives every other range.
    """
    own = ranges(values, setup.hosts)
    mine = own[host]
    others = Counter(own)
    others[mine] -= 1
    to_others = slices_stream(others, setup)
    valued = [w.valued for w in work]
    peers = setup.hosts - 1
    from_peers = sum(valued) - valued[host]
    grads = Exchange(sent=valued[host] * to_others,
                     received=from_peers * slice_stream(mine, setup),
                     messages_out=valued[host] * peers, messages_in=from_peers)
    params = Exchange(sent=peers * slice_stream(mine, setup), received=to_others,
                      messages_out=peers, messages_in=peers)
    return grads, params


def exchange_seconds(setup: Setup, ex: Exchange) -> float:
    """Both directions at once: the busier one on the wire; the sending and the receiving
    process each handle their side."""
    return phase_seconds(setup, max(ex.sent, ex.received), [
        handling_seconds(setup, ex.sent, ex.messages_out, peers=True),
        handling_seconds(setup, ex.received, ex.messages_in, peers=True)])


def sharded_links(setup: Setup, work: list[Work]) -> list[Link]:
    links = []
    for h in range(setup.hosts):
        grads, params = bucket_exchanges(setup, work, setup.params, h)
        links.append(counted(setup, grads.sent + params.sent, grads.received + params.received))
    return links


def busiest_host(links: list[Link]) -> int:
    return max(range(len(links)), key=lambda h: links[h].busier)


def typical_link(links: list[Link]) -> Link:
    """The median link by its busier direction."""
    return sorted(links, key=lambda link: link.busier)[len(links) // 2]


def owner_seconds(setup: Setup, work: list[Work], values: int) -> float:
    """An owner's tree sum and SGD over its range of a bucket of ``values`` parameters."""
    mine = -(-values // setup.hosts)
    c = setup.costs
    return sum(w.valued for w in work) * mine * 4 * c.add_byte_s + mine * c.optimizer_param_s


def sharded(setup: Setup) -> Step:
    """Reducers on every host, no overlap: compute, slices out, reduce, parameters back."""
    work = host_work(setup.hosts, setup.micro_shards, setup.batch)
    links = sharded_links(setup, work)
    h = busiest_host(links)
    grads, params = bucket_exchanges(setup, work, setup.params, h)
    compute = on_cores([compute_seconds(w, setup.params, setup.costs) for w in work],
                       setup.costs.cores)
    seconds = (compute + exchange_seconds(setup, grads)
               + owner_seconds(setup, work, setup.params) + exchange_seconds(setup, params))
    return Step("sharded (planned)", setup.micro_shards, sum(1 for w in work if w.nodes),
                links[h], typical_link(links), seconds)


def layer_times(setup: Setup, work: list[Work]) -> tuple[list[float], list[float]]:
    """(forward, backward) seconds per layer of the slowest worker: a third of its compute
    forward, two thirds backward, split by the layers' parameter counts."""
    sizes = wb.layer_sizes(setup.model)
    total = max(compute_seconds(w, setup.params, setup.costs) for w in work)
    fwd = [total / 3 * s / setup.params for s in sizes]
    return fwd, [2 * f for f in fwd]


def sharded_overlapped(setup: Setup) -> Step:
    """Reducers on every host; a layer's slices leave when its backward ends, parameters of the
    first layers first: a discrete-event run of the busiest host's uplink."""
    work = host_work(setup.hosts, setup.micro_shards, setup.batch)
    links = sharded_links(setup, work)
    h = busiest_host(links)
    sizes = wb.layer_sizes(setup.model)
    fwd, bwd = layer_times(setup, work)
    layers = range(len(sizes))
    done_backward = {}
    t = sum(fwd)
    for i in reversed(layers):
        t += bwd[i]
        done_backward[i] = t
    cost = {i: [exchange_seconds(setup, ex) for ex in bucket_exchanges(setup, work, sizes[i], h)]
            for i in layers}
    arrived = uplink_schedule(done_backward, cost,
                              {i: owner_seconds(setup, work, sizes[i]) for i in layers})
    # the next step's forward runs layer by layer, each once its parameters have arrived
    period = max(arrived[i] - sum(fwd[:i]) for i in layers)
    return Step("sharded, overlapped", setup.micro_shards, sum(1 for w in work if w.nodes),
                links[h], typical_link(links), period)


def uplink_schedule(ready: dict, cost: dict, reduce: dict) -> dict:
    """When each layer's new parameters have arrived, sending one exchange at a time.

    ``ready[i]``: layer i's gradients exist; ``cost[i]``: (gradient exchange, parameter
    exchange) seconds; ``reduce[i]``: the owner's work between them. Whenever the link is free
    it takes, of the exchanges that can start, parameters before gradients, first layers first.
    """
    waiting = {("grads", i): ready[i] for i in ready}
    arrived, free = {}, 0.0
    while waiting:
        start_of = {job: max(free, at) for job, at in waiting.items()}
        soonest = min(start_of.values())
        job = min((j for j, s in start_of.items() if s == soonest),
                  key=lambda j: (j[0] == "grads", j[1]))
        kind, i = job
        del waiting[job]
        free = soonest + cost[i][kind == "params"]
        if kind == "grads":
            waiting[("params", i)] = free + reduce[i]
        else:
            arrived[i] = free
    return arrived


# ---------------------------------------------------------------------------- ring
def ring_payload(setup: Setup) -> float:
    """The issue's figure: 2·P·4·(N-1)/N bytes through every link, each way."""
    n = setup.hosts
    return 2 * setup.params * 4 * (n - 1) / n


def ring_bound(setup: Setup) -> Step:
    """Compute, then the ring's bytes at the link's rate: no latency, no overlap, no CPU."""
    work = host_work(setup.hosts, setup.micro_shards, setup.batch)
    compute = on_cores([compute_seconds(w, setup.params, setup.costs) for w in work],
                       setup.costs.cores)
    stream = round(ring_payload(setup))
    link = counted(setup, stream, stream)
    return Step("ring bound", setup.micro_shards, sum(1 for w in work if w.nodes), link, link,
                compute + ring_payload(setup) * 8 / setup.rate_bps)


def ring_allreduce_seconds(setup: Setup, values: int) -> float:
    """One ring all-reduce of ``values`` float32: 2·(N-1) steps of one chunk each, each paying
    the latency, a message's CPU and the chunk's addition (plaintext)."""
    n = setup.hosts
    chunk = -(-values // n) * 4
    c = setup.costs
    cpu = handling_seconds(setup, chunk, 1, curve=False) + chunk * c.add_byte_s
    return 2 * (n - 1) * phase_seconds(setup, chunk, [cpu])


def ring_overlapped(setup: Setup) -> Step:
    """A DDP-like ring: one all-reduce per layer in backward order, started when the layer's
    backward ends and run one at a time, then the optimizer on every host."""
    work = host_work(setup.hosts, setup.micro_shards, setup.batch)
    sizes = wb.layer_sizes(setup.model)
    fwd, bwd = layer_times(setup, work)
    t = finished = sum(fwd)
    for i in reversed(range(len(sizes))):
        t += bwd[i]
        finished = max(finished, t) + ring_allreduce_seconds(setup, sizes[i])
    stream = round(ring_payload(setup))
    link = counted(setup, stream, stream)
    return Step("ring, overlapped", setup.micro_shards, sum(1 for w in work if w.nodes), link,
                link, finished + setup.params * setup.costs.optimizer_param_s)


DESIGNS = (star, sharded, sharded_overlapped, ring_bound, ring_overlapped)


# ---------------------------------------------------------------------------- report
HOST_COUNTS = (8, 64, 512)
RATES = (1e9, 1e10)
MODELS = ("MLP512", "MLP2048")
PER_HOST_BATCH = 32  # the benchmark's 256 over 8 hosts, kept per host as hosts are added
MB = 1e6


def predictions(model: str, rate: float, hosts: int) -> list[Step]:
    """Every design at ``hosts`` hosts with one micro-shard per host (8 at least); the star
    also with 8 micro-shards, where only 8 hosts get work."""
    setup = Setup(model, hosts, PER_HOST_BATCH * hosts, max(8, hosts), rate)
    steps = [design(setup) for design in DESIGNS]
    if hosts > 8:
        steps.insert(1, star(dataclasses.replace(setup, micro_shards=8)))
    return steps


def print_table() -> None:
    print(f"Model of one step ({PER_HOST_BATCH} samples per host, CURVE on for star and "
          "sharded, ring plaintext); MB per step on the busiest and a typical host's link, "
          "sent / received")
    head = (f"{'model':>8} {'link':>5} {'hosts':>5} {'design':<20} {'shards':>6} {'busy':>5} "
            f"{'busiest MB':>17} {'typical MB':>17} {'step ms':>9}")
    print(head + "\n" + "-" * len(head))
    for model in MODELS:
        for rate in RATES:
            for hosts in HOST_COUNTS:
                for s in predictions(model, rate, hosts):
                    print(f"{model:>8} {rate / 1e9:>3.0f}G {hosts:>5} {s.design:<20} "
                          f"{s.micro_shards:>6} {s.working:>5} "
                          f"{s.busiest.sent / MB:>8.1f}/{s.busiest.received / MB:<8.1f} "
                          f"{s.typical.sent / MB:>8.1f}/{s.typical.received / MB:<8.1f} "
                          f"{s.seconds * 1e3:>9.1f}")
    print("shards: micro-shards; busy: hosts with work. The sharded rows are the design being "
          "built, not code that exists.")


README_DESIGNS = ("star (today)", "sharded (planned)", "sharded, overlapped", "ring bound",
                  "ring, overlapped")


def print_markdown() -> None:
    """The README's table: bytes on the busiest link and step times, one row per model and
    host count (micro-shards = hosts, 8 at least)."""
    steps = " / ".join(d.split(" (")[0] for d in README_DESIGNS)
    print(f"| parameters, hosts | MB each way on the busiest link: star / sharded / ring "
          f"| step at 1 Gbit/s: {steps} | step at 10 Gbit/s: the same |")
    print("|---|---|---|---|")
    for model in MODELS:
        for hosts in HOST_COUNTS:
            cells = []
            for rate in RATES:
                by = {s.design: s for s in predictions(model, rate, hosts)
                      if s.micro_shards == max(8, hosts)}
                if not cells:
                    cells.append(" / ".join(f"{by[d].busiest.busier / MB:.1f}" for d in (
                        "star (today)", "sharded (planned)", "ring bound")))
                cells.append(" / ".join(seconds_text(by[d].seconds) for d in README_DESIGNS))
            size = wb.parameter_count(model) / 1e6
            print(f"| {size:.2g}M, {hosts} | " + " | ".join(cells) + " |")


def seconds_text(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds >= 1 else f"{seconds * 1e3:.3g} ms"


def testbed(hosts: int, rate: float, curve: bool) -> Setup:
    """``bench_crosshost.py``'s configuration: every host on 2 shared cores, veth counters."""
    return Setup("MLP512", hosts, 256, 8, rate, curve=curve, costs=Costs(cores=2),
                 counting=wb.VETH_COUNTERS)


def check(tolerance: float = 0.10) -> bool:
    """Print model against measurement for every README row; False if bytes are off."""
    from crosshost_figures import README_ROWS

    ok = True
    print(f"{'measured':<36} {'hosts':>5} {'link':>5}  {'quantity':<34} {'model':>8} "
          f"{'measured':>9} {'model/measured':>15}")
    for row in README_ROWS:
        curve = star(testbed(row.hosts, row.rate_bps, True))
        plain = star(testbed(row.hosts, row.rate_bps, False))
        ring = ring_overlapped(testbed(row.hosts, row.rate_bps, False))
        lines = [("dtrain MB sent, busiest host", max(curve.busiest.sent, curve.typical.sent) / MB,
                  row.dtrain_mb, True),
                 ("ring MB sent per host vs DDP", ring.busiest.sent / MB, row.ddp_mb, True),
                 ("dtrain step ms, CURVE", curve.seconds * 1e3, row.dtrain_ms, False),
                 ("dtrain step ms, insecure", plain.seconds * 1e3, row.insecure_ms, False),
                 ("ring, overlapped, ms vs DDP", ring.seconds * 1e3, row.ddp_ms, False)]
        for what, model, measured, strict in lines:
            ratio = model / measured
            bad = strict and abs(ratio - 1) > tolerance
            ok &= not bad
            print(f"{row.when:<36} {row.hosts:>5} {row.rate_bps / 1e9:>4.0f}G  {what:<34} "
                  f"{model:>8.2f} {measured:>9.2f} {ratio:>14.2f}x" + ("  OFF" if bad else ""))
    print(f"bytes {'within' if ok else 'NOT within'} {tolerance:.0%} of the measurement; "
          "step times are reported, not enforced (2 shared cores, load 1-8)")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with bench_crosshost.py's measurements (README.md)")
    parser.add_argument("--markdown", action="store_true", help="the README's table")
    args = parser.parse_args()
    if args.check:
        sys.exit(0 if check() else 1)
    if args.markdown:
        print_markdown()
    else:
        print_table()


if __name__ == "__main__":
    main()
