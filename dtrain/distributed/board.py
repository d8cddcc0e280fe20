"""Arrays shared between the coordinator and the workers on its machine, through /dev/shm files.

Sending the full parameters to every worker, and every worker's gradients back, copies them
through the kernel once per worker per round. Processes on the same machine can instead share
memory-mapped files: the coordinator rewrites one *parameter board* each round (the TASK then
carries no arrays), and each worker writes its tree-node gradients into slots of its own
*gradient board* (the GRADS message then names a slot). Messages still go over the socket, so
ordering and validation are unchanged:

- the coordinator writes parameters only after every node of the previous round has come back,
  and a worker answers only after reading them, so an accepted answer saw a whole round (a slow,
  already evicted worker may read a torn board, but its answers are rejected as stale);
- a worker writes a gradient slot before sending the GRADS that names it, and reuses the slot
  only in a later round, after the coordinator has reduced the previous one.

Every board lives in a private directory (0700) of the user running the job, so it is as closed
as the CURVE-protected socket. Other machines exchange arrays in the messages, as before.
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
_DIR = re.compile(r"^dtrain-(board|grads)-(\d+)-")


def machine_id() -> str:
    """Identifies this machine's running kernel: equal ids can share a /dev/shm file."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "no-boot-id"
    return f"{socket.gethostname()}/{boot}"


def layout(specs: list) -> tuple[list[int], int]:
    """Byte offsets of arrays with the given (shape, dtype) specs, and one slot's size."""
    offsets, end = [], 0
    for shape, dtype in specs:
        end = -(-end // ALIGN) * ALIGN
        offsets.append(end)
        end += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return offsets, max(-(-end // ALIGN) * ALIGN, ALIGN)


def shm_root() -> str:
    """Where boards live: /dev/shm (memory) when writable, else the temporary directory."""
    root = "/dev/shm"
    return root if os.path.isdir(root) and os.access(root, os.W_OK) else tempfile.gettempdir()


def remove_stale_boards(root: str | None = None) -> None:
    """Delete boards left by processes that died without cleaning up."""
    root = root or shm_root()
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        match = _DIR.match(name)
        if not match:
            continue
        try:
            os.kill(int(match.group(2)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except PermissionError:  # someone else's live process
            pass


def _normalize(specs: list) -> list:
    return [(tuple(int(d) for d in shape), np.dtype(dtype).str) for shape, dtype in specs]


class SharedSlots:
    """``slots`` copies of one array layout in a memory-mapped file (create, or open by path)."""

    def __init__(self, specs: list, slots: int, *, kind: str = "board", description=None):
        self.specs = _normalize(specs)
        self.offsets, self.slot_size = layout(self.specs)
        self.owner = description is None
        if self.owner:
            remove_stale_boards()
            self.slots = slots
            self.dir = tempfile.mkdtemp(prefix=f"dtrain-{kind}-{os.getpid()}-", dir=shm_root())
            self.path = os.path.join(self.dir, "arrays")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, self.slot_size * slots)
                self.map = mmap.mmap(fd, self.slot_size * slots)
            finally:
                os.close(fd)
        else:
            self.slots, self.path = self._check(description, kind)
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                info = os.fstat(fd)
                if info.st_size != self.slot_size * self.slots or info.st_uid != os.getuid():
                    raise OSError(f"{self.path}: not a board of this model and user")
                self.map = mmap.mmap(fd, info.st_size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
        self.views = [[np.frombuffer(self.map, dtype=np.dtype(dtype),
                                     count=int(np.prod(shape, dtype=np.int64)),
                                     offset=k * self.slot_size + offset).reshape(shape)
                       for (shape, dtype), offset in zip(self.specs, self.offsets)]
                      for k in range(self.slots)]

    def _check(self, description, kind: str) -> tuple[int, str]:
        """Only a board file of ours, of this kind, on this machine, of this layout is opened."""
        if not isinstance(description, dict) or description.get("machine") != machine_id():
            raise OSError("the board is on another machine")
        path, slots = description.get("path"), description.get("slots")
        if not (isinstance(path, str) and isinstance(slots, int) and 0 < slots <= 1024):
            raise OSError(f"malformed board description {description!r}")
        folder = os.path.dirname(path)
        if os.path.dirname(folder) != shm_root() \
                or not re.match(rf"^dtrain-{kind}-\d+-", os.path.basename(folder)) \
                or os.path.basename(path) != "arrays" \
                or description.get("slot_size") != self.slot_size:
            raise OSError(f"{path!r} is not a {kind} board of this model (layout or place differ)")
        return slots, path

    def describe(self) -> dict:
        """What another process needs to open this board read-only."""
        return {"path": self.path, "slots": self.slots, "slot_size": self.slot_size,
                "machine": machine_id()}

    def write(self, slot: int, arrays: list) -> None:
        """Copy arrays (in ``specs`` order; None leaves an entry untouched) into a slot."""
        for view, a in zip(self.views[slot], arrays):
            if a is not None:
                np.copyto(view, a)

    def read_into(self, slot: int, params: list) -> None:
        """Copy a slot into tensors' own (NumPy-allocated, aligned) arrays."""
        for p, view in zip(params, self.views[slot]):
            np.copyto(p._data, view)

    def close(self) -> None:
        self.views = []
        try:
            self.map.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with it
            pass
        if self.owner:
            shutil.rmtree(self.dir, ignore_errors=True)
