"""``dtrain status``: read a running coordinator's /status page and print it for people."""

from __future__ import annotations

import json
import urllib.request


def fetch_status(address: str, timeout: float = 5.0) -> dict:
    """The JSON status of the coordinator whose monitor listens on ``address`` (HOST:PORT)."""
    url = address if address.startswith(("http://", "https://")) else f"http://{address}"
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout) as reply:
        return json.loads(reply.read().decode())


def format_status(info: dict) -> str:
    """A short human-readable summary: the run, then one line per worker."""
    lines = []
    head = [f"state {info.get('state', '?')}"]
    for key, label in (("job", "job"), ("job_id", "id"), ("epoch", "epoch"), ("step", "step")):
        if key in info:
            head.append(f"{label} {info[key]}")
    if "loss" in info:
        head.append(f"loss {info['loss']:.4f}")
    if "samples_per_s" in info:
        head.append(f"{info['samples_per_s']:.0f} samples/s")
    if "lr" in info:
        head.append("lr " + ", ".join(f"{v:.4g}" for v in info["lr"]))
    lines.append("  ".join(head))
    workers = info.get("workers", [])
    lines.append(f"workers: {len(workers)} live, {info.get('evictions', 0)} evicted, "
                 f"{info.get('rejected', 0)} messages rejected")
    for w in workers:
        lines.append(f"  worker {w['id']:>3}  {w.get('name', '?'):<24} {w.get('host', '?')}:"
                     f"{w.get('pid', '?'):<8} last heartbeat {w.get('last_heartbeat_s', 0):.1f} s"
                     f"  compute {w.get('compute_s', 0):.2f} s  comm {w.get('comm_s', 0):.2f} s")
    return "\n".join(lines)
