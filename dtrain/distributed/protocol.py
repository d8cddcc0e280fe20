"""The wire protocol between the coordinator and its workers: every message, its fields, its checks.

The conversation (zguide's Paranoid Pirate, with typed messages)::

    worker                         coordinator
    HELLO  (instance, digest, machine)  ->      admits it, or rejects a wrong script
           <-  WELCOME (worker id, settings, shared-memory offer when on the same machine)
    READY  (channel: network | shared-memory)  ->   from now on the worker gets tasks
           <-  TASK (step, epoch, batch, phase, round, tree nodes; parameters unless shared)
    GRADS  (one per node: count, loss sum, gradients or their slot, batch-norm stats)  ->
    ERROR  (the job raised on a node: traceback)  ->   another worker checks before the run fails
    HEARTBEAT both ways (a worker's beacon also says how long it has been busy on one node)
           <-  STOP (done | evicted | rejoin)           BYE  ->  (the worker leaves)

A message travels as a list of frames: ``[header, buffer, buffer, ...]``. The header (the
*envelope*) is a msgpack map ``{v, job, type, step, worker, fields, arrays}`` where ``arrays``
lists ``[name, dtype, shape, nframes]`` for each array, in order; the frames after the header
hold each array's bytes (C order, little-endian), an array larger than ``MAX_FRAME_BYTES``
spread over consecutive frames. That table is the frames layout of the array-table codec the
checkpoint files share (``dtrain.io.arraytable``): it checks every entry against the frames,
within the receiver's limits (``max_bytes``, ``allowed_dtypes``, ``MAX_NDIM``), and builds the
arrays. ``encode``/``decode`` handle the envelope and check everything about it; each message
class (``Hello`` ... ``Bye``, below) packs its own fields and checks every one of them (type,
range, names and shapes of its arrays against the ``ModelSchema``). ``pack`` and ``unpack`` (or
``decode`` then ``typed``) go between frames and typed messages; anything untrusted that is
wrong raises ``ProtocolError`` (a ``ValueError`` with a short ``reason`` slug from
``REASONS``) and nothing else, whatever arrives.

Zero copy both ways: ``encode`` hands out memoryviews of the caller's arrays (do not change them
until the send is done; ``send(..., track=True)`` says when), and ``decode`` returns read-only
arrays viewing the received frames (copy one before changing it). Only arrays split over several
frames are copied once, into a fresh array or into one from a ``BufferPool``. How a worker's
arrays travel (in these frames or through shared memory) is ``channels.py``'s business.
"""
from __future__ import annotations

import math
import operator
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import msgpack
import numpy as np
import zmq

from ..io.arraytable import TableError, decode_frames, encode_frames, named_dtypes
from .shards import is_tree_node

VERSION = 1

HELLO = "hello"
WELCOME = "welcome"
READY = "ready"
TASK = "task"
GRADS = "grads"
HEARTBEAT = "heartbeat"
STOP = "stop"
ERROR = "error"
BYE = "bye"
TYPES = frozenset({HELLO, WELCOME, READY, TASK, GRADS, HEARTBEAT, STOP, ERROR, BYE})
STEP_TYPES = frozenset({TASK, GRADS})  # messages that belong to a training step (step >= 0)

MAX_FRAME_BYTES = 16 * 2**20  # arrays larger than this are split into several frames
# Over CURVE, ZeroMQ encrypts a frame whole, through buffers as large as the frame: 5 MB frames
# cost twice what 256 KiB ones do (bench/bench_range_costs.py), so a CURVE socket's arrays travel
# in pieces of this size; plaintext sockets keep one frame per array up to MAX_FRAME_BYTES.
CURVE_FRAME_BYTES = 256 * 1024
MAX_HEADER_BYTES = 4 * 2**20  # a larger header frame is rejected before it is parsed
MAX_NDIM = 32  # more dims than this is a hostile or broken header (NumPy 1's limit)
DEFAULT_DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")

REASONS = {
    "garbage": "the frames are not a message: no header, not msgpack, not a map, wrong keys",
    "version": "the header's protocol version is not VERSION",
    "job": "the job id is not a string or not the expected job",
    "type": "unknown message type",
    "step": "step is not an integer >= -1 (>= 0 for task and grads)",
    "worker": "worker is not an integer >= -1",
    "fields": "fields is not a map with string keys",
    "arrays": "the array table is not a list of [name, dtype, shape, nframes]",
    "names": "array names missing, unexpected, duplicated or not non-empty strings",
    "dtype": "array dtype not allowed or not the expected one",
    "shape": "array shape malformed, too large or not the expected one",
    "size": "the message or its header is larger than the receiver accepts",
    "frames": "the number of frames does not match the array table",
    "length": "an array's frames do not hold exactly shape * itemsize bytes",
    "nonfinite": "an array holds NaN or infinity",
    "peer": "the sender is not an admitted worker",
    "digest": "the worker runs a different training script",
    "stale": "the answer belongs to an earlier step or round, or was already received",
    "node": "the tree node is not one of the plan's, or was not asked of this worker",
    "count": "the sample count does not match the plan",
    "slot": "the shared-memory slot named does not exist",
}

_HEADER_KEYS = ("v", "job", "type", "step", "worker", "fields", "arrays")


@dataclass(eq=False)
class Envelope:
    """What every message travels in: type, job, step, worker, msgpack fields, named arrays.

    The typed messages below (``Hello``, ``Task``, ``Grads``, ...) are what the coordinator and
    the worker exchange; each packs itself into an envelope and checks one it is unpacked from.
    """

    type: str
    job: str
    step: int = -1
    worker: int = -1
    fields: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        """Equal headers, and arrays equal in order, name, dtype, shape and every byte."""
        if not isinstance(other, Envelope):
            return NotImplemented
        heads = (self.type, self.job, self.step, self.worker, self.fields)
        if heads != (other.type, other.job, other.step, other.worker, other.fields):
            return False
        if list(self.arrays) != list(other.arrays):
            return False
        return all(_same_array(a, other.arrays[k]) for k, a in self.arrays.items())

    __hash__ = None


def _same_array(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.tobytes() == b.tobytes()


class ProtocolError(ValueError):
    """A message that cannot be accepted: ``reason`` is a slug from REASONS, str(e) the detail."""

    def __init__(self, reason: str, message: str, identity: bytes | None = None):
        super().__init__(message)
        self.reason = reason
        self.identity = identity  # the ROUTER peer that sent it, when recv knows


def _cut(text: str, limit: int = 60) -> str:
    """Text cut to ``limit`` characters so an error message stays readable."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: object, limit: int = 60) -> str:
    """repr of an untrusted value, cut to ``limit`` characters."""
    return _cut(repr(value), limit)


# ---------------------------------------------------------------------------- encode
def encode(msg: Envelope, frame_bytes: int | None = None) -> list:
    """Frames for ``msg``: the msgpack header, then memoryviews of the array bytes (no copies),
    an array larger than ``frame_bytes`` (default ``MAX_FRAME_BYTES``) over several frames."""
    specs, buffers = encode_frames(msg.arrays, frame_bytes or MAX_FRAME_BYTES)
    header = {
        "v": VERSION,
        "job": msg.job,
        "type": msg.type,
        "step": operator.index(msg.step),
        "worker": operator.index(msg.worker),
        "fields": msg.fields,
        "arrays": specs,
    }
    return [msgpack.packb(header, use_bin_type=True), *buffers]


# ---------------------------------------------------------------------------- buffers
def _refcount(held: list, i: int) -> int:
    return sys.getrefcount(held[i])


class BufferPool:
    """Receive buffers for multi-frame arrays, reused so big receives skip fresh page faults.

    Keyed by (name, dtype, shape). A buffer is handed out again only once nothing references it
    any more (no decoded array, view or memoryview of it is alive, ZeroMQ is not still sending
    it), so holding several messages at once is safe: the pool then keeps one buffer per live
    message. ``max_bytes`` bounds what the pool keeps; beyond it, the least recently used free
    buffers are dropped. Not thread-safe: one pool per receiving thread.
    """

    def __init__(self, max_bytes: int = 1 << 32):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._held: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
        probe = [np.empty(0)]
        self._free_refs = _refcount(probe, 0)  # the count of a buffer only the pool holds

    def take(self, name: str, dtype, shape: Sequence[int]) -> np.ndarray:
        """A writable C-contiguous array of this name, dtype and shape that nobody else holds."""
        dtype, shape = np.dtype(dtype), tuple(shape)
        key = (name, dtype.str, shape)
        held = self._held.get(key)
        if held is not None:
            self._held.move_to_end(key)
            for i in range(len(held)):
                if _refcount(held, i) <= self._free_refs:
                    self.hits += 1
                    return held[i]
        self.misses += 1
        buf = np.empty(shape, dtype)
        if self._make_room(buf.nbytes):
            self._held.setdefault(key, []).append(buf)
            self.nbytes += buf.nbytes
        return buf

    def _make_room(self, nbytes: int) -> bool:
        """Drop least recently used free buffers until ``nbytes`` more fit; False if they can't."""
        if nbytes > self.max_bytes:
            return False
        for key in list(self._held):
            if self.nbytes + nbytes <= self.max_bytes:
                break
            held = self._held[key]
            for i in reversed(range(len(held))):
                if _refcount(held, i) <= self._free_refs:
                    self.nbytes -= held.pop(i).nbytes
            if not held:
                del self._held[key]
        return self.nbytes + nbytes <= self.max_bytes

    def clear(self) -> None:
        """Forget every buffer (arrays already handed out stay valid)."""
        self._held.clear()
        self.nbytes = 0


# ---------------------------------------------------------------------------- decode
def _frame_views(frames) -> tuple[list[memoryview], int]:
    """Flat byte memoryviews of the frames (bytes, buffers, zmq.Frame) and their total size."""
    if not isinstance(frames, (list, tuple)):
        raise ProtocolError("garbage", f"frames must be a list, got {type(frames).__name__}")
    if not frames:
        raise ProtocolError("garbage", "empty message: no header frame")
    views, total = [], 0
    for frame in frames:
        try:
            view = memoryview(frame)  # zero-copy for zmq.Frame too (same as frame.buffer)
            if view.ndim != 1 or view.format != "B":
                view = view.cast("B")
        except (TypeError, ValueError, BufferError) as e:
            raise ProtocolError(
                "garbage", f"a frame of type {type(frame).__name__} is not a byte buffer ({e})"
            ) from None
        views.append(view)
        total += view.nbytes
    return views, total


def _no_ext(code: int, data: bytes):
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


def _unpack_header(view: memoryview) -> dict:
    """The header map, parsed with limits so a hostile header cannot exhaust memory."""
    n = view.nbytes
    if n > MAX_HEADER_BYTES:
        raise ProtocolError("size", f"header of {n} bytes exceeds the {MAX_HEADER_BYTES} limit")
    try:
        header = msgpack.unpackb(
            view, raw=False, strict_map_key=True, use_list=True, ext_hook=_no_ext,
            max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n, max_ext_len=0,
        )  # fmt: skip
    except (ValueError, TypeError, OverflowError) as e:  # msgpack's errors are ValueErrors
        detail = _cut(f"{type(e).__name__}: {e}".rstrip(": "), 120)
        raise ProtocolError("garbage", f"header is not valid msgpack ({detail})") from None
    if not isinstance(header, dict):
        raise ProtocolError("garbage", f"header is a msgpack {type(header).__name__}, not a map")
    version = header.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(
            "version", f"protocol version {_short(version)}, this side speaks version {VERSION}"
        )
    if set(header) != set(_HEADER_KEYS):
        missing = sorted(set(_HEADER_KEYS) - set(header))
        extra = sorted(map(_short, set(header) - set(_HEADER_KEYS)))
        raise ProtocolError(
            "garbage", f"header keys wrong: missing {missing}, unexpected [{', '.join(extra)}]"
        )
    return header


def _is_int(value: object, low: int) -> bool:
    return type(value) is int and value >= low


def _check_head(header: dict, job: str | None) -> None:
    """Job, type, step, worker and fields of a parsed header."""
    got = header["job"]
    if not isinstance(got, str):
        raise ProtocolError("job", f"job id must be a string, got {_short(got)}")
    if job is not None and got != job:
        raise ProtocolError("job", f"message for job {_short(got)}, this is job {job!r}")
    kind = header["type"]
    if not isinstance(kind, str) or kind not in TYPES:
        raise ProtocolError(
            "type", f"unknown message type {_short(kind)}; known: {', '.join(sorted(TYPES))}"
        )
    step = header["step"]
    low = 0 if kind in STEP_TYPES else -1
    if not _is_int(step, low):
        raise ProtocolError("step", f"{kind} message has step {_short(step)}; need an int >= {low}")
    if not _is_int(header["worker"], -1):
        raise ProtocolError("worker", f"worker id {_short(header['worker'])} is not an int >= -1")
    fields = header["fields"]
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        raise ProtocolError(
            "fields", f"fields must be a map with string keys, got {_short(fields)}"
        )


def decode(
    frames,
    *,
    job: str | None = None,
    max_bytes: int = 1 << 31,
    allowed_dtypes: Sequence[str] = DEFAULT_DTYPES,
    buffers: BufferPool | None = None,
) -> Envelope:
    """The Envelope in ``frames``, every part of it checked; ProtocolError names what is wrong.

    ``job`` (when given) must match the header's job id. ``max_bytes`` bounds the whole message
    and the arrays it declares. Arrays held in one frame are zero-copy read-only views of it;
    arrays split over several frames are joined into a buffer from ``buffers`` or a fresh one.
    """
    views, total = _frame_views(frames)
    if total > max_bytes:
        raise ProtocolError("size", f"message of {total} bytes exceeds the {max_bytes} limit")
    header = _unpack_header(views[0])
    _check_head(header, job)
    allowed = allowed_dtypes if type(allowed_dtypes) is tuple else tuple(allowed_dtypes)
    allocate = buffers.take if buffers is not None else None
    try:
        arrays = decode_frames(header["arrays"], views[1:], named_dtypes(allowed),
                               max_bytes=max_bytes, max_ndim=MAX_NDIM, allocate=allocate)
    except TableError as e:  # its reasons are the wire's: arrays, names, dtype, shape, ...
        raise ProtocolError(e.reason, str(e)) from None
    return Envelope(
        type=header["type"],
        job=header["job"],
        step=header["step"],
        worker=header["worker"],
        fields=header["fields"],
        arrays=arrays,
    )


# ---------------------------------------------------------------------------- checks
def expect_arrays(msg: Envelope, spec: Mapping[str, tuple[Sequence[int], object]]) -> None:
    """Check that ``msg`` carries exactly the arrays of ``spec`` (name -> (shape, dtype))."""
    got, want = set(msg.arrays), set(spec)
    if got != want:
        raise ProtocolError(
            "names",
            f"{msg.type} message: missing arrays {sorted(want - got)}, "
            f"unexpected arrays {sorted(got - want)}",
        )
    for name, (shape, dtype) in spec.items():
        array = msg.arrays[name]
        if array.shape != tuple(shape):
            raise ProtocolError(
                "shape", f"array {name!r}: expected shape {tuple(shape)}, got {array.shape}"
            )
        if array.dtype != np.dtype(dtype):
            raise ProtocolError(
                "dtype", f"array {name!r}: expected dtype {np.dtype(dtype)}, got {array.dtype}"
            )


def check_finite(arrays: Mapping[str, np.ndarray]) -> None:
    """Reject NaN and infinity in any float array, naming the first bad one."""
    with np.errstate(over="ignore", invalid="ignore"):  # once per message: 3 us each time
        for name, array in arrays.items():
            if array.dtype.kind in "fc":
                _check_finite(name, array)


def _check_finite(name: str, array: np.ndarray) -> None:
    if array.dtype in _DOT_DTYPES and array.flags.c_contiguous:
        flat = array.reshape(-1)
        # A finite sum of squares proves every element finite, in one BLAS pass and without a
        # temporary; if finite values overflow it, the exact check below decides.
        if np.isfinite(np.dot(flat, flat)):
            return
    ok = np.isfinite(array)
    if not ok.all():
        bad = ok.size - int(np.count_nonzero(ok))
        first = tuple(int(i) for i in np.unravel_index(int(np.argmin(ok)), array.shape))
        raise ProtocolError(
            "nonfinite",
            f"array {name!r} holds {bad} non-finite value(s), the first at index {first}",
        )


_DOT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------- typed messages
# Every message a coordinator and a worker exchange, with its fields and their complete checks.
# ``pack(message, job)`` gives the frames; ``unpack(frames, ...)`` gives the typed message or
# raises ProtocolError. Checks that need the model (array shapes, parameter indices) take a
# ``ModelSchema``; checks that need the run's state (was this node asked of this worker?) are
# the coordinator's.

MAX_TEXT = 256  # names, hosts, digests, reasons
MAX_TRACEBACK = 64 * 1024
MAX_NODES = 1 << 16  # tree nodes in one TASK (2 * micro_shards at most)


@dataclass(frozen=True)
class ModelSchema:
    """What both sides know of the job's model, against which array-carrying messages are checked.

    ``names`` and ``specs`` list the parameters (state_dict names, (shape, dtype)); ``bn_shapes``
    the feature shape of each batch-norm module that tracks running statistics (None where it
    does not); ``phases`` the parameter indices each phase trains.
    """

    names: tuple
    specs: tuple
    bn_shapes: tuple
    micro_shards: int
    phases: tuple
    ranges: object = None  # the job's ParamRanges, for the sharded reduction's messages

    @classmethod
    def of(cls, model, phases, micro_shards: int, bn_modules) -> ModelSchema:
        """The schema of a built model, its phases and its batch-norm modules."""
        names, specs = [], []
        for name, p in model.named_parameters():
            names.append(name)
            specs.append((tuple(p.shape), np.dtype(p.dtype)))
        bn = tuple(tuple(m.running_mean.shape) if getattr(m, "running_mean", None) is not None
                   else None for m in bn_modules)
        return cls(tuple(names), tuple(specs), bn, micro_shards,
                   tuple(tuple(ph.param_indices) for ph in phases))

    @property
    def dtype(self) -> np.dtype:
        return self.specs[0][1] if self.specs else np.dtype(np.float32)

    def max_message_bytes(self, slack: int = 1 << 20) -> int:
        """The largest legitimate message: all parameters plus every shard's batch-norm stats."""
        params = sum(int(np.prod(s, dtype=np.int64)) * d.itemsize for s, d in self.specs)
        bn = sum(int(np.prod(s, dtype=np.int64)) for s in self.bn_shapes if s is not None)
        return params + 2 * self.micro_shards * bn * 8 + slack


def _text(fields: dict, name: str, kind: str, limit: int = MAX_TEXT, default=None) -> str:
    value = fields.get(name, default)
    if type(value) is not str or len(value) > limit:
        raise ProtocolError("fields", f"{kind}: field {name!r} must be a string of at most "
                            f"{limit} characters, got {_short(value)}")
    return value


def _int(fields: dict, name: str, kind: str, low: int = 0, high: int | None = None,
         default=None) -> int:
    value = fields.get(name, default)
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ProtocolError("fields", f"{kind}: field {name!r} must be an int {bound}, "
                            f"got {_short(value)}")
    return value


def _float(fields: dict, name: str, kind: str, *, finite: bool = True, low=None,
           default=None) -> float:
    value = fields.get(name, default)
    if type(value) is not float or (finite and not math.isfinite(value)) or \
            (low is not None and not value >= low):
        need = "a finite float" if finite else "a float"
        need += f" >= {low}" if low is not None else ""
        raise ProtocolError("fields", f"{kind}: field {name!r} must be {need}, "
                            f"got {_short(value)}")
    return value


def _choice(fields: dict, name: str, kind: str, choices: tuple) -> str:
    value = _text(fields, name, kind)
    if value not in choices:
        raise ProtocolError("fields", f"{kind}: {name} {_short(value)} is not one of {choices}")
    return value


def _only(fields: dict, kind: str, allowed: tuple) -> None:
    extra = set(fields) - set(allowed)
    if extra:
        raise ProtocolError("fields", f"{kind}: unexpected fields "
                            f"{', '.join(sorted(map(_short, extra)))}")


def _node(value, kind: str, micro_shards: int | None) -> tuple[int, int]:
    if not (type(value) is list and len(value) == 2 and all(type(v) is int for v in value)):
        raise ProtocolError("node", f"{kind}: a tree node is [lo, hi], got {_short(value)}")
    node = (value[0], value[1])
    if micro_shards is not None and not is_tree_node(node, micro_shards):
        raise ProtocolError("node", f"{kind}: {node} is not a node of the {micro_shards}-shard "
                            "reduction tree")
    return node


def _no_arrays(env: Envelope) -> None:
    if env.arrays:
        raise ProtocolError("names", f"{env.type} carries arrays {sorted(env.arrays)}; "
                            "it takes none")


def _choice_and_text(env: Envelope, kind: str, choice: str, choices: tuple, text: str,
                     limit: int = MAX_TEXT) -> tuple[str, str]:
    """The fields of a message of one choice and one optional text (``""``), and no arrays."""
    _only(env.fields, kind, (choice, text))
    _no_arrays(env)
    return (_choice(env.fields, choice, kind, choices),
            _text(env.fields, text, kind, limit, default=""))


@dataclass
class Hello:
    """A worker asks to join: who it is, which script it runs, which machine it is on.

    ``instance`` is drawn at random when the worker process starts and kept across reconnects:
    it, never (host, pid), tells a reconnecting worker from a new one (containers share pids).
    """

    TYPE: ClassVar[str] = HELLO
    instance: str
    name: str
    pid: int
    host: str
    digest: str
    rank: int = 0
    machine: str = ""

    def envelope(self, job: str) -> Envelope:
        return Envelope(HELLO, job, -1, -1, {
            "instance": self.instance, "name": self.name, "pid": self.pid, "host": self.host,
            "digest": self.digest, "rank": self.rank, "machine": self.machine})

    @classmethod
    def check(cls, env: Envelope, schema=None) -> Hello:
        f, k = env.fields, "hello"
        _only(f, k, ("instance", "name", "pid", "host", "digest", "rank", "machine"))
        _no_arrays(env)
        instance = _text(f, "instance", k, 64)
        if not instance:
            raise ProtocolError("fields", "hello: field 'instance' is empty")
        return cls(instance=instance, name=_text(f, "name", k), pid=_int(f, "pid", k, -1),
                   host=_text(f, "host", k), digest=_text(f, "digest", k),
                   rank=_int(f, "rank", k, 0, default=0),
                   machine=_text(f, "machine", k, default=""))


@dataclass
class Welcome:
    """The coordinator admits a worker: its id, the run's settings, and a shared-memory offer.

    ``shared_memory`` (when the worker is on the coordinator's machine and the job allows it)
    describes the parameter board and this worker's gradient board, and may name a local link
    (``local_link.py``) for the messages; the worker answers READY saying which array channel
    it will use, having connected the link first if it takes it.
    """

    TYPE: ClassVar[str] = WELCOME
    worker: int
    step: int
    settings: dict
    shared_memory: dict | None = None

    def envelope(self, job: str) -> Envelope:
        fields = {"settings": self.settings}
        if self.shared_memory is not None:
            fields["shared_memory"] = self.shared_memory
        return Envelope(WELCOME, job, self.step, self.worker, fields)

    @classmethod
    def check(cls, env: Envelope, schema=None) -> Welcome:
        f = env.fields
        _only(f, "welcome", ("settings", "shared_memory"))
        _no_arrays(env)
        settings, offer = f.get("settings"), f.get("shared_memory")
        if not isinstance(settings, dict):
            raise ProtocolError("fields", f"welcome: settings must be a map, got "
                                f"{_short(settings)}")
        if offer is not None and not (
                isinstance(offer, dict) and {"params", "grads"} <= set(offer)
                <= {"params", "grads", "link"}
                and isinstance(offer.get("link", ""), str)):
            raise ProtocolError("fields", f"welcome: malformed shared-memory offer "
                                f"{_short(offer)}")
        if env.worker < 0:
            raise ProtocolError("worker", "welcome: no worker id")
        return cls(worker=env.worker, step=env.step, settings=settings, shared_memory=offer)


CHANNELS = ("shared-memory", "network")


@dataclass
class Ready:
    """A welcomed worker is ready for tasks; ``channel`` is how its arrays will travel."""

    TYPE: ClassVar[str] = READY
    worker: int
    channel: str
    note: str = ""
    reducer: str = ""  # sharded reduction: where this worker's reducer listens
    public: str = ""  # ... and its CURVE public key (z85; empty when insecure)

    def envelope(self, job: str) -> Envelope:
        fields = {"channel": self.channel, "note": self.note}
        if self.reducer:
            fields.update(reducer=self.reducer, public=self.public)
        return Envelope(READY, job, -1, self.worker, fields)

    @classmethod
    def check(cls, env: Envelope, schema=None) -> Ready:
        f, k = env.fields, "ready"
        reducer, public = _text(f, "reducer", k, default=""), _text(f, "public", k, 40, "")
        if (reducer and not reducer.startswith("tcp://")) or len(public) not in (0, 40) or \
                (public and not reducer):
            raise ProtocolError("fields", f"ready: bad reducer {_short(reducer)} or key")
        fields = {key: v for key, v in f.items() if key not in ("reducer", "public")}
        channel, note = _choice_and_text(Envelope(env.type, env.job, fields=fields,
                                                  arrays=env.arrays),
                                         k, "channel", CHANNELS, "note")
        return cls(worker=env.worker, channel=channel, note=note, reducer=reducer,
                   public=public)


@dataclass
class Task:
    """Compute these tree nodes of step ``step`` (epoch, batch, phase, evaluation round).

    ``params`` are the parameters to compute with, by state_dict name, or empty when they
    travel through shared memory.
    """

    TYPE: ClassVar[str] = TASK
    step: int
    worker: int
    epoch: int
    batch: int
    phase: int
    round: int
    nodes: list
    params: dict = field(default_factory=dict)

    def envelope(self, job: str) -> Envelope:
        return Envelope(TASK, job, self.step, self.worker, {
            "epoch": self.epoch, "batch": self.batch, "phase": self.phase,
            "round": self.round, "nodes": [list(n) for n in self.nodes]}, self.params)

    @classmethod
    def check(cls, env: Envelope, schema: ModelSchema | None = None) -> Task:
        f, k = env.fields, "task"
        _only(f, k, ("epoch", "batch", "phase", "round", "nodes"))
        shards = schema.micro_shards if schema is not None else None
        nodes = f.get("nodes")
        if type(nodes) is not list or not 0 < len(nodes) <= MAX_NODES:
            raise ProtocolError("fields", f"task: nodes must be a non-empty list, got "
                                f"{_short(nodes)}")
        phases = len(schema.phases) - 1 if schema is not None else None
        task = cls(step=env.step, worker=env.worker, epoch=_int(f, "epoch", k),
                   batch=_int(f, "batch", k), phase=_int(f, "phase", k, 0, phases),
                   round=_int(f, "round", k), nodes=[_node(n, k, shards) for n in nodes],
                   params=env.arrays)
        if schema is not None and env.arrays:
            expect_arrays(env, dict(zip(schema.names, schema.specs)))
        return task


@dataclass
class Grads:
    """The value of one tree node: its gradient sums, loss sum, sample count, batch-norm stats.

    ``grads`` maps parameter index to gradient sum (only parameters a gradient reached). When
    the worker wrote them to a shared-memory ``slot`` instead, ``indices`` lists them and
    ``grads`` is empty. ``bn`` lists (shard, module, mean, var) for batch-norm modules.
    """

    TYPE: ClassVar[str] = GRADS
    step: int
    worker: int
    round: int
    phase: int
    node: tuple
    count: int
    loss_sum: float = 0.0
    compute_s: float = 0.0
    grads: dict = field(default_factory=dict)
    indices: list = field(default_factory=list)
    slot: int | None = None
    bn: list = field(default_factory=list)

    def envelope(self, job: str) -> Envelope:
        indices = sorted(self.grads) if self.slot is None else list(self.indices)
        arrays = {} if self.slot is not None else {f"g{i}": self.grads[i] for i in indices}
        bn = []
        for k, (shard, module, mean, var) in enumerate(self.bn):
            arrays[f"bn{k}.mean"], arrays[f"bn{k}.var"] = mean, var
            bn.append([shard, module])
        fields = {"round": self.round, "phase": self.phase, "node": list(self.node),
                  "count": self.count, "loss_sum": float(self.loss_sum),
                  "compute_s": float(self.compute_s), "grads": indices, "bn": bn}
        if self.slot is not None:
            fields["slot"] = self.slot
        return Envelope(GRADS, job, self.step, self.worker, fields, arrays)

    @classmethod
    def check(cls, env: Envelope, schema: ModelSchema) -> Grads:
        """Every field and array checked against the model; non-finite values are let through
        here (the coordinator decides between a faulty worker and a diverged run)."""
        f, k = env.fields, "grads"
        _only(f, k, ("round", "phase", "node", "count", "loss_sum", "compute_s", "grads", "bn",
                     "slot"))
        node = _node(f.get("node"), k, schema.micro_shards)
        phase = _int(f, "phase", k, 0, len(schema.phases) - 1)
        msg = cls(step=env.step, worker=env.worker, round=_int(f, "round", k), phase=phase,
                  node=node, count=_int(f, "count", k),
                  loss_sum=_float(f, "loss_sum", k, finite=False),
                  compute_s=_float(f, "compute_s", k, low=0.0))
        has, bn, slot = f.get("grads"), f.get("bn"), f.get("slot")
        allowed = schema.phases[phase]
        if not (type(has) is list and all(type(i) is int for i in has)
                and has == sorted(set(has)) and set(has) <= set(allowed)):
            raise ProtocolError("names", f"grads: bad gradient index list {_short(has)} for "
                                f"phase {phase}")
        if type(bn) is not list or not all(
                type(e) is list and len(e) == 2 and all(type(v) is int for v in e)
                and node[0] <= e[0] < node[1] and 0 <= e[1] < len(schema.bn_shapes)
                and schema.bn_shapes[e[1]] is not None for e in bn):
            raise ProtocolError("names", f"grads: bad batch-norm entry list {_short(bn)}")
        if slot is not None and (type(slot) is not int or slot < 0):
            raise ProtocolError("slot", f"grads: slot {_short(slot)} is not an int >= 0")
        if msg.count == 0 and (has or bn or slot is not None):
            raise ProtocolError("names", f"grads: empty node {node} carries values")
        spec = {} if slot is not None else {f"g{i}": schema.specs[i] for i in has}
        for j, (_, module) in enumerate(bn):
            spec[f"bn{j}.mean"] = spec[f"bn{j}.var"] = (schema.bn_shapes[module], schema.dtype)
        expect_arrays(env, spec)
        if slot is None:
            msg.grads = {i: env.arrays[f"g{i}"] for i in has}
        msg.indices, msg.slot = list(has), slot
        msg.bn = [(s, m, env.arrays[f"bn{j}.mean"], env.arrays[f"bn{j}.var"])
                  for j, (s, m) in enumerate(bn)]
        return msg

    def first_nonfinite(self, grads: dict) -> str | None:
        """What is non-finite in this node's value (``grads`` as the channel delivered them),
        or None when every number is finite."""
        if not math.isfinite(self.loss_sum):
            return f"loss sum {self.loss_sum!r} of node {self.node}"
        arrays = {f"g{i}": g for i, g in grads.items()}
        for j, (_, _, mean, var) in enumerate(self.bn):
            arrays[f"bn{j}.mean"], arrays[f"bn{j}.var"] = mean, var
        try:
            check_finite(arrays)
        except ProtocolError as e:
            return str(e)
        return None


@dataclass
class Heartbeat:
    """I am alive. A worker's beacon socket names the data socket it speaks ``of`` and says for
    how many seconds per node its compute thread has been ``busy`` (0 when idle): a worker that
    heartbeats but makes no progress is stuck, and its nodes go elsewhere. The coordinator
    answers a beacon on the beacon's own connection, which large messages do not hold up."""

    TYPE: ClassVar[str] = HEARTBEAT
    worker: int = -1
    of: bytes | None = None
    busy: float = 0.0

    def envelope(self, job: str) -> Envelope:
        fields = {} if self.of is None else {"of": self.of.hex(), "busy": float(self.busy)}
        return Envelope(HEARTBEAT, job, -1, self.worker, fields)

    @classmethod
    def check(cls, env: Envelope, schema=None) -> Heartbeat:
        f, k = env.fields, "heartbeat"
        _only(f, k, ("of", "busy"))
        _no_arrays(env)
        of = None
        if "of" in f:
            text = _text(f, "of", k, 512)
            try:
                of = bytes.fromhex(text)
            except ValueError:
                raise ProtocolError("fields", f"heartbeat for {_short(text)}: not a worker "
                                    "identity") from None
        return cls(worker=env.worker, of=of, busy=_float(f, "busy", k, low=0.0, default=0.0))


STOP_REASONS = ("done", "evicted", "rejoin")


@dataclass
class Stop:
    """Stop: the run is ``done``; this worker was ``evicted``; or ``rejoin`` (say HELLO again)."""

    TYPE: ClassVar[str] = STOP
    worker: int = -1
    step: int = -1
    reason: str = "done"
    detail: str = ""

    def envelope(self, job: str) -> Envelope:
        return Envelope(STOP, job, self.step, self.worker, {"reason": self.reason,
                                                            "detail": self.detail})

    @classmethod
    def check(cls, env: Envelope, schema=None) -> Stop:
        reason, detail = _choice_and_text(env, "stop", "reason", STOP_REASONS, "detail", 4096)
        return cls(worker=env.worker, step=env.step, reason=reason, detail=detail)


@dataclass
class Error:
    """The training script raised on a worker: the traceback, and the node it was computing."""

    TYPE: ClassVar[str] = ERROR
    worker: int
    step: int
    traceback: str
    round: int
    node: tuple

    def envelope(self, job: str) -> Envelope:
        return Envelope(ERROR, job, self.step, self.worker, {
            "traceback": self.traceback[-MAX_TRACEBACK:], "round": self.round,
            "node": list(self.node)})

    @classmethod
    def check(cls, env: Envelope, schema=None) -> Error:
        f, k = env.fields, "error"
        _only(f, k, ("traceback", "round", "node"))
        _no_arrays(env)
        shards = schema.micro_shards if schema is not None else None
        return cls(worker=env.worker, step=env.step,
                   traceback=_text(f, "traceback", k, MAX_TRACEBACK),
                   round=_int(f, "round", k), node=_node(f.get("node"), k, shards))


@dataclass
class Bye:
    """A worker leaves (it is stopping); its unfinished nodes go to the others at once."""

    TYPE: ClassVar[str] = BYE
    worker: int = -1

    def envelope(self, job: str) -> Envelope:
        return Envelope(BYE, job, -1, self.worker)

    @classmethod
    def check(cls, env: Envelope, schema=None) -> Bye:
        _only(env.fields, "bye", ())
        _no_arrays(env)
        return cls(worker=env.worker)


MESSAGE_TYPES = {cls.TYPE: cls for cls in (Hello, Welcome, Ready, Task, Grads, Heartbeat, Stop,
                                           Error, Bye)}
NEEDS_SCHEMA = frozenset({GRADS})


def pack(message, job: str, frame_bytes: int | None = None) -> list:
    """The frames of a typed message (zero-copy views of its arrays)."""
    return encode(message.envelope(job), frame_bytes)


def typed(env: Envelope, schema: ModelSchema | None = None):
    """The typed message an envelope holds, every field checked (GRADS needs the ``schema``)."""
    if env.type in NEEDS_SCHEMA and schema is None:
        raise ProtocolError("type", f"{env.type} message before the model is known")
    return MESSAGE_TYPES[env.type].check(env, schema)


def unpack(frames, *, job: str | None = None, schema: ModelSchema | None = None,
           max_bytes: int = 1 << 31, buffers: BufferPool | None = None):
    """The typed message in ``frames``, every part checked; ProtocolError says what is wrong."""
    return typed(decode(frames, job=job, max_bytes=max_bytes, buffers=buffers), schema)


# ---------------------------------------------------------------------------- sockets
def send(socket: zmq.Socket, msg, identity: bytes | None = None, *, job: str | None = None,
         flags: int = 0, track: bool = False, frame_bytes: int | None = None):
    """Encode and send ``msg`` (an Envelope, or a typed message of job ``job``) without copying
    arrays, none in frames over ``frame_bytes`` (by default ``CURVE_FRAME_BYTES`` on a CURVE
    socket, else ``MAX_FRAME_BYTES``); ``identity`` first for a ROUTER socket.

    The arrays must not change until ZeroMQ has sent them: with ``track=True`` the returned
    MessageTracker says when (``tracker.wait()``); otherwise returns None.
    """
    if frame_bytes is None:
        frame_bytes = frame_bytes_for(socket)
    frames = encode(msg, frame_bytes) if isinstance(msg, Envelope) else \
        pack(msg, job, frame_bytes)
    if identity is not None:
        frames.insert(0, identity)
    tracker = socket.send_multipart(frames, flags, copy=False, track=track)
    return tracker if track else None


def send_packed(socket: zmq.Socket, frames: list, flags: int = 0) -> None:
    """Send a message already packed (``pack``), and maybe sealed (``sealing``), without
    copies: one message sent to several peers is packed and sealed once."""
    socket.send_multipart(frames, flags, copy=False)


def frame_bytes_for(socket: zmq.Socket) -> int:
    """The largest array frame worth sending on ``socket``: smaller under CURVE."""
    if socket.getsockopt(zmq.MECHANISM) == zmq.CURVE:
        return CURVE_FRAME_BYTES
    return MAX_FRAME_BYTES


def recv_frames(socket: zmq.Socket, flags: int = 0) -> list:
    """The frames of the next message, zero-copy, undecoded (``decode`` checks them)."""
    return socket.recv_multipart(flags, copy=False)


def recv(
    socket: zmq.Socket,
    *,
    router: bool | None = None,
    job: str | None = None,
    max_bytes: int = 1 << 31,
    allowed_dtypes: Sequence[str] = DEFAULT_DTYPES,
    buffers: BufferPool | None = None,
    flags: int = 0,
    timeout: float | None = None,
) -> tuple[bytes | None, Envelope]:
    """Receive and decode one message: (sender identity or None, Envelope), without copies.

    ``router`` says the first frame is the peer identity (default: the socket is a ROUTER).
    ``timeout`` in seconds raises TimeoutError when nothing arrives. A ProtocolError carries the
    sender's ``identity`` so a coordinator can answer or drop that peer.
    """
    if timeout is not None and not socket.poll(max(0, round(timeout * 1000)), zmq.POLLIN):
        raise TimeoutError(f"no message within {timeout} s")
    frames = socket.recv_multipart(flags, copy=False)
    if router is None:
        router = socket.type == zmq.ROUTER
    identity = None
    if router:
        identity = frames[0].bytes
        frames = frames[1:]
    try:
        msg = decode(
            frames, job=job, max_bytes=max_bytes, allowed_dtypes=allowed_dtypes, buffers=buffers
        )
    except ProtocolError as e:
        e.identity = identity
        raise
    return identity, msg


# ---------------------------------------------------------------------------- sharded reduction
# With ``reduction = sharded`` each worker also runs a reducer: a ROUTER of its own that the
# other workers' DEALERs reach. The conversation, besides the one above (a node's loss, count
# and batch-norm statistics still reach the coordinator as a GRADS without gradient arrays)::
#
#     worker -> coordinator  READY       (also: the address and CURVE public key its reducer
#                                         serves, in the fields ``reducer`` and ``public``)
#     coordinator -> worker  RANGEMAP    (version: every reducer, the owner of each range, the
#                                         keys reducers admit, the key peers seal with)
#     worker -> coordinator  MAPACK
#     coordinator -> worker  RANGESTATE  (a range's parameters and optimizer state to own)
#     coordinator -> worker  STEPTASK    (step, its nodes, the step's whole cover, group options;
#                                         ``hold``: accumulate the sums, do not step)
#     worker -> reducer      RANGEGRADS  (one node's gradient sums of one range)
#     reducer -> worker      RANGEPARAMS (the range's parameters after the step, for the next)
#     reducer -> coordinator RANGENORM   (with clip_grad_norm: the range's squared norm, before
#                                         it steps)     coordinator -> worker  CLIPSCALE  (the
#                                         factor every range's gradient is scaled by, once the
#                                         coordinator has added every range's norm)
#     reducer -> coordinator RANGEDONE   (the range stepped)
#     coordinator -> worker  GATHER      (send back these ranges' RANGESTATE: checkpoints, end;
#                                         with accumulate, the group's sums so far travel too)
#
# A range's arrays are its pieces (``param_ranges``) in order, named ``p{j}`` (parameters),
# ``g{j}`` (gradients) and ``s{j}.{key}`` (optimizer state); a piece that is a whole parameter
# keeps its shape, a split one is flat. ``version`` numbers the range maps: anything of another
# version is stale. Under CURVE, what workers send each other (RANGEGRADS, RANGEPARAMS) is
# sealed with the map's key (``sealing.py``) unless ``peer_cipher = curve``.

RANGEMAP = "rangemap"
MAPACK = "mapack"
RANGESTATE = "rangestate"
STEPTASK = "steptask"
RANGEGRADS = "rangegrads"
RANGEPARAMS = "rangeparams"
RANGEDONE = "rangedone"
GATHER = "gather"
RANGENORM = "rangenorm"
CLIPSCALE = "clipscale"
SHARDED_TYPES = frozenset({RANGEMAP, MAPACK, RANGESTATE, STEPTASK, RANGEGRADS,
                           RANGEPARAMS, RANGEDONE, GATHER, RANGENORM, CLIPSCALE})
TYPES = TYPES | SHARDED_TYPES
STEP_TYPES = STEP_TYPES | frozenset({STEPTASK, RANGEGRADS, RANGEPARAMS, RANGEDONE, RANGENORM,
                                     CLIPSCALE})
MAX_REDUCERS = 4096
MAX_OPTIONS = 64  # parameter groups in one STEPTASK
STATE_KINDS = ("array", "float", "int", "scalar")  # how an optimizer state entry travels
_SCALAR_DTYPES = ("float32", "float64", "int64", "int32")


def piece_spec(schema: ModelSchema, piece) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of one range piece on the wire: whole parameters keep their shape."""
    shape, dtype = schema.specs[piece.param]
    whole = schema.ranges.is_whole(piece)
    return (tuple(shape) if whole else (piece.size,)), dtype


def _range_index(fields: dict, kind: str, schema) -> int:
    """The ``range`` field: an index into the job's ranges (which the schema must know)."""
    if schema is None or schema.ranges is None:
        raise ProtocolError("type", f"{kind} message before the parameter ranges are known")
    return _int(fields, "range", kind, 0, len(schema.ranges) - 1)


def _int_list(value, kind: str, name: str, low: int, high: int, limit: int) -> list:
    if type(value) is not list or len(value) > limit or \
            not all(type(v) is int and low <= v <= high for v in value):
        raise ProtocolError("fields", f"{kind}: {name} must be a list of ints in [{low}, "
                            f"{high}], got {_short(value)}")
    return value


def _text_list(value, kind: str, name: str, limit: int) -> list:
    if type(value) is not list or len(value) > limit or \
            not all(type(v) is str and len(v) <= MAX_TEXT for v in value):
        raise ProtocolError("fields", f"{kind}: {name} must be a list of short strings, got "
                            f"{_short(value)}")
    return value


def _nodes(value, kind: str, schema, allow_empty: bool) -> list:
    low = 0 if allow_empty else 1
    if type(value) is not list or not low <= len(value) <= MAX_NODES:
        raise ProtocolError("fields", f"{kind}: nodes must be a list of tree nodes, got "
                            f"{_short(value)}")
    shards = schema.micro_shards if schema is not None else None
    return [_node(n, kind, shards) for n in value]


@dataclass
class RangeMap:
    """Range map ``version``: the reducers (address, public key), each range's owner (an index
    into them), the public keys reducers admit (the job's workers'), and ``seal``: the key
    peers seal their messages with under ``peer_cipher = aes-gcm`` (``sealing``; empty when
    they use CURVE or nothing)."""

    TYPE: ClassVar[str] = RANGEMAP
    version: int
    reducers: list
    owners: list
    allowed: list = field(default_factory=list)
    seal: bytes = b""

    def envelope(self, job: str) -> Envelope:
        return Envelope(RANGEMAP, job, -1, -1, {
            "version": self.version, "reducers": [list(r) for r in self.reducers],
            "owners": list(self.owners), "allowed": list(self.allowed), "seal": self.seal})

    @classmethod
    def check(cls, env: Envelope, schema=None) -> RangeMap:
        f, k = env.fields, "rangemap"
        _only(f, k, ("version", "reducers", "owners", "allowed", "seal"))
        _no_arrays(env)
        reducers = f.get("reducers")
        if type(reducers) is not list or not 0 < len(reducers) <= MAX_REDUCERS or not all(
                type(r) is list and len(r) == 2 and _text_list(r, k, "reducer", 2)
                for r in reducers):
            raise ProtocolError("fields", f"rangemap: bad reducer list {_short(reducers)}")
        count = len(schema.ranges) if schema is not None and schema.ranges is not None else None
        owners = _int_list(f.get("owners"), k, "owners", 0, len(reducers) - 1, 1 << 20)
        if count is not None and len(owners) != count:
            raise ProtocolError("fields", f"rangemap: {len(owners)} owners for {count} ranges")
        return cls(version=_int(f, "version", k), reducers=[tuple(r) for r in reducers],
                   owners=owners,
                   allowed=_text_list(f.get("allowed"), k, "allowed", 1 << 16),
                   seal=_seal_key(f.get("seal", b""), k))


SEAL_KEY_BYTES = 32


def _seal_key(value, kind: str) -> bytes:
    if type(value) is not bytes or len(value) not in (0, SEAL_KEY_BYTES):
        got = f"{len(value)} bytes" if type(value) is bytes else f"a {type(value).__name__}"
        raise ProtocolError("fields", f"{kind}: seal must be empty or {SEAL_KEY_BYTES} bytes, "
                            f"got {got}")
    return value


@dataclass
class MapAck:
    """The worker uses range map ``version`` (its reducer admits the keys, its DEALERs are
    connected)."""

    TYPE: ClassVar[str] = MAPACK
    worker: int
    version: int

    def envelope(self, job: str) -> Envelope:
        return Envelope(MAPACK, job, -1, self.worker, {"version": self.version})

    @classmethod
    def check(cls, env: Envelope, schema=None) -> MapAck:
        _only(env.fields, "mapack", ("version",))
        _no_arrays(env)
        return cls(worker=env.worker, version=_int(env.fields, "version", "mapack"))


@dataclass
class RangeState:
    """One range's parameters and optimizer state: what its reducer is to own (coordinator to
    worker), or what it owns now (worker to coordinator, after GATHER). ``state`` lists per
    piece ``{key: (kind, array)}``, ``kind`` from ``STATE_KINDS`` (numbers travel as 0-d
    arrays, and the kind brings back their Python type). With ``accumulate`` > 1, the gradient
    sums accumulated so far in the current group: ``acc`` per piece (None: no gradient reached
    it; an empty list: nothing accumulated) over ``acc_count`` samples."""

    TYPE: ClassVar[str] = RANGESTATE
    worker: int
    version: int
    range: int
    step: int
    params: list
    state: list
    acc: list = field(default_factory=list)
    acc_count: int = 0

    def envelope(self, job: str) -> Envelope:
        arrays = {f"p{j}": p for j, p in enumerate(self.params)}
        kinds = []
        for j, entries in enumerate(self.state):
            kinds.append({key: kind for key, (kind, _) in entries.items()})
            arrays.update({f"s{j}.{key}": value for key, (_, value) in entries.items()})
        arrays.update({f"a{j}": a for j, a in enumerate(self.acc) if a is not None})
        return Envelope(RANGESTATE, job, -1, self.worker, {
            "version": self.version, "range": self.range, "step": self.step, "kinds": kinds,
            "acc_count": self.acc_count}, arrays)

    @classmethod
    def check(cls, env: Envelope, schema: ModelSchema) -> RangeState:
        f, k = env.fields, "rangestate"
        _only(f, k, ("version", "range", "step", "kinds", "acc_count"))
        index = _range_index(f, k, schema)
        pieces = schema.ranges.ranges[index]
        acc_count = _int(f, "acc_count", k)
        accumulated = [j for j in range(len(pieces)) if f"a{j}" in env.arrays]
        if accumulated and not acc_count:
            raise ProtocolError("names", "rangestate: accumulated gradients of no samples")
        kinds = f.get("kinds")
        if type(kinds) is not list or len(kinds) != len(pieces) or not all(
                isinstance(m, dict) and len(m) <= MAX_TEXT and all(
                    type(key) is str and 0 < len(key) <= MAX_TEXT and "." not in key
                    and kind in STATE_KINDS for key, kind in m.items()) for m in kinds):
            raise ProtocolError("fields", f"rangestate: bad state kinds {_short(kinds)}")
        spec = {f"p{j}": piece_spec(schema, piece) for j, piece in enumerate(pieces)}
        spec.update({f"a{j}": piece_spec(schema, pieces[j]) for j in accumulated})
        scalars = {}
        for j, (piece, entries) in enumerate(zip(pieces, kinds)):
            for key, kind in entries.items():
                name = f"s{j}.{key}"
                if kind == "array":
                    spec[name] = piece_spec(schema, piece)
                else:
                    scalars[name] = kind
        expect_arrays(Envelope(env.type, env.job, fields=f, arrays={
            n: a for n, a in env.arrays.items() if n not in scalars}), spec)
        for name, kind in scalars.items():
            a = env.arrays.get(name)
            want = {"float": ("float64",), "int": ("int64",)}.get(kind, _SCALAR_DTYPES)
            if a is None or a.shape != () or a.dtype.name not in want:
                raise ProtocolError("shape", f"rangestate: state {name} must be a 0-d "
                                    f"{'/'.join(want)} array")
        if len(env.arrays) != len(spec) + len(scalars):
            raise ProtocolError("names", "rangestate: unexpected arrays")
        state = [{key: (kind, env.arrays[f"s{j}.{key}"]) for key, kind in entries.items()}
                 for j, entries in enumerate(kinds)]
        acc = [env.arrays.get(f"a{j}") for j in range(len(pieces))] if acc_count else []
        return cls(worker=env.worker, version=_int(f, "version", k), range=index,
                   step=_int(f, "step", k), params=[env.arrays[f"p{j}"]
                                                   for j in range(len(pieces))], state=state,
                   acc=acc, acc_count=acc_count)


@dataclass
class Gather:
    """Send back the RANGESTATE of these ranges (those this worker's reducer owns)."""

    TYPE: ClassVar[str] = GATHER
    version: int
    ranges: list

    def envelope(self, job: str) -> Envelope:
        return Envelope(GATHER, job, -1, -1, {"version": self.version,
                                              "ranges": list(self.ranges)})

    @classmethod
    def check(cls, env: Envelope, schema=None) -> Gather:
        f, k = env.fields, "gather"
        _only(f, k, ("version", "ranges"))
        _no_arrays(env)
        return cls(version=_int(f, "version", k),
                   ranges=_int_list(f.get("ranges"), k, "ranges", 0, 1 << 20, 1 << 20))


@dataclass
class StepTask:
    """Step ``step`` of range map ``version``: compute ``nodes`` (maybe none) with the ranges'
    parameters for this step; the step's gradient sum covers ``cover``; reducers step with the
    job's parameter group ``options`` (lr after the scheduler, ...). ``hold`` (accumulate > 1,
    not the last mini-batch of its group): reducers add the sums to their accumulation buffers
    and do not step."""

    TYPE: ClassVar[str] = STEPTASK
    step: int
    worker: int
    version: int
    epoch: int
    batch: int
    nodes: list
    cover: list
    options: list
    hold: bool = False

    def envelope(self, job: str) -> Envelope:
        nodes, cover = [list(n) for n in self.nodes], [list(n) for n in self.cover]
        return Envelope(STEPTASK, job, self.step, self.worker, {
            "version": self.version, "epoch": self.epoch, "batch": self.batch,
            "nodes": nodes, "cover": cover, "options": self.options, "hold": self.hold})

    @classmethod
    def check(cls, env: Envelope, schema=None) -> StepTask:
        f, k = env.fields, "steptask"
        _only(f, k, ("version", "epoch", "batch", "nodes", "cover", "options", "hold"))
        _no_arrays(env)
        hold = f.get("hold")
        if type(hold) is not bool:
            raise ProtocolError("fields", f"steptask: field 'hold' must be a bool, got "
                                f"{_short(hold)}")
        options = f.get("options")
        if type(options) is not list or not 0 < len(options) <= MAX_OPTIONS or not all(
                isinstance(o, dict) and len(o) <= MAX_TEXT and all(
                    type(key) is str and _is_option(v) for key, v in o.items())
                for o in options):
            raise ProtocolError("fields", f"steptask: bad group options {_short(options)}")
        nodes = _nodes(f.get("nodes"), k, schema, allow_empty=True)
        cover = _nodes(f.get("cover"), k, schema, allow_empty=False)
        if not set(nodes) <= set(cover):
            raise ProtocolError("node", "steptask: nodes outside the step's cover")
        return cls(step=env.step, worker=env.worker, version=_int(f, "version", k),
                   epoch=_int(f, "epoch", k), batch=_int(f, "batch", k), nodes=nodes,
                   cover=cover, options=options, hold=hold)


def _is_option(value) -> bool:
    """A parameter group option: None, a number, a bool, a short string or list of numbers."""
    if value is None or type(value) in (bool, int, float):
        return True
    if type(value) is str:
        return len(value) <= MAX_TEXT
    return type(value) is list and len(value) <= 16 and \
        all(type(v) in (int, float) for v in value)


def _piece_arrays(env: Envelope, schema: ModelSchema, index: int, prefix: str,
                  present: list) -> list:
    """The arrays ``{prefix}{j}`` of range ``index``'s pieces ``present``, checked."""
    pieces = schema.ranges.ranges[index]
    expect_arrays(env, {f"{prefix}{j}": piece_spec(schema, pieces[j]) for j in present})
    return [env.arrays.get(f"{prefix}{j}") for j in range(len(pieces))]


@dataclass
class RangeGrads:
    """One tree node's gradient sums over range ``range``'s pieces (None where no gradient
    reached a piece), and its sample count."""

    TYPE: ClassVar[str] = RANGEGRADS
    step: int
    worker: int
    version: int
    node: tuple
    range: int
    count: int
    grads: list

    def envelope(self, job: str) -> Envelope:
        present = [j for j, g in enumerate(self.grads) if g is not None]
        return Envelope(RANGEGRADS, job, self.step, self.worker, {
            "version": self.version, "node": list(self.node), "range": self.range,
            "count": self.count, "present": present},
            {f"g{j}": self.grads[j] for j in present})

    @classmethod
    def check(cls, env: Envelope, schema: ModelSchema) -> RangeGrads:
        f, k = env.fields, "rangegrads"
        _only(f, k, ("version", "node", "range", "count", "present"))
        index = _range_index(f, k, schema)
        size = len(schema.ranges.ranges[index])
        present = _int_list(f.get("present"), k, "present", 0, max(size - 1, 0), size)
        if present != sorted(set(present)):
            raise ProtocolError("names", f"rangegrads: bad piece list {_short(present)}")
        count = _int(f, "count", k)
        if count == 0 and present:
            raise ProtocolError("names", "rangegrads: an empty node carries gradients")
        # non-finite values pass, as a diverged run's do through GRADS: the coordinator
        # checks every node's loss sum, and the bits must be those of the star's reduction
        grads = _piece_arrays(env, schema, index, "g", present)
        return cls(step=env.step, worker=env.worker, version=_int(f, "version", k),
                   node=_node(f.get("node"), k, schema.micro_shards), range=index,
                   count=count, grads=grads)


@dataclass
class _RangeStep:
    """What a message about one range in one step says first: step, sender, map version,
    range."""

    step: int
    worker: int
    version: int
    range: int

    def _envelope(self, job: str, arrays: dict) -> Envelope:
        return Envelope(self.TYPE, job, self.step, self.worker,
                        {"version": self.version, "range": self.range}, arrays)

    @classmethod
    def _head(cls, env: Envelope, schema: ModelSchema) -> dict:
        f = env.fields
        _only(f, cls.TYPE, ("version", "range"))
        return {"step": env.step, "worker": env.worker,
                "version": _int(f, "version", cls.TYPE),
                "range": _range_index(f, cls.TYPE, schema)}


@dataclass
class RangeParams(_RangeStep):
    """Range ``range``'s parameters for step ``step`` (after the step before it)."""

    TYPE: ClassVar[str] = RANGEPARAMS
    params: list = field(default_factory=list)

    def envelope(self, job: str) -> Envelope:
        return self._envelope(job, {f"p{j}": p for j, p in enumerate(self.params)})

    @classmethod
    def check(cls, env: Envelope, schema: ModelSchema) -> RangeParams:
        head = cls._head(env, schema)
        pieces = range(len(schema.ranges.ranges[head["range"]]))
        return cls(**head, params=_piece_arrays(env, schema, head["range"], "p", list(pieces)))


@dataclass
class RangeDone(_RangeStep):
    """The reducer stepped range ``range`` for step ``step`` and sent its new parameters;
    ``nonfinite`` names the nodes whose slices held NaN or infinity (the coordinator decides
    between a faulty worker and a diverged run, as it does for GRADS)."""

    TYPE: ClassVar[str] = RANGEDONE
    nonfinite: list = field(default_factory=list)

    def envelope(self, job: str) -> Envelope:
        env = self._envelope(job, {})
        env.fields["nonfinite"] = [list(node) for node in self.nonfinite]
        return env

    @classmethod
    def check(cls, env: Envelope, schema: ModelSchema) -> RangeDone:
        _no_arrays(env)
        fields = dict(env.fields)
        nodes = _nodes(fields.pop("nonfinite", None), cls.TYPE, schema, allow_empty=True)
        if len(set(nodes)) != len(nodes):
            raise ProtocolError("node", f"{cls.TYPE}: a node named twice in nonfinite")
        head = cls._head(Envelope(env.type, env.job, env.step, env.worker, fields), schema)
        return cls(**head, nonfinite=nodes)


@dataclass
class RangeNorm(_RangeStep):
    """With ``clip_grad_norm``: range ``range``'s part of step ``step``'s gradient norm, the
    sum of its mean gradient's squares (``partial``; None when no gradient reached the range),
    sent before the reducer steps it. The coordinator adds every range's part in range order."""

    TYPE: ClassVar[str] = RANGENORM
    partial: float | None = None

    def envelope(self, job: str) -> Envelope:
        env = self._envelope(job, {})
        env.fields["partial"] = None if self.partial is None else float(self.partial)
        return env

    @classmethod
    def check(cls, env: Envelope, schema: ModelSchema) -> RangeNorm:
        _no_arrays(env)
        fields = dict(env.fields)
        partial = fields.pop("partial", None)
        if partial is not None:  # NaN and infinity mean something: a diverging step
            partial = _float({"partial": partial}, "partial", cls.TYPE, finite=False)
            if partial < 0:
                raise ProtocolError("fields", f"{cls.TYPE}: a sum of squares cannot be "
                                    f"negative, got {_short(partial)}")
        head = cls._head(Envelope(env.type, env.job, env.step, env.worker, fields), schema)
        return cls(**head, partial=partial)


@dataclass
class ClipScale:
    """Scale every owned range's gradient of step ``step`` (map ``version``) by ``coef``
    (``clip_grad_norm``'s factor, in [0, 1], NaN when the norm is), then step the ranges."""

    TYPE: ClassVar[str] = CLIPSCALE
    step: int
    version: int
    coef: float

    def envelope(self, job: str) -> Envelope:
        return Envelope(CLIPSCALE, job, self.step, -1, {"version": self.version,
                                                        "coef": float(self.coef)})

    @classmethod
    def check(cls, env: Envelope, schema=None) -> ClipScale:
        f, k = env.fields, CLIPSCALE
        _only(f, k, ("version", "coef"))
        _no_arrays(env)
        coef = _float(f, "coef", k, finite=False)
        if not (0.0 <= coef <= 1.0 or math.isnan(coef)):
            raise ProtocolError("fields", f"{k}: field 'coef' must be in [0, 1] or NaN, got "
                                f"{_short(coef)}")
        return cls(step=env.step, version=_int(f, "version", k), coef=coef)


MESSAGE_TYPES.update({cls.TYPE: cls for cls in (RangeMap, MapAck, RangeState,
                                                Gather, StepTask, RangeGrads, RangeParams,
                                                RangeDone, RangeNorm, ClipScale)})
NEEDS_SCHEMA = NEEDS_SCHEMA | frozenset({RANGESTATE, RANGEGRADS, RANGEPARAMS, RANGEDONE,
                                         RANGENORM})
