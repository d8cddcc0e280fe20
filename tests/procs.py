"""Find processes dtrain started, by a marker on their command line or by their parent (for
leak checks), and how far their run got."""

import os
import time


def dtrain_processes(marker: str, settle: float = 3.0) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line mentions ``marker``.

    Waits up to ``settle`` seconds for processes that are already exiting.
    """
    deadline = time.monotonic() + settle
    while True:
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmd and "dtrain" in cmd and state != "Z":
                found.append(int(pid))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def children(parent: int) -> list[tuple[int, str]]:
    """(pid, state) of the processes whose parent is ``parent``; zombies (state Z) included."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append((int(pid), fields[0]))
    return found


def steps_done(metrics: str) -> int:
    """Step records in a run's metrics.jsonl so far (0 before it exists)."""
    try:
        with open(metrics) as f:
            return sum(1 for line in f if '"type": "step"' in line)
    except FileNotFoundError:
        return 0
