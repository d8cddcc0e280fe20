"""Several hosts on one machine: Linux network namespaces, each process with its own hostname.

Every host is a network namespace with one interface, ``eth0`` (address 10.77.0.N/24), joined to
the other hosts through a bridge in a namespace of its own (the switch), so traffic between
hosts crosses veth links whose byte counters tell what each host sent and received. Processes
start under ``unshare --uts`` with the host's name as hostname: dtrain then sees different
machines (its ``machine_id`` is hostname and boot id) and sends arrays over the network, as it
would between real machines. ``shape(rate)`` puts a token bucket (tc tbf) on both ends of every
host's link; ``shaped_bytes`` reads what went through it, so a caller can check that shaping
took effect. Used by ``tests/test_netns.py`` and ``bench/bench_crosshost.py``; needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

SUBNET = "10.77.0"  # only inside the namespaces made here: nothing else sees these addresses
CMD_TIMEOUT = 20.0  # seconds any ip/tc command may take


class HostsError(RuntimeError):
    """An ip or tc command failed while building or shaping the hosts."""


def available() -> str | None:
    """Why hosts cannot be made here (not root, no iproute2, no unshare), or None."""
    if os.geteuid() != 0:
        return "needs root: network namespaces and veth pairs"
    missing = [tool for tool in ("ip", "tc", "unshare") if shutil.which(tool) is None]
    return f"needs {', '.join(missing)}" if missing else None


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT,
                          check=False)


def must(*argv: str) -> str:
    """Run an ip/tc command; its output, or HostsError with its message."""
    result = _run(*argv)
    if result.returncode != 0:
        raise HostsError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


class Hosts:
    """``count`` hosts (1..count) on one bridge; a context manager that removes them all."""

    def __init__(self, count: int, prefix: str = "dtrain"):
        tag = f"{os.getpid()}{uuid.uuid4().hex[:4]}"
        self.count = count
        self.switch = f"{prefix}-{tag}-sw"
        self.ns = {h: f"{prefix}-{tag}-h{h}" for h in range(1, count + 1)}
        self.hostname = {h: f"host{h}-{tag}" for h in self.ns}
        self.created: list[str] = []
        self.rate: str | None = None
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def addr(self, host: int) -> str:
        """The host's address on the bridge."""
        return f"{SUBNET}.{host}"

    def _build(self) -> None:
        for ns in (self.switch, *self.ns.values()):
            must("ip", "netns", "add", ns)
            self.created.append(ns)
            must("ip", "-n", ns, "link", "set", "lo", "up")
        must("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        must("ip", "-n", self.switch, "link", "set", "br0", "up")
        for h, ns in self.ns.items():
            must("ip", "-n", self.switch, "link", "add", f"p{h}", "type", "veth", "peer", "name",
                 "eth0", "netns", ns)
            must("ip", "-n", self.switch, "link", "set", f"p{h}", "master", "br0", "up")
            must("ip", "-n", ns, "addr", "add", f"{self.addr(h)}/24", "dev", "eth0")
            must("ip", "-n", ns, "link", "set", "eth0", "up")

    def _ends(self):
        """(namespace, interface) of both ends of every host's link: host egress, switch egress."""
        for h, ns in self.ns.items():
            yield h, ns, "eth0"
            yield h, self.switch, f"p{h}"

    def shape(self, rate: str) -> None:
        """Limit every host's link to ``rate`` (tc syntax, e.g. '1gbit') in both directions."""
        bits = _bits(rate)
        burst = max(bits // 8 // 1000, 64 * 1024)  # 1 ms of tokens, at least a GSO packet
        for _, ns, dev in self._ends():
            must("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                 "burst", str(burst), "latency", "20ms")
        self.rate = rate

    def unshape(self) -> None:
        """Take the token buckets off every link again."""
        for _, ns, dev in self._ends():
            must("tc", "-n", ns, "qdisc", "del", "dev", dev, "root")
        self.rate = None

    def shaped_bytes(self) -> dict:
        """Bytes the token buckets passed, per host: {'up': host -> switch, 'down': back}."""
        out = {}
        for h, ns, dev in self._ends():
            for q in json.loads(must("tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev)):
                if q.get("kind") == "tbf":
                    out.setdefault(h, {})["up" if dev == "eth0" else "down"] = q["bytes"]
        return out

    def counters(self) -> dict:
        """Bytes each host's eth0 has sent ('tx') and received ('rx') so far."""
        out = {}
        for h, ns in self.ns.items():
            link = json.loads(must("ip", "-n", ns, "-s", "-j", "link", "show", "dev", "eth0"))[0]
            out[h] = {"tx": link["stats64"]["tx"]["bytes"], "rx": link["stats64"]["rx"]["bytes"]}
        return out

    def link(self, host: int, up: bool) -> None:
        """Cut (``up=False``) or restore the host's link, as a pulled cable would."""
        must("ip", "-n", self.ns[host], "link", "set", "eth0", "up" if up else "down")

    def argv(self, host: int, argv: list, pid_namespace: bool = False) -> list:
        """``argv`` run on the host: its network namespace and its own hostname.

        With ``pid_namespace`` the command also runs as pid 1 of a new pid namespace (killing
        the returned process's pid kills it too).
        """
        unshare = ["unshare", "--uts"]
        if pid_namespace:
            unshare += ["--pid", "--fork", "--kill-child"]
        return ["ip", "netns", "exec", self.ns[host], *unshare, "sh", "-c",
                'hostname "$0" && exec "$@"', self.hostname[host], *argv]

    def close(self) -> None:
        """Delete every namespace made here (their veth ends and the bridge go with them)."""
        for ns in reversed(self.created):
            _run("ip", "netns", "del", ns)
        left = set(_run("ip", "netns", "list").stdout.split()) & set(self.created)
        self.created = []
        if left:
            raise HostsError(f"namespaces left behind: {sorted(left)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bits(rate: str) -> int:
    """Bits per second of a tc rate such as '10gbit', '500mbit' or '100kbit'."""
    units = {"gbit": 10**9, "mbit": 10**6, "kbit": 10**3, "bit": 1}
    for unit, factor in units.items():
        if rate.lower().endswith(unit):
            return int(float(rate[:-len(unit)]) * factor)
    raise ValueError(f"rate {rate!r}: expected a number and gbit, mbit, kbit or bit")
