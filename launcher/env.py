"""A worker's identity and its coordinator's address, from the environment a scheduler sets.

``dtrain worker`` started by Slurm (``srun``), by a Kubernetes Indexed Job or by any launcher
that follows torchrun's ``RANK`` convention needs no ``--rank``/``--connect``: the rank comes
from ``RANK``, ``SLURM_PROCID`` or ``JOB_COMPLETION_INDEX`` (first one set), and the
coordinator from ``DTRAIN_COORDINATOR`` or, under Slurm, from the step's node list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .slurm import DEFAULT_PORT, in_slurm_step, task_from_env

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JOB_COMPLETION_INDEX")
COORDINATOR_VARIABLE = "DTRAIN_COORDINATOR"
PORT_VARIABLE = "DTRAIN_PORT"


class EnvError(ValueError):
    """An environment variable needed to place this process is malformed."""


def is_number(text: str) -> bool:
    """True for ASCII digits only: ``str.isdigit`` also accepts '²' and other characters that
    ``int()`` refuses."""
    return text.isascii() and text.isdigit()


def worker_rank(env: Mapping[str, str] = os.environ) -> int | None:
    """The rank from RANK, SLURM_PROCID or JOB_COMPLETION_INDEX; None when none is set."""
    for name in RANK_VARIABLES:
        value = env.get(name)
        if value is None or value == "":
            continue
        if not is_number(value):
            raise EnvError(f"{name}={value!r} is not a non-negative integer")
        return int(value)
    return None


def port(env: Mapping[str, str] = os.environ, default: int = DEFAULT_PORT) -> int:
    """The coordinator port from DTRAIN_PORT (default 29500)."""
    value = env.get(PORT_VARIABLE)
    if not value:
        return default
    if not is_number(value) or not 0 < int(value) < 65536:
        raise EnvError(f"{PORT_VARIABLE}={value!r} is not a TCP port (1-65535)")
    return int(value)


def normalize_address(address: str) -> str:
    """``host:port`` -> ``tcp://host:port``; full ZeroMQ addresses pass through."""
    address = address.strip()
    if "://" in address:
        return address
    host, sep, number = address.rpartition(":")
    if not sep or not host or not is_number(number):
        raise EnvError(f"coordinator address {address!r} is neither tcp://HOST:PORT nor "
                       "HOST:PORT")
    return "tcp://" + address


def coordinator_address(env: Mapping[str, str] = os.environ,
                        slurm_port: int | None = None) -> str | None:
    """DTRAIN_COORDINATOR, else task 0's node under Slurm (port ``slurm_port`` or DTRAIN_PORT),
    else None."""
    explicit = env.get(COORDINATOR_VARIABLE)
    if explicit:
        return normalize_address(explicit)
    if in_slurm_step(env):
        return task_from_env(env).coordinator_address(slurm_port or port(env))
    return None
