"""Parameters for workers on the coordinator's machine, through a shared memory-mapped file.

Sending every worker the full parameters over a socket copies them through the kernel once per
worker per round; workers on the same machine can instead read them from one file in
``/dev/shm`` that the coordinator rewrites each round (the TASK then carries no arrays). Only the
coordinator writes, and only after every node of the previous round has come back, so a worker
that answers has read a whole round; a slow, already evicted worker may read a torn board, but
its answers are stale and rejected. The directory is private (0700) to the user running the
job, so the board is as closed as the CURVE-protected socket; other machines get the arrays in
the TASK as before.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import socket
import tempfile

import numpy as np

ALIGN = 64  # every array starts on a 64-byte boundary, like NumPy's large allocations
_DIR = re.compile(r"^dtrain-board-(\d+)-")


def machine_id() -> str:
    """Identifies this machine's running kernel: equal ids can share a /dev/shm file."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "no-boot-id"
    return f"{socket.gethostname()}/{boot}"


def layout(specs: list) -> tuple[list[int], int]:
    """Byte offsets of arrays with the given (shape, dtype) specs, and the total size."""
    offsets, end = [], 0
    for shape, dtype in specs:
        end = -(-end // ALIGN) * ALIGN
        offsets.append(end)
        end += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return offsets, max(end, 1)


def _views(buffer, specs: list, offsets: list) -> list[np.ndarray]:
    return [np.frombuffer(buffer, dtype=np.dtype(dtype), count=int(np.prod(shape, dtype=np.int64)),
                          offset=offset).reshape(shape)
            for (shape, dtype), offset in zip(specs, offsets)]


def _shm_root() -> str:
    root = "/dev/shm"
    return root if os.path.isdir(root) and os.access(root, os.W_OK) else tempfile.gettempdir()


def remove_stale_boards(root: str | None = None) -> None:
    """Delete boards left by coordinators that died without cleaning up."""
    root = root or _shm_root()
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        match = _DIR.match(name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except PermissionError:  # someone else's live process
            pass


class ParamBoard:
    """The coordinator's side: a private shared file holding the current parameters."""

    def __init__(self, specs: list):
        remove_stale_boards()
        self.specs = [(tuple(shape), np.dtype(dtype).str) for shape, dtype in specs]
        self.offsets, self.size = layout(self.specs)
        self.dir = tempfile.mkdtemp(prefix=f"dtrain-board-{os.getpid()}-", dir=_shm_root())
        self.path = os.path.join(self.dir, "params")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, self.size)
            self.map = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self.arrays = _views(self.map, self.specs, self.offsets)

    def write(self, arrays: list) -> None:
        """Publish one round's parameters (in the order of ``specs``)."""
        for view, a in zip(self.arrays, arrays):
            np.copyto(view, a)

    def describe(self) -> dict:
        """What a worker needs to open the board (sent in WELCOME)."""
        return {"path": self.path, "size": self.size, "machine": machine_id()}

    def close(self) -> None:
        self.arrays = []
        try:
            self.map.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with it
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class BoardReader:
    """The worker's side: read-only views of a coordinator's board, checked against the model."""

    def __init__(self, description: dict, specs: list):
        if description.get("machine") != machine_id():
            raise OSError("the board is on another machine")
        self.specs = [(tuple(shape), np.dtype(dtype).str) for shape, dtype in specs]
        offsets, size = layout(self.specs)
        path = description.get("path")
        if not isinstance(path, str) or description.get("size") != size:
            raise OSError(f"board {path!r} does not match this model's parameters")
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != size:
                raise OSError(f"board {path} has {os.fstat(fd).st_size} bytes, expected {size}")
            self.map = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.arrays = _views(self.map, self.specs, offsets)

    def read_into(self, params: list) -> None:
        """Copy the board into the replica's parameters (NumPy's own, aligned arrays)."""
        for p, view in zip(params, self.arrays):
            np.copyto(p.data, view)
