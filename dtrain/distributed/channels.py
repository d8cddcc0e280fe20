"""How a worker's arrays travel: inside the messages (network) or through shared memory.

The channel is chosen once per worker, when it joins: the coordinator offers shared memory to a
worker on its own machine (unless the job's ``shared_memory`` setting is off), the worker opens
the files or declines, and its READY names the channel both sides then use for every round. The
coordinator and worker loops call the channel; no message field switches paths mid-run.

Shared memory keeps the messages and their checks; only the arrays move:

- the coordinator writes a round's parameters once, after every node of the previous round has
  come back, and a worker answers only after reading them, so an accepted answer saw a whole
  round (a slow, already evicted worker may read a torn board, but its answers are stale);
- a worker writes a gradient slot before sending the GRADS that names it and reuses the slot
  only in a later round, after the coordinator has reduced the previous one. A node beyond the
  worker's slots for a round travels in its message.
"""

from __future__ import annotations

import numpy as np

from .protocol import Grads, ProtocolError, Task
from .shared_memory import SharedArrays

NETWORK = "network"
SHARED_MEMORY = "shared-memory"


def gradient_slots(micro_shards: int) -> int:
    """Gradient slots a worker gets: enough for the tree nodes of a few shard ranges."""
    return 2 * max(micro_shards.bit_length(), 1) + 2


# ------------------------------------------------------------------ the coordinator's side
class ParameterBoard:
    """The coordinator's one parameter file, read by every same-machine worker."""

    def __init__(self, specs: list):
        self.arrays = SharedArrays(specs, 1, kind="params")
        self.written = None  # the round whose parameters the board holds

    def publish(self, round_id, params: list) -> None:
        """Write the round's parameters (once per round: they do not change within it)."""
        if self.written != round_id:
            self.arrays.write(0, params)
            self.written = round_id

    def describe(self) -> dict:
        return self.arrays.describe()

    def close(self) -> None:
        self.arrays.close()


class NetworkToWorker:
    """Parameters go in every TASK, gradients come in every GRADS."""

    name = NETWORK

    def task_params(self, round_id, params: dict) -> dict:
        """The arrays this worker's TASK carries."""
        return params

    def grads(self, msg: Grads) -> dict:
        """The node's gradients by parameter index (read-only views, no copy)."""
        if msg.slot is not None:
            raise ProtocolError("slot", f"node {msg.node} names a shared-memory slot; this "
                                "worker's arrays travel over the network")
        return msg.grads

    def close(self) -> None:
        pass


class SharedMemoryToWorker:
    """Parameters through the shared board, gradients through this worker's own slots."""

    name = SHARED_MEMORY

    def __init__(self, board: ParameterBoard, slots: SharedArrays):
        self.board = board
        self.slots = slots

    def task_params(self, round_id, params: dict) -> dict:
        self.board.publish(round_id, list(params.values()))
        return {}

    def grads(self, msg: Grads) -> dict:
        if msg.slot is None:  # more nodes than slots this round: it came in the message
            return msg.grads
        if not 0 <= msg.slot < self.slots.slots:
            raise ProtocolError("slot", f"gradient slot {msg.slot} of node {msg.node} does not "
                                f"exist (the worker has {self.slots.slots})")
        views = self.slots.views[msg.slot]
        return {i: views[i] for i in msg.indices}

    def close(self) -> None:
        self.slots.close()  # removes the file; views held by the current round stay valid


def offer_shared_memory(board: ParameterBoard, specs: list, micro_shards: int):
    """(gradient slots for one worker, the WELCOME offer describing both files)."""
    slots = SharedArrays(specs, gradient_slots(micro_shards), kind="grads")
    return slots, {"params": board.describe(), "grads": slots.describe()}


# ------------------------------------------------------------------ the worker's side
class NetworkFromCoordinator:
    """Parameters arrive in the TASK, gradients leave in the GRADS."""

    name = NETWORK

    def read_params(self, task: Task, names: list, targets: list) -> None:
        """Copy the round's parameters into the replica's own arrays."""
        if not task.params:
            raise ProtocolError("names", "the TASK carries no parameters")
        for name, target in zip(names, targets):
            # copied, not used in place: BLAS results can depend on the alignment of its
            # operands, and the frames' is not NumPy's (measured: 1-ulp differences)
            np.copyto(target, task.params[name])

    def put_grads(self, round_key, grads: dict) -> tuple[dict, list, int | None]:
        """(gradients for the message, their indices, slot): here all in the message."""
        return grads, sorted(grads), None

    def close(self) -> None:
        pass


class SharedMemoryFromCoordinator:
    """Parameters from the coordinator's board, gradients into this worker's slots."""

    name = SHARED_MEMORY

    def __init__(self, specs: list, offer: dict):
        self.board = SharedArrays(specs, kind="params", description=offer.get("params"))
        try:
            self.slots = SharedArrays(specs, kind="grads", description=offer.get("grads"),
                                      writable=True)
        except BaseException:
            self.board.close()
            raise
        self.round_key = None
        self.next_slot = 0

    def read_params(self, task: Task, names: list, targets: list) -> None:
        if task.params:
            raise ProtocolError("names", "the TASK carries parameters; this worker reads them "
                                "from shared memory")
        self.board.read_into(0, targets)

    def put_grads(self, round_key, grads: dict) -> tuple[dict, list, int | None]:
        if self.round_key != round_key:
            self.round_key, self.next_slot = round_key, 0
        if self.next_slot >= self.slots.slots or not grads:
            return grads, sorted(grads), None
        slot = self.next_slot
        self.next_slot += 1
        views = self.slots.views[slot]
        for i, g in grads.items():
            np.copyto(views[i], g)
        return {}, sorted(grads), slot

    def close(self) -> None:
        self.board.close()
        self.slots.close()
