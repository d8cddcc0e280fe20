"""A message link between the coordinator and one worker on its machine: a Unix SOCK_SEQPACKET
connection that carries each protocol message as one packet.

Why: a worker whose arrays travel through shared memory exchanges only small messages with the
coordinator (a TASK down, a GRADS per tree node up), but over ZeroMQ's TCP each one passes
four threads: the sender, its ZeroMQ I/O thread, the receiver's I/O thread, the receiver. With
every core busy computing, each hand-over waits for the scheduler. Measured on 2 cores, a
coordinator and 2 workers each computing 0.65 ms a round: 1.2-1.7 ms a round over ZeroMQ, 1.0 ms
over pipes read and written by the main threads themselves. The link is that direct path.

Trust and order:

- The listening socket lives in the worker's private directory (0700, beside its gradient
  slots) and takes one connection: the coordinator accepts it only from the process that said
  HELLO, as the kernel reports the peer (SO_PEERCRED: its pid, and our user).
- Both sides check every message as if it came over the socket; a bad packet is rejected and
  logged like any bad message.
- Sending never blocks: a packet that does not fit the peer's socket buffer is refused
  (``LinkFull``), so a stuck peer cannot stall its sender; a message larger than
  ``MAX_PACKET_BYTES`` is refused up front and the caller sends it over ZeroMQ instead.
- A closed link (its peer exited, however it died) reads as ``LinkClosed`` at once.

A packet is a table of little-endian uint32 (the frame count, then each frame's length)
followed by the frames.
"""

from __future__ import annotations

import os
import socket
import struct

from .protocol import ProtocolError

LINK_NAME = "link.sock"
MAX_PACKET_BYTES = 128 * 1024  # within Linux's default socket buffer (net.core.wmem_default)
MAX_FRAMES = 64
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class LinkClosed(EOFError):
    """The peer closed its end of the link (it exited or dropped the link)."""


class LinkFull(BlockingIOError):
    """The peer is not reading: its socket buffer is full, the message was not sent."""


class LocalLink:
    """One end of a connected link: non-blocking packets of frames."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray(MAX_PACKET_BYTES)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, frames: list) -> bool:
        """Send ``frames`` as one packet: True once sent; False if it is larger than
        ``MAX_PACKET_BYTES`` (nothing sent); LinkFull if the peer's buffer has no room,
        LinkClosed if the peer is gone."""
        views = [memoryview(f).cast("B") for f in frames]
        if not 0 < len(views) <= MAX_FRAMES:
            return False
        table = struct.pack(f"<{len(views) + 1}I", len(views), *(v.nbytes for v in views))
        if len(table) + sum(v.nbytes for v in views) > MAX_PACKET_BYTES:
            return False
        try:
            self.sock.sendmsg([table, *views], [], socket.MSG_DONTWAIT)
        except BlockingIOError:
            raise LinkFull("the link's peer is not reading") from None
        except (BrokenPipeError, ConnectionError) as e:
            raise LinkClosed(str(e)) from None
        return True

    def receive(self) -> list | None:
        """The frames of the next packet (memoryviews of its own copy), or None if none is
        waiting; LinkClosed at the end; ProtocolError for a packet that is not one of ours."""
        try:
            size, _, flags, _ = self.sock.recvmsg_into([self.buffer], 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except ConnectionError as e:
            raise LinkClosed(str(e)) from None
        if size == 0:
            raise LinkClosed("the link's peer closed it")
        if flags & socket.MSG_TRUNC:
            raise ProtocolError("size", f"a packet on the local link exceeds {MAX_PACKET_BYTES} "
                                "bytes")
        return split_packet(memoryview(bytes(memoryview(self.buffer)[:size])))

    def close(self) -> None:
        self.sock.close()


def split_packet(packet: memoryview) -> list:
    """The frames a packet's table describes; ProtocolError when the table does not fit it."""
    if packet.nbytes < 4:
        raise ProtocolError("garbage", f"a {packet.nbytes}-byte packet has no frame table")
    (count,) = struct.unpack_from("<I", packet)
    start = 4 * (count + 1)
    if not 0 < count <= MAX_FRAMES or start > packet.nbytes:
        raise ProtocolError("garbage", f"a packet of {packet.nbytes} bytes announces {count} "
                            f"frames (1 to {MAX_FRAMES})")
    lengths = struct.unpack_from(f"<{count}I", packet, 4)
    if start + sum(lengths) != packet.nbytes:
        raise ProtocolError("garbage", f"a packet's frames add up to {sum(lengths)} bytes, "
                            f"its body has {packet.nbytes - start}")
    frames = []
    for length in lengths:
        frames.append(packet[start:start + length])
        start += length
    return frames


class LinkListener:
    """The coordinator's end before the worker connects: a socket file in ``directory``."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, LINK_NAME)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.sock.bind(self.path)
            self.sock.listen(1)
            self.sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def accept(self, pid: int) -> tuple[LocalLink | None, str]:
        """The link of process ``pid`` (our user), if it has connected; else None and why.
        Connections of any other process are closed."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return None, "the worker did not connect its link"
            except OSError as e:
                return None, f"accepting its link failed: {e}"
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
            peer_pid, uid, _ = _CREDENTIALS.unpack(creds)
            if peer_pid == pid and uid == os.getuid():
                return LocalLink(conn), ""
            conn.close()  # another process (or the worker seen through another pid namespace)

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def connect_link(path: str) -> LocalLink:
    """The worker's end: connect to the coordinator's listener at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return LocalLink(sock)
