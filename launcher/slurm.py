"""Slurm: a task's place in an ``srun`` step, read from the environment.

Under ``srun dtrain launch ...`` every task runs the same command; task 0 becomes the
coordinator and the others become workers. Workers find the coordinator on the first node of
the step's node list (where Slurm's block and cyclic distributions both place task 0), falling
back to ``SLURM_LAUNCH_NODE_IPADDR`` (the node srun ran on) when no node list is set.
``DTRAIN_COORDINATOR`` overrides both, for layouts where neither holds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PORT = 29500
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


class SlurmError(ValueError):
    """The Slurm environment is missing a variable or holds one that cannot be read."""


def _split_top_level(text: str, what: str) -> list[str]:
    """Split on commas outside brackets: ``a[1,2],b`` -> ``['a[1,2]', 'b']``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise SlurmError(f"{what}: nested '[' at position {i} in {text!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SlurmError(f"{what}: ']' without '[' at position {i} in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SlurmError(f"{what}: unclosed '[' in {text!r}")
    parts.append(text[start:])
    return parts


def _expand_ranges(body: str, what: str) -> list[str]:
    """``01-03,07`` -> ``['01', '02', '03', '07']``, keeping the lower bound's zero padding."""
    out = []
    for item in body.split(","):
        m = _RANGE.match(item.strip())
        if not m:
            raise SlurmError(f"{what}: bad range {item!r} in [{body}]")
        lo, hi = m.group(1), m.group(2) if m.group(2) is not None else m.group(1)
        if int(hi) < int(lo):
            raise SlurmError(f"{what}: range {item!r} runs backwards")
        width = len(lo) if lo.startswith("0") else 0
        out += [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
    return out


def expand_hostlist(text: str, what: str = "host list") -> list[str]:
    """Expand Slurm's compressed host list: ``node[01-03,07],gpu-a[1-2]x`` -> every name in order.

    Several bracket groups in one name expand as a product (``r[1-2]n[1-2]``: r1n1 r1n2 r2n1
    r2n2), as ``scontrol show hostnames`` does.
    """
    text = text.strip()
    if not text:
        raise SlurmError(f"{what} is empty")
    hosts: list[str] = []
    for part in _split_top_level(text, what):
        part = part.strip()
        if not part:
            raise SlurmError(f"{what}: empty name in {text!r}")
        if "[]" in part:
            raise SlurmError(f"{what}: empty brackets in {part!r}")
        names = [""]
        for literal, body in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", part):
            if body:
                names = [n + literal + r for n in names for r in _expand_ranges(body, what)]
            else:
                names = [n + literal for n in names]
        hosts += names
    return hosts


def _int_var(env: Mapping[str, str], name: str) -> int:
    value = env.get(name)
    if value is None:
        raise SlurmError(f"{name} is not set: run under srun (or set it)")
    try:
        number = int(value)
    except ValueError:
        raise SlurmError(f"{name}={value!r} is not an integer") from None
    if number < 0:
        raise SlurmError(f"{name}={value!r} is negative")
    return number


@dataclass(frozen=True)
class SlurmTask:
    """One task of an srun step: its rank, how many tasks there are, and the step's nodes."""

    procid: int
    ntasks: int
    nodes: tuple[str, ...] = ()
    launch_ip: str | None = None
    job_id: str | None = None
    step_id: str | None = None

    @property
    def role(self) -> str:
        """``coordinator`` for task 0, ``worker`` for every other task."""
        return "coordinator" if self.procid == 0 else "worker"

    def coordinator_host(self) -> str:
        """Where task 0 runs: the step's first node, else the node srun was launched from."""
        if self.nodes:
            return self.nodes[0]
        if self.launch_ip:
            return self.launch_ip
        raise SlurmError("cannot tell where task 0 runs: set SLURM_STEP_NODELIST, "
                         "SLURM_NODELIST or SLURM_LAUNCH_NODE_IPADDR (or DTRAIN_COORDINATOR)")

    def coordinator_address(self, port: int = DEFAULT_PORT) -> str:
        """The ZeroMQ address workers connect to."""
        host = self.coordinator_host()
        return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"

    def run_id(self) -> str | None:
        """A job id shared by every task of this step (so strays from other steps are refused)."""
        if not self.job_id:
            return None
        return f"slurm-{self.job_id}" + (f".{self.step_id}" if self.step_id else "")


def in_slurm_step(env: Mapping[str, str] = os.environ) -> bool:
    """True when this process looks like an srun task (SLURM_PROCID is set)."""
    return "SLURM_PROCID" in env


def task_from_env(env: Mapping[str, str] = os.environ) -> SlurmTask:
    """Read this task's SlurmTask from SLURM_* variables; SlurmError names what is wrong."""
    procid = _int_var(env, "SLURM_PROCID")
    ntasks_var = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    ntasks = _int_var(env, ntasks_var)
    if ntasks < 1 or procid >= ntasks:
        raise SlurmError(f"SLURM_PROCID={procid} does not fit {ntasks_var}={ntasks}")
    nodes: tuple[str, ...] = ()
    for name in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        if env.get(name):
            nodes = tuple(expand_hostlist(env[name], name))
            break
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    step_id = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")
    return SlurmTask(procid, ntasks, nodes, env.get("SLURM_LAUNCH_NODE_IPADDR") or None,
                     job_id, step_id)
