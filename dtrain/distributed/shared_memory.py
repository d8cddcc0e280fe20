"""Arrays in memory-mapped /dev/shm files, shared by the coordinator and workers on its machine.

Sending the full parameters to every worker, and every worker's gradients back, copies them
through the kernel once per worker per round. Processes on one machine can share files instead:
the coordinator writes each round's parameters once into a *parameter board* that every local
worker reads, and gives each local worker *gradient slots* it writes its tree-node gradients
into. The coordinator creates and owns every such file (so it removes a dead worker's slots as
soon as it evicts it, and a killed worker leaves nothing behind); messages still go over the
socket, so ordering and validation are unchanged (see ``channels.py`` for the rules).

Every file lives in a private directory (0700) of the user running the job, as closed as the
CURVE-protected socket. Whatever else is found in the shared directory is untrusted input:
cleanup removes only our own user's directories of our naming whose owner is provably gone.
The owner holds an exclusive ``flock`` on the directory's ``owner.lock`` for its lifetime; the
kernel drops it when the process dies, however it dies and whatever pid namespace it ran in
(a pid alone would call a live coordinator in another container "gone").
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import shutil
import socket
import stat
import tempfile

import numpy as np

from ..io.arraytable import ALIGN, aligned_offsets

KINDS = ("params", "grads")
_DIR = re.compile(r"^dtrain-(params|grads)-([0-9]{1,10})-[A-Za-z0-9_]+$")
_MAX_SLOTS = 1024
LOCK_NAME = "owner.lock"


def machine_id() -> str:
    """Identifies this machine's running kernel: equal ids can share a /dev/shm file."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "no-boot-id"
    return f"{socket.gethostname()}/{boot}"


def layout(specs: list) -> tuple[list[int], int]:
    """Byte offsets of arrays with the given (shape, dtype) specs, and one slot's size.

    Arrays sit as in a packed array table (each on an ``ALIGN`` boundary, like NumPy's large
    allocations); a slot is a whole number of ``ALIGN`` blocks, so every slot is aligned too.
    """
    sizes = [int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
             for shape, dtype in specs]
    offsets, end = aligned_offsets(sizes)
    return offsets, max(-(-end // ALIGN) * ALIGN, ALIGN)


def shm_root() -> str:
    """Where shared files live: /dev/shm (memory) when writable, else the temporary directory."""
    root = "/dev/shm"
    return root if os.path.isdir(root) and os.access(root, os.W_OK) else tempfile.gettempdir()


def _process_gone(pid: int) -> bool:
    """True only when no process ``pid`` exists (any doubt counts as alive)."""
    if not 0 < pid <= 2**22:  # Linux's pid_max bound; anything else cannot be a pid of ours
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False
    return False


def remove_stale(root: str | None = None) -> list[str]:
    """Delete shared-array directories left by our own processes that died; returns them.

    Only directories named like ours, owned by this user, private (0700) and not symlinks are
    touched; a neighbour's ``mkdir`` there changes nothing.
    """
    root = root or shm_root()
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = _DIR.match(entry.name)
        if not match:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() \
                or stat.S_IMODE(info.st_mode) != 0o700:
            continue
        if _process_gone(int(match.group(2))) and _owner_gone(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _owner_gone(folder: str) -> bool:
    """True only when the folder's owner lock exists and nobody holds it."""
    try:
        fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # no lock to prove the owner dead: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock if we took it


def _normalize(specs: list) -> list:
    return [(tuple(int(d) for d in shape), np.dtype(dtype).str) for shape, dtype in specs]


class SharedArrays:
    """``slots`` copies of one array layout in a memory-mapped file: created here (owner), or
    opened from another process's ``describe()`` (read-only, or writable with ``writable``)."""

    def __init__(self, specs: list, slots: int = 1, *, kind: str = "params",
                 description=None, writable: bool = False):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.specs = _normalize(specs)
        self.offsets, self.slot_size = layout(self.specs)
        self.owner = description is None
        self._lock = None
        if self.owner:
            if not 0 < slots <= _MAX_SLOTS:
                raise ValueError(f"slots must be in [1, {_MAX_SLOTS}], got {slots}")
            remove_stale()
            self.slots = slots
            self.dir = tempfile.mkdtemp(prefix=f"dtrain-{kind}-{os.getpid()}-", dir=shm_root())
            self._lock = os.open(os.path.join(self.dir, LOCK_NAME),
                                 os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(self._lock, fcntl.LOCK_EX)  # held while we live (not inherited)
            self.path = os.path.join(self.dir, "arrays")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, self.slot_size * slots)
                self.map = mmap.mmap(fd, self.slot_size * slots)
            finally:
                os.close(fd)
        else:
            self.slots, self.path = self._check(description)
            self.dir = os.path.dirname(self.path)
            fd = os.open(self.path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW)
            try:
                info = os.fstat(fd)
                if info.st_size != self.slot_size * self.slots or info.st_uid != os.getuid():
                    raise OSError(f"{self.path}: not a {kind} file of this model and user")
                prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
                self.map = mmap.mmap(fd, info.st_size, prot=prot)
            finally:
                os.close(fd)
        self.views = [[np.frombuffer(self.map, dtype=np.dtype(dtype),
                                     count=int(np.prod(shape, dtype=np.int64)),
                                     offset=k * self.slot_size + offset).reshape(shape)
                       for (shape, dtype), offset in zip(self.specs, self.offsets)]
                      for k in range(self.slots)]

    def _check(self, description) -> tuple[int, str]:
        """Only a file of ours, of this kind, on this machine, of this layout is opened."""
        kind = self.kind
        if not isinstance(description, dict) or description.get("machine") != machine_id():
            raise OSError("the shared arrays are on another machine")
        path, slots = description.get("path"), description.get("slots")
        if not (isinstance(path, str) and type(slots) is int and 0 < slots <= _MAX_SLOTS):
            raise OSError(f"malformed shared-array description {str(description)[:200]!r}")
        folder = os.path.dirname(path)
        match = _DIR.match(os.path.basename(folder))
        if os.path.dirname(folder) != shm_root() or not match or match.group(1) != kind \
                or os.path.basename(path) != "arrays" \
                or description.get("slot_size") != self.slot_size:
            raise OSError(f"{path[:200]!r} is not a {kind} file of this model "
                          "(layout or place differ)")
        return slots, path

    def describe(self) -> dict:
        """What another process needs to open these arrays."""
        return {"path": self.path, "slots": self.slots, "slot_size": self.slot_size,
                "machine": machine_id()}

    def write(self, slot: int, arrays: list) -> None:
        """Copy arrays (in ``specs`` order; None leaves an entry untouched) into a slot."""
        for view, a in zip(self.views[slot], arrays):
            if a is not None:
                np.copyto(view, a)

    def read_into(self, slot: int, arrays: list) -> None:
        """Copy a slot into arrays the caller owns (NumPy-allocated, so BLAS sees the same
        alignment as in every other process)."""
        for target, view in zip(arrays, self.views[slot]):
            np.copyto(target, view)

    def close(self) -> None:
        """Unmap; the owner also removes the file (views still held elsewhere stay valid)."""
        self.views = []
        try:
            self.map.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with it
            pass
        if self.owner:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
