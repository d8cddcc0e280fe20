"""The job's parameter ranges: the trainable parameters cut, in a fixed order, into
``param_ranges`` pieces of the reduction and of the optimizer state.

The cut rule: lay the trainable parameters of ``model.parameters()`` end to end, in that order,
as one flat vector (each raveled in C order) and cut it into ``param_ranges`` element ranges
of (nearly) equal bytes: cut ``k`` goes to the element holding byte ``k * total // count``.
Element ranges, not whole parameters, because most optimizers are elementwise (SGD, Adam,
RMSprop, ...: any element slice can be stepped alone) and a model's bytes are often in one or
two tensors, which whole-parameter ranges could not balance. A parameter whose optimizer
updates whole tensors (``updates_whole_tensors``: Adafactor factors a matrix by rows and
columns and scales by its RMS) is never split: a cut inside it moves to its nearer end (its
start on a tie).
A range is then a list of *pieces*, each a contiguous element slice of one parameter, in flat
order. The cut depends only on the model's parameters, their optimizers and ``param_ranges``,
never on how many workers or reducers run: it is what fixes the bits of global quantities
(``range_sums``) and what a reducer owns (``range_optimizer``). A model too small for its
ranges (fewer elements than ``param_ranges``, or too few whole tensors) gets empty ranges:
they hold nothing and add nothing, so the default setting serves a two-parameter regression
as it serves a large network.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """Elements ``start:stop`` of the flat (raveled) view of parameter ``param``, whose
    position in ``model.parameters()`` it is."""

    param: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ParamRanges:
    """The cut: per range, its pieces in flat order; ``sizes`` are the element counts of all
    of ``model.parameters()`` (untrainable ones too, so positions line up)."""

    ranges: tuple[tuple[Piece, ...], ...]
    sizes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ranges)

    def pieces_of(self, param: int) -> list[tuple[int, Piece]]:
        """The (range index, piece) pairs that parameter ``param`` is cut into, in flat order."""
        return [(r, piece) for r, pieces in enumerate(self.ranges) for piece in pieces
                if piece.param == param]

    def is_whole(self, piece: Piece) -> bool:
        """True when ``piece`` is all of its parameter."""
        return piece.start == 0 and piece.stop == self.sizes[piece.param]


@dataclass(frozen=True)
class TensorInfo:
    """What the cut needs to know of one trainable parameter."""

    param: int  # position in model.parameters()
    size: int  # elements
    itemsize: int  # bytes per element
    whole: bool  # its optimizer updates whole tensors: never split it


def cut(tensors: list[TensorInfo], count: int, sizes: tuple[int, ...]) -> ParamRanges:
    """Cut ``tensors`` (in this order) into ``count`` element ranges balanced by bytes; a
    range that no element falls in is empty."""
    if not tensors:
        return ParamRanges(((),) * count, sizes)
    starts, start = [], 0  # byte offsets of the tensors in the flat vector
    for t in tensors:
        starts.append(start)
        start += t.size * t.itemsize
    total = start
    bounds = [(0, 0)]  # (tensor index, element offset) where each range starts
    for k in range(1, count):
        byte = k * total // count
        j = bisect.bisect_right(starts, byte) - 1  # the tensor holding that byte
        inside = (byte - starts[j]) // tensors[j].itemsize
        if tensors[j].whole and inside:  # to its nearer end; a tie to its start
            bounds.append((j + 1, 0) if 2 * inside > tensors[j].size else (j, 0))
        else:
            bounds.append((j, inside))
    bounds.append((len(tensors), 0))
    ranges = []
    for (j0, off0), (j1, off1) in zip(bounds, bounds[1:]):
        pieces = []
        for j in range(j0, min(j1 + 1, len(tensors))):
            first = off0 if j == j0 else 0
            stop = off1 if j == j1 else tensors[j].size
            if stop > first:
                pieces.append(Piece(tensors[j].param, first, stop))
        ranges.append(tuple(pieces))
    return ParamRanges(tuple(ranges), sizes)


def model_ranges(model, optimizers, count: int) -> ParamRanges:
    """The job's cut of ``model``'s trainable parameters into ``count`` ranges.

    ``optimizers`` are the job's optimizers (one per phase): their parameters decide which
    tensors stay whole. Trainable: ``requires_grad``.
    """
    params = list(model.parameters())
    whole = {id(p) for opt in optimizers if getattr(opt, "updates_whole_tensors", False)
             for group in opt.param_groups for p in group["params"]}
    tensors = [TensorInfo(i, p._data.size, p._data.itemsize, id(p) in whole)
               for i, p in enumerate(params) if p.requires_grad]
    return cut(tensors, count, tuple(p._data.size for p in params))
