"""``save``/``load``: any supported object to a checkpoint file and back, without pickle."""

from __future__ import annotations

import os
from typing import BinaryIO

import msgpack

from . import codec, container
from .arraytable import TableError

__all__ = ["load", "save"]


def save(obj, f: str | os.PathLike | BinaryIO) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of arrays, Tensors, numbers, ...) to ``f``.

    ``f`` is a path (written atomically: the old file survives any failure) or a writable
    binary file object (atomicity is then the caller's). Unsupported values raise TypeError
    naming where they are, before anything is written.
    """
    try:
        tree, arrays = codec.encode(obj)
    except codec.Unsupported as e:
        raise TypeError(f"dtrain.save: cannot save {e.where()}: {e.reason}") from None
    except (RecursionError, ValueError) as e:  # nesting too deep, strings that are not UTF-8
        raise TypeError(f"dtrain.save: cannot save obj: {type(e).__name__}: {e}") from None
    container.write(container.build(tree, arrays), f)


def load(f: str | os.PathLike | BinaryIO):
    """Read an object written by ``save`` from a path or a readable binary file object.

    Arrays come back as owned, writable copies; Tensors as leaf Tensors (Parameters as
    Parameters) with ``requires_grad`` kept; tuples as tuples; dict key types and order kept.
    A truncated, corrupted, foreign or too-new file raises ``CheckpointError``.
    """
    where, tree, arrays = container.read(f)
    try:
        return codec.decode(tree, arrays)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        detail = container.describe(e, (codec.Malformed, TableError))
        raise container.malformed(where, detail) from None
