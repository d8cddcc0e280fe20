"""Across machines: dtrain against PyTorch DDP (gloo) on hosts made of network namespaces.

Every host is a network namespace whose processes have their own hostname
(``tests/netns_hosts.py``), joined to the others by a bridge; each host's link is shaped with a
token bucket (tc tbf) in both directions at 1 and 10 Gbit/s. The shaping is checked: a TCP
stream between two hosts must not beat the rate, and the token buckets must have passed the
bytes the interfaces counted. dtrain runs ``dtrain coordinator`` and worker 1 on host 1 (shared
memory, as a worker beside its coordinator uses) and worker h on host h (the network; the
coordinator's log is checked for each worker's channel); DDP runs rank r on host r + 1
(``GLOO_SOCKET_IFNAME=eth0``). The job is ``dist_mlp_job.MLP512`` (784-512-512-10, 0.67M
parameters), global batch 256, 8 micro-shards, one BLAS thread per process, dtrain with CURVE
on (its default) and off, the star and the sharded reduction (whose peers seal their messages
with AES-256-GCM when keys are on: ``peer_cipher``'s default).

Printed, per host count and link: the median step time of each (median over the steps after a
warm-up, then over ``--repeats`` interleaved repeats, min-max shown), dtrain's ratio to DDP,
and the bytes each host sent per step (interface counters over the whole run, divided by its
steps); then where a step's time goes, from timers around the coordinator's and the workers'
parts (``timed_dtrain.py``): send, wait and receive on the coordinator, the tree sum, the
optimizer; the remote workers' wait, decode, copies, forward/backward and send; the least
time the busiest link needs for its bytes; and encryption as the secure step minus the
insecure one, for each reduction. The machine's cores are shared by every host: compare ratios, not times.

Run (as root): ``python bench/bench_crosshost.py [--quick] [--hosts 2 4] [--rates 1gbit 10gbit]``,
about 6 minutes (``--quick``: 2 hosts at 1 Gbit/s, 15 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JOB = os.path.join(HERE, "dist_mlp_job.py")
DDP = os.path.join(HERE, "ddp_reference.py")
TIMED = os.path.join(HERE, "timed_dtrain.py")
sys.path.insert(0, os.path.join(ROOT, "tests"))
import netns_hosts
from run_length import add_run_length_options, settle_run_length

RUN_LENGTH = {"warmup": ("untimed steps per run", 3, 5),  # (help, with --quick, without)
              "steps": ("timed steps per run", 8, 30),
              "repeats": ("interleaved repeats", 1, 3)}
RUN_TIMEOUT = 300.0  # seconds one training run may take before the bench gives up on it
STREAM_SECONDS = 1.0  # length of the TCP stream that checks a link's shaping
RATES = {"1gbit": 1e9, "10gbit": 1e10}
BATCH = 256


def child_env(**extra) -> dict:
    """One BLAS/OpenMP thread; no inherited shared-memory switch (the default path is timed)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SHARED_MEMORY")}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


class Procs:
    """Processes started on the hosts; every one is killed and reaped on ``close``."""

    def __init__(self, hosts: netns_hosts.Hosts, logdir: str):
        self.hosts, self.logdir = hosts, logdir
        self.procs: dict = {}

    def start(self, key: str, host: int, argv: list, env: dict, stdout=None) -> None:
        with open(os.path.join(self.logdir, f"{key}.log"), "wb") as log:
            self.procs[key] = subprocess.Popen(self.hosts.argv(host, argv), cwd=ROOT, env=env,
                                               stdin=subprocess.DEVNULL,
                                               stdout=stdout or log, stderr=log)

    def wait(self, timeout: float = RUN_TIMEOUT) -> None:
        """Wait for every process; raise with its log if one fails or the deadline passes."""
        deadline = time.monotonic() + timeout
        for key, p in self.procs.items():
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{key} still running after {timeout:.0f} s\n"
                                   f"{self.tail(key)}") from None
            if p.returncode:
                raise RuntimeError(f"{key} exited {p.returncode}\n{self.tail(key)}")

    def tail(self, key: str, lines: int | None = 30) -> str:
        """The last ``lines`` lines of the process's log (None: all of it)."""
        with open(os.path.join(self.logdir, f"{key}.log"), errors="replace") as f:
            return "".join(f.readlines()[-lines if lines else 0:])

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()


# ---------------------------------------------------------------------------- link check
def role_sink(port: int) -> None:
    """Accept one TCP stream, read it to the end, print {bytes, seconds} from the first byte."""
    with socket.create_server(("0.0.0.0", port)) as server:
        conn, _ = server.accept()
        with conn:
            buf = bytearray(1 << 20)
            total = conn.recv_into(buf)
            began = time.perf_counter()
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                total += n
            seconds = time.perf_counter() - began
    print(json.dumps({"bytes": total, "seconds": seconds}), flush=True)


def role_source(address: str, port: int, seconds: float) -> None:
    """Send as fast as TCP allows for ``seconds``, then close."""
    chunk = bytes(1 << 20)
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection((address, port), timeout=5)
            break
        except OSError:  # the sink is not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with sock:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sock.sendall(chunk)


def stream_rate(hosts: netns_hosts.Hosts, tmp: str, port: int) -> float:
    """Bits per second of one TCP stream from host 2 to host 1."""
    procs = Procs(hosts, tmp)
    try:
        me = [sys.executable, os.path.abspath(__file__), "--role"]
        procs.start("sink", 1, [*me, "sink", "--port", str(port)], child_env(),
                    stdout=subprocess.PIPE)
        procs.start("source", 2, [*me, "source", "--port", str(port), "--address",
                                  hosts.addr(1), "--seconds", str(STREAM_SECONDS)], child_env())
        out, _ = procs.procs["sink"].communicate(timeout=60)
        procs.wait(60)
    finally:
        procs.close()
    result = json.loads(out.decode().strip().splitlines()[-1])
    return result["bytes"] * 8 / result["seconds"]


def check_shaped(hosts: netns_hosts.Hosts, rate: str, tmp: str, port: int) -> str:
    """Raise unless a TCP stream stays within ``rate``; a line saying what was measured."""
    measured = stream_rate(hosts, tmp, port)
    limit = RATES[rate]
    if measured > 1.10 * limit:
        raise RuntimeError(f"a TCP stream ran at {measured / 1e9:.2f} Gbit/s on links shaped to "
                           f"{rate}: the shaping did not take effect")
    return f"one TCP stream ran at {measured / 1e9:.2f} Gbit/s ({measured / limit:.0%} of the rate)"


def check_buckets(hosts: netns_hosts.Hosts, before: dict, shaped_before: dict) -> float:
    """Fraction of the bytes the hosts sent that passed through the token buckets (~1)."""
    after, shaped = hosts.counters(), hosts.shaped_bytes()
    sent = sum(after[h]["tx"] - before[h]["tx"] for h in after)
    passed = sum(shaped[h]["up"] - shaped_before[h]["up"] for h in shaped)
    if not sent or passed < 0.95 * sent:
        raise RuntimeError(f"the token buckets passed {passed} of {sent} bytes sent: the links "
                           "are not shaped")
    return passed / sent


# ---------------------------------------------------------------------------- runs
def sent_per_step(hosts: netns_hosts.Hosts, before: dict, steps: int) -> dict:
    """Bytes each host sent per step since ``before`` (interface counters)."""
    after = hosts.counters()
    return {h: (after[h]["tx"] - before[h]["tx"]) / steps for h in after}


def run_ddp(hosts: netns_hosts.Hosts, count: int, warm: int, steps: int, tmp: str,
            port: int) -> dict:
    """DDP over gloo, rank r on host r + 1: median step seconds and bytes per host per step."""
    procs = Procs(hosts, tmp)
    before = hosts.counters()
    try:
        env = child_env(GLOO_SOCKET_IFNAME="eth0")
        for rank in range(count):
            procs.start(f"ddp{rank}", rank + 1,
                        [sys.executable, DDP, "--mode", "train", "--rank", str(rank), "--world",
                         str(count), "--init", f"tcp://{hosts.addr(1)}:{port}", "--steps",
                         str(warm + steps), "--batch", str(BATCH), "--model", "MLP512"],
                        env, stdout=subprocess.PIPE if rank == 0 else None)
        out, _ = procs.procs["ddp0"].communicate(timeout=RUN_TIMEOUT)
        procs.wait()
    finally:
        procs.close()
    seconds = json.loads(out.decode().strip().splitlines()[-1])["seconds"]
    return {"step": statistics.median(seconds[warm:]),
            "sent": sent_per_step(hosts, before, warm + steps)}


def run_dtrain(hosts: netns_hosts.Hosts, count: int, warm: int, steps: int, tmp: str,
               port: int, keys: str | None, reduction: str = "coordinator", job: str = "MLP512",
               batch: int = BATCH, env: dict | None = None) -> dict:
    """The coordinator and worker 1 on host 1, worker h on host h; CURVE when ``keys``;
    ``reduction``: the star (``coordinator``) or the workers' reducers (``sharded``); ``job``
    a class of ``dist_mlp_job.py``; ``env``: more environment for every process."""
    logdir = tempfile.mkdtemp(prefix="run-", dir=tmp)
    out = os.path.join(logdir, "out")
    procs = Procs(hosts, logdir)
    security = ["--keys", keys] if keys else ["--insecure"]
    before = hosts.counters()
    try:
        timed = [sys.executable, TIMED]
        procs.start("coordinator", 1, [
            *timed, os.path.join(logdir, "coordinator.json"), str(warm), "coordinator",
            "--bind", f"tcp://0.0.0.0:{port}", "--workers", str(count), *security,
            "--job", job, "--batch-size", str(batch), "--max-steps", str(warm + steps),
            "--reduction", reduction, "--no-progress", "-v", "--out", out, JOB],
            child_env(**(env or {})))
        for h in range(1, count + 1):
            procs.start(f"worker{h}", h, [
                *timed, os.path.join(logdir, f"worker{h}.json"), str(warm), "worker",
                "--connect", f"tcp://{hosts.addr(1)}:{port}", *security, "--rank", str(h),
                "--job", job, JOB], child_env(**(env or {})))
        procs.wait()
    finally:
        procs.close()
    check_channels(procs.tail("coordinator", lines=None), count)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [r for r in map(json.loads, f) if r["type"] == "step"]
    result = {"step": statistics.median(r["seconds"] for r in records[warm:]),
              "compute": statistics.median(slowest_compute(records)[warm - 1:]),
              "sent": sent_per_step(hosts, before, len(records))}
    with open(os.path.join(logdir, "coordinator.json")) as f:
        result["coordinator"] = coordinator_parts(json.load(f)["steps"])
    result["workers"], result["threads"] = {}, {}
    for h in range(1, count + 1):
        with open(os.path.join(logdir, f"worker{h}.json")) as f:
            timed = json.load(f)["steps"]
        result["workers"][h] = worker_parts(timed)
        result["threads"][h] = [s["threads"] for s in timed if "threads" in s]
    remote = [result["workers"][h] for h in range(2, count + 1)]
    result["remote"] = {k: statistics.mean(w[k] for w in remote) for k in remote[0]} \
        if remote[0] else {}
    return result


def coordinator_parts(steps: list) -> dict:
    """Median seconds per step of each part of the coordinator's steps (timed_dtrain.py)."""
    def part(s: dict) -> dict:
        s = defaultdict(float, s)
        return {"step": s["step"], "send": s["send"],
                "wait": s["exchange"] - s["send"] - s["receive"], "receive": s["receive"],
                "reduce": s["reduce"], "optimizer+rest": s["step"] - s["exchange"] - s["reduce"]}
    return medians([part(s) for s in steps])


def worker_parts(steps: list) -> dict:
    """Median seconds per step of each part of a worker's tasks (timed_dtrain.py), disjoint:
    compute is forward/backward alone, the range slices sent and the mailbox served during
    backward are parts of their own, decode, reduce and send params count what they did
    outside backward; wait is the rest of the step (task and gap). The ``(all ...)`` entries,
    outside that sum, are those three wherever they ran."""
    def outside(s: dict, label: str) -> float:
        return s[label] - s[f"{label} in compute"]

    def part(s: dict) -> dict:
        s = defaultdict(float, s)
        out = {"decode": outside(s, "decode"), "copy": s["copy in"] + s["copy out"],
               "compute": s["compute"] - s["send range in compute"] - s["poll in compute"],
               "send during backward": s["send range in compute"],
               "serve during backward": s["poll in compute"], "send": s["send"],
               "reduce": outside(s, "reduce"), "send params": outside(s, "send params")}
        return {"wait": s["gap"] + s["task"] - sum(out.values()), **out,
                "(all decode)": s["decode"], "(all reduce)": s["reduce"],
                "(all send params)": s["send params"]}
    return medians([part(s) for s in steps])


def medians(records: list) -> dict:
    """Per key, the median over ``records``; none when nothing was timed."""
    return {k: statistics.median(r[k] for r in records) for k in records[0]} if records else {}


def check_channels(log: str, count: int) -> None:
    """Raise unless worker 1 used shared memory and the other workers the network."""
    channels = sorted(re.findall(r"its arrays travel over ([a-z-]+)", log))
    if channels != ["network"] * (count - 1) + ["shared-memory"]:
        raise RuntimeError(f"expected 1 worker on shared memory and {count - 1} on the network, "
                           f"the coordinator says {channels}")


def slowest_compute(records: list) -> list:
    """Per step (from the second), the slowest worker's compute seconds."""
    out = []
    for prev, rec in itertools.pairwise(records):
        now, was = rec["worker_times"], prev["worker_times"]
        out.append(max(t["compute_s"] - was.get(w, {}).get("compute_s", 0.0)
                       for w, t in now.items()))
    return out


# ---------------------------------------------------------------------------- report
def med(runs: list, key: str = "step") -> float:
    return statistics.median(r[key] for r in runs)


def spread(runs: list) -> str:
    values = [r["step"] * 1e3 for r in runs]
    return f"{min(values):.1f}-{max(values):.1f}"


def busiest(runs: list) -> tuple[int, float]:
    """(host, median bytes per step) of the host that sent the most."""
    hosts = runs[0]["sent"]
    per = {h: statistics.median(r["sent"][h] for r in runs) for h in hosts}
    host = max(per, key=per.get)
    return host, per[host]


def parts(result: dict, rate: float, wire_bytes: float) -> dict:
    """Milliseconds per step of each part (medians over steps, see timed_dtrain.py)."""
    ms = {f"coord {k}": v for k, v in result["coordinator"].items() if k != "step"}
    ms.update({f"worker {k}": v for k, v in result["remote"].items()})
    ms["wire (busiest link)"] = wire_bytes * 8 / rate
    return {k: v * 1e3 for k, v in ms.items()}


def print_tables(results: dict, checks: dict, args) -> None:
    print(f"\n== MLP 784-512-512-10, batch {BATCH}, 8 micro-shards: median step after "
          f"{args.warmup} warm-up steps, median over {args.repeats} repeat(s) (min-max) ==")
    head = (f"{'hosts':>5} {'link':>7} {'DDP gloo ms':>15} {'dtrain CURVE ms':>17} "
            f"{'/DDP':>6} {'dtrain insecure ms':>19} {'/DDP':>6} {'sharded CURVE ms':>18} "
            f"{'/DDP':>6} {'sharded insecure ms':>19} {'/DDP':>6}  bytes sent per step by each "
            "host (dtrain CURVE | sharded | DDP), MB")
    print(head + "\n" + "-" * len(head))
    for (count, rate), runs in results.items():
        ddp, curve, plain = runs["ddp"], runs["curve"], runs["insecure"]
        sharded, sharded_plain = runs["sharded"], runs["sharded insecure"]
        hosts = sorted(curve[0]["sent"])

        def sent(kind: list) -> str:
            return " ".join(f"{statistics.median(r['sent'][h] for r in kind) / 1e6:.2f}"
                            for h in hosts)

        print(f"{count:>5} {rate:>7} {med(ddp) * 1e3:6.1f} ({spread(ddp):>8}) "
              f"{med(curve) * 1e3:6.1f} ({spread(curve):>9}) {med(curve) / med(ddp):5.2f}x "
              f"{med(plain) * 1e3:7.1f} ({spread(plain):>10}) {med(plain) / med(ddp):5.2f}x "
              f"{med(sharded) * 1e3:6.1f} ({spread(sharded):>10}) "
              f"{med(sharded) / med(ddp):5.2f}x {med(sharded_plain) * 1e3:7.1f} "
              f"({spread(sharded_plain):>10}) {med(sharded_plain) / med(ddp):5.2f}x  "
              f"{sent(curve)} | {sent(sharded)} | {sent(ddp)}")
    for rate, text in checks.items():
        print(f"links at {rate}: {text}")
    print("\n== where a dtrain step goes, ms per step (timers in the coordinator's and remote "
          "workers' main threads; medians over repeats) ==")
    rows = []
    for (count, rate), runs in results.items():
        for label in ("curve", "insecure", "sharded", "sharded insecure"):
            _, wire = busiest(runs[label])
            per = [parts(r, RATES[rate], wire) for r in runs[label]]
            row = defaultdict(lambda: math.nan,
                              {k: statistics.median(p[k] for p in per) for k in per[0]})
            secure, plain = ("sharded", "sharded insecure") if "sharded" in label else \
                ("curve", "insecure")
            row["encrypt (secure - insecure)"] = (med(runs[secure]) - med(runs[plain])) * 1e3
            name = f"{count}h {rate[:-3]} " + {"curve": "CURVE", "insecure": "plain",
                                                "sharded": "sharded",
                                                "sharded insecure": "sh. plain"}[label]
            rows.append((name, med(runs[label]) * 1e3, row))
    print(f"{'part':<27}" + "".join(f"{name:>14}" for name, _, _ in rows))
    print(f"{'step (metrics.jsonl)':<27}" + "".join(f"{step:14.1f}" for _, step, _ in rows))
    for k in max((row for _, _, row in rows), key=len):
        print(f"{k:<27}" + "".join(f"{row[k]:14.1f}" for _, _, row in rows))
    print("coordinator: send = TASK encode+send (and the shared board's copy for worker 1), "
          "wait = the round's time on the socket minus send\nand receive (CURVE runs in "
          "ZeroMQ's I/O threads, so it shows up here), receive = GRADS decode and checks; "
          "workers (hosts 2..n, mean):\nwait = the step minus the worker's other parts, copy = "
          "parameters into the replica, compute = forward/backward alone (sharded: the range "
          "slices sent\nand the mailbox served during backward are their own rows), send = "
          "after it, reduce = the reducer's sums and steps\n(outside backward; '(all ...)': "
          "wherever they ran); wire = the busiest host's bytes per step at the link's rate;\n"
          "encrypt = the secure step minus the insecure one (the star: CURVE on every socket; "
          "sharded: peers seal with AES-256-GCM, the coordinator's sockets CURVE).")


def measure(args) -> None:
    """Every host count and rate; the logs and keys are removed unless a run failed."""
    tmp = tempfile.mkdtemp(prefix="dtrain-crosshost-")
    try:
        results, checks = measure_in(args, tmp)
    except BaseException:
        print(f"logs kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    print_tables(results, checks, args)


def measure_in(args, tmp: str) -> tuple[dict, dict]:
    """(runs by (hosts, rate), link checks by rate), measured with logs in ``tmp``."""
    results: dict = {}
    checks: dict = {}
    port = iter(range(29500, 30500))
    keys = os.path.join(tmp, "keys")
    subprocess.run([sys.executable, "-m", "dtrain", "keygen", keys], check=True,
                   capture_output=True, timeout=60)
    for count in args.hosts:
        with netns_hosts.Hosts(count, prefix="dtb") as hosts:
            for rate in args.rates:
                hosts.shape(rate)
                if rate not in checks:
                    checks[rate] = check_shaped(hosts, rate, tmp, next(port))
                before, shaped = hosts.counters(), hosts.shaped_bytes()
                runs: dict = {"ddp": [], "curve": [], "insecure": [], "sharded": [],
                              "sharded insecure": []}
                for _ in range(args.repeats):
                    runs["ddp"].append(run_ddp(hosts, count, args.warmup, args.steps, tmp,
                                               next(port)))
                    runs["curve"].append(run_dtrain(hosts, count, args.warmup, args.steps, tmp,
                                                    next(port), keys))
                    runs["insecure"].append(run_dtrain(hosts, count, args.warmup, args.steps,
                                                       tmp, next(port), None))
                    runs["sharded"].append(run_dtrain(hosts, count, args.warmup, args.steps,
                                                      tmp, next(port), keys, "sharded"))
                    runs["sharded insecure"].append(run_dtrain(
                        hosts, count, args.warmup, args.steps, tmp, next(port), None, "sharded"))
                passed = check_buckets(hosts, before, shaped)
                checks[rate] += f"; {count} hosts: the buckets passed {passed:.0%} of the bytes"
                results[(count, rate)] = runs
                print(f"measured {count} hosts at {rate}: DDP {med(runs['ddp']) * 1e3:.1f} ms, "
                      f"dtrain {med(runs['curve']) * 1e3:.1f} ms, sharded "
                      f"{med(runs['sharded']) * 1e3:.1f} ms", flush=True)
    return results, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_length_options(parser, "2 hosts at 1 Gbit/s, few steps", RUN_LENGTH)
    parser.add_argument("--hosts", type=int, nargs="+", default=None,
                        help="host counts to measure (default: 2 4)")
    parser.add_argument("--rates", nargs="+", choices=sorted(RATES), default=None,
                        help="link rates to measure (default: 1gbit 10gbit)")
    parser.add_argument("--role", choices=("sink", "source"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sink":
        return role_sink(args.port)
    if args.role == "source":
        return role_source(args.address, args.port, args.seconds)
    why = netns_hosts.available()
    if why:
        raise SystemExit(f"bench_crosshost.py {why}")
    settle_run_length(args, RUN_LENGTH)
    args.hosts = args.hosts or ((2,) if args.quick else (2, 4))
    args.rates = args.rates or (("1gbit",) if args.quick else ("1gbit", "10gbit"))
    if min(args.hosts) < 2:
        parser.error("--hosts: at least 2 (host 1 runs the coordinator)")
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; every host's "
          "processes share these cores; 1 BLAS thread per process")
    measure(args)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
