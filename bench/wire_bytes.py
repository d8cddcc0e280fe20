"""Bytes a dtrain message puts on a link: the protocol's own frames plus ZeroMQ's and TCP/IP's.

The frames come from ``protocol.pack``, the encoder the coordinator and workers use, so the
msgpack header is exactly today's. ZMTP 3 puts a flags byte and a 1- or 8-byte length before
every frame; CURVE (RFC 26) sends every frame as a MESSAGE command instead: the command name
(8 bytes), a short nonce (8), a 16-byte MAC and the frame's flags byte (1) around the frame's
bytes. Sealed peer messages (``sealing.py``: the sharded reduction's default under CURVE) travel
without a ZeroMQ mechanism as a seal header frame (magic, count, message id, a 12-byte nonce per
frame) and each frame with a 16-byte tag. TCP/IP adds one header per packet (66 bytes: Ethernet, IPv4, TCP with timestamps), and
the receiver sends one bare acknowledgement per two packets. What a packet is depends on who
counts: the wire carries MSS-sized segments; a veth interface's counters see the kernel's
64 KiB GSO packets, one header each (``bench_crosshost.py`` reads those counters).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from dist_mlp_job import SIZES, mlp  # noqa: E402

from dtrain.distributed import protocol  # noqa: E402
from dtrain.distributed.job import new_job_id  # noqa: E402

ZMTP_SHORT_FRAME = 2  # flags + 1-byte length, frames under 256 bytes
ZMTP_LONG_FRAME = 9  # flags + 8-byte length
CURVE_PER_FRAME = 8 + 8 + 16 + 1  # "\x07MESSAGE", nonce, MAC, the frame's flags
PACKET_HEADER = 66  # Ethernet 14 + IPv4 20 + TCP 20 + timestamps 12
MSS = 1448  # TCP payload per packet at MTU 1500 with timestamps
GSO_PACKET = 64 * 1024 - PACKET_HEADER  # payload of one GSO packet, as a veth counts it
PACKETS_PER_ACK = 2  # delayed acknowledgements


@dataclass(frozen=True)
class Counting:
    """How packets are counted: ``segment`` payload bytes per counted packet of ``header`` bytes."""

    segment: int = MSS
    header: int = PACKET_HEADER


ON_THE_WIRE = Counting()
VETH_COUNTERS = Counting(segment=GSO_PACKET)


def sealed_frames(frame_sizes: tuple) -> tuple:
    """The frames of a message sealed by ``sealing.Sealer``: its header, then each frame and tag."""
    from dtrain.distributed import sealing

    return (sealing.header_bytes(len(frame_sizes)),
            *(n + sealing.TAG_BYTES for n in frame_sizes))


def zmq_bytes(frame_sizes: tuple, curve: bool) -> int:
    """Bytes ZeroMQ writes to TCP for one message with frames of these sizes (a ROUTER's
    routing id stays local)."""
    total = 0
    for n in frame_sizes:
        size = n + CURVE_PER_FRAME if curve else n
        total += size + (ZMTP_SHORT_FRAME if size < 256 else ZMTP_LONG_FRAME)
    return total


def with_packets(stream_bytes: int, counting: Counting = ON_THE_WIRE) -> int:
    """Bytes counted for a TCP stream of ``stream_bytes``: the payload plus a header per packet."""
    return stream_bytes + -(-stream_bytes // counting.segment) * counting.header


def acks(received_bytes: int, counting: Counting = ON_THE_WIRE) -> int:
    """Bytes of the acknowledgements a host sends back for ``received_bytes`` of stream."""
    packets = -(-received_bytes // counting.segment)
    return -(-packets // PACKETS_PER_ACK) * counting.header


@functools.lru_cache(maxsize=None)
def parameter_shapes(model: str) -> tuple:
    """(name, shape) of every parameter of the bench MLP ``model`` (``dist_mlp_job.SIZES``)."""
    return tuple((name, tuple(t.shape)) for name, t in mlp(SIZES[model]).state_dict().items())


def parameter_count(model: str) -> int:
    return sum(int(np.prod(shape)) for _, shape in parameter_shapes(model))


def _unwritten(shapes) -> dict:
    """float32 arrays of these shapes; never written, so their pages are never touched."""
    return {name: np.empty(shape, dtype=np.float32) for name, shape in shapes}


@functools.lru_cache(maxsize=None)
def task_frames(model: str) -> tuple:
    """Frame sizes of a TASK carrying all of ``model``'s parameters, as the coordinator sends."""
    task = protocol.Task(step=1000, worker=7, epoch=3, batch=40, phase=0, round=0,
                         nodes=[(0, 8)], params=_unwritten(parameter_shapes(model)))
    return tuple(memoryview(f).nbytes for f in protocol.pack(task, new_job_id()))


@functools.lru_cache(maxsize=None)
def grads_frames(model: str) -> tuple:
    """Frame sizes of the GRADS of one tree node with every parameter's gradient."""
    shapes = parameter_shapes(model)
    grads = _unwritten((i, shape) for i, (_, shape) in enumerate(shapes))
    msg = protocol.Grads(step=1000, worker=7, round=0, phase=0, node=(0, 8), count=32,
                         loss_sum=73.5, compute_s=0.0123, grads=grads)
    return tuple(memoryview(f).nbytes for f in protocol.pack(msg, new_job_id()))


@functools.lru_cache(maxsize=None)
def slice_frames(values: int) -> tuple:
    """Frame sizes of a message with one float32 slice of ``values`` numbers.

    The sharded design's messages (a range's gradient slice, a range's new parameters) do not
    exist yet; they are modelled as today's GRADS envelope holding one array.
    """
    msg = protocol.Grads(step=1000, worker=7, round=0, phase=0, node=(0, 8), count=32,
                         loss_sum=73.5, compute_s=0.0123,
                         grads={0: np.empty(values, dtype=np.float32)})
    return tuple(memoryview(f).nbytes for f in protocol.pack(msg, new_job_id()))


@functools.lru_cache(maxsize=None)
def empty_grads_frames() -> tuple:
    """Frame sizes of the GRADS of a node without samples: a header alone."""
    msg = protocol.Grads(step=1000, worker=7, round=0, phase=0, node=(0, 8), count=0)
    return tuple(memoryview(f).nbytes for f in protocol.pack(msg, new_job_id()))


def layer_sizes(model: str) -> list[int]:
    """Parameters per layer (weight and bias together), first layer first: the buckets."""
    sizes: dict[str, int] = {}
    for name, shape in parameter_shapes(model):
        layer = name.rsplit(".", 1)[0]
        sizes[layer] = sizes.get(layer, 0) + int(np.prod(shape))
    return list(sizes.values())
