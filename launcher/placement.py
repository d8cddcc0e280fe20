"""Where a run's workers are, and the reduction that ``reduction = auto`` picks from it.

The sharded reduction spreads every step's gradient and parameter bytes over all the hosts'
links, about 2·P·4·(N−1)/N per host, where the star sends them all through the coordinator's
link. On one machine there is no link to spare: local workers exchange arrays with the
coordinator through shared memory, and the star is the cheaper path. So ``auto`` shards exactly
when workers run on other machines than the coordinator, and the launcher is where that is
known: the hosts of a hostfile, the nodes of a Slurm step, a coordinator that waits for workers
started elsewhere. The choice never changes the bits (both reductions add the same tree).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket

log = logging.getLogger("dtrain.launcher")

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def is_this_machine(host: str) -> bool:
    """True when ``host`` (a hostfile or node name, ``user@`` allowed) names this machine."""
    name = host.rpartition("@")[2].strip("[]")
    if name in LOCAL_NAMES:
        return True
    try:
        if ipaddress.ip_address(name).is_loopback:
            return True
    except ValueError:
        pass
    here = socket.gethostname()
    return name in (here, here.split(".")[0], socket.getfqdn())


def hostfile_elsewhere(hosts) -> str | None:
    """Which hostfile entries (``HostSlots``) run on other machines, as text; None: none."""
    others = [h.host for h in hosts if not is_this_machine(h.host)]
    return f"hosts {', '.join(others)} (hostfile)" if others else None


def slurm_elsewhere(nodes) -> str | None:
    """Whether a Slurm step's tasks span several nodes, as text; None: one node."""
    distinct = sorted(set(nodes))
    return f"{len(distinct)} Slurm nodes" if len(distinct) > 1 else None


def bind_elsewhere(bind: str) -> str | None:
    """Whether a coordinator bound to ``bind`` waits for workers from other machines.

    A loopback address can only be reached from this machine; any other address is there to
    be reached from elsewhere (a Kubernetes pod, another host of the cluster).
    """
    scheme, _, rest = bind.partition("://")
    if scheme in ("ipc", "inproc"):
        return None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host in LOCAL_NAMES:
            return None
    return f"workers connecting to {bind} from other machines"


def choose_reduction(settings, elsewhere: str | None):
    """``settings`` with ``reduction = auto`` made concrete: sharded when workers run
    elsewhere (``elsewhere`` says where), else coordinator. Explicit choices stay."""
    if settings.reduction != "auto":
        return settings
    chosen = "sharded" if elsewhere else "coordinator"
    if elsewhere:
        log.info("reduction = auto: sharded, since %s", elsewhere)
    return dataclasses.replace(settings, reduction=chosen)
