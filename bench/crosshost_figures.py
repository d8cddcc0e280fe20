"""What ``bench_crosshost.py`` measured (README.md, "Across machines"): the model is checked
against these.

MLP 784-512-512-10, global batch 256, 8 micro-shards, one BLAS thread per process, every host
a network namespace on the same 2 cores. Step times are medians (milliseconds); bytes are the
busiest host's interface counter per step (MB), over the whole run of 35 steps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    """One row of the benchmark's table."""

    when: str
    hosts: int
    rate_bps: float
    dtrain_ms: float  # CURVE
    insecure_ms: float
    dtrain_mb: float  # sent per step by the busiest host (CURVE run)
    ddp_ms: float
    ddp_mb: float


README_ROWS = (
    Measured("2026-12-07, load 3-8", 2, 1e9, 85.7, 94.5, 2.68, 37.5, 2.76),
    Measured("2026-12-07, load 3-8", 2, 1e10, 87.8, 97.9, 2.68, 33.7, 2.76),
    Measured("2026-12-07, load 3-8", 4, 1e9, 161.3, 135.3, 8.05, 58.7, 4.19),
    Measured("2026-12-07, load 3-8", 4, 1e10, 80.1, 55.1, 8.06, 38.6, 4.19),
    # ``bench_crosshost.py --quick`` (11 steps, 1 repeat) on a quiet machine (load 1.1)
    Measured("2026-12-07 later, --quick, load 1.1", 2, 1e9, 60.5, 55.8, 2.69, 28.6, 2.93),
)
