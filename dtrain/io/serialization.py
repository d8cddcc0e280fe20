"""``save``/``load`` as PyTorch users type them, plus ``save_model``/``load_model``, without pickle.

``save(obj, f)`` stores nested state (state_dicts, optimizer state, dicts/lists/tuples of
arrays, Tensors and numbers); given a Module it stores the whole model (see ``models``).
``load(f)`` returns plain data; a whole-model file is refused unless the caller passes
``weights_only=False``, as ``torch.load`` has done by default since torch 2.6, because
rebuilding a model runs the ``__init__`` of the classes the file names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO

import msgpack

from . import codec, container, models
from .arraytable import TableError
from .location import array_mapper

__all__ = ["load", "load_model", "save", "save_model"]


def _is_module(obj) -> bool:
    from ..nn.module import Module

    return isinstance(obj, Module)


def _write(obj, f, caller: str) -> None:
    try:
        tree, arrays = codec.encode(obj)
    except codec.Unsupported as e:
        raise TypeError(f"{caller}: cannot save {e.where()}: {e.reason}") from None
    except (RecursionError, ValueError) as e:  # nesting too deep, strings that are not UTF-8
        raise TypeError(f"{caller}: cannot save obj: {type(e).__name__}: {e}") from None
    container.write(container.build(tree, arrays), f, caller)


def save(obj, f: str | os.PathLike | BinaryIO) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of arrays, Tensors, numbers, ... or a whole
    ``nn.Module``) to ``f``.

    ``f`` is a path (written atomically: the old file survives any failure) or a writable
    binary file object (atomicity is then the caller's). Unsupported values raise TypeError
    naming where they are, before anything is written.
    """
    if _is_module(obj):
        save_model(obj, f)
    else:
        _write(obj, f, "dtrain.save")


def save_model(model, f: str | os.PathLike | BinaryIO) -> None:
    """Save a whole model, architecture and weights (what ``save`` does with a Module).

    The architecture is the class's import path plus the recorded ``__init__`` arguments, so the
    model must be rebuildable by calling its class again: arguments such as lambdas raise
    TypeError here, naming the argument.
    """
    _write(models.model_record(model), f, "dtrain.save")


def _read(f, map_location, caller: str) -> tuple[str, object]:
    """(name of the file, decoded object) with ``map_location`` applied to the stored arrays."""
    mapper = array_mapper(map_location)
    where, tree, arrays = container.read(f, caller)
    if mapper is not None:
        arrays = mapper(arrays)
    try:
        return where, codec.decode(tree, arrays)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        detail = container.describe(e, (codec.Malformed, TableError))
        raise container.malformed(where, detail) from None


def _whole_model_refused(where: str) -> container.CheckpointError:
    return container.CheckpointError(
        f"{where}: this file holds a whole model (saved with dtrain.save(model, ...)); "
        "rebuilding it runs the __init__ of the Module classes it names, so dtrain.load "
        "refuses it with weights_only=True (the default, as in torch.load). If you trust the "
        "file, load it with dtrain.load(f, weights_only=False); otherwise save and load "
        "model.state_dict() instead.")


def load(f: str | os.PathLike | BinaryIO, map_location=None, *, weights_only: bool | None = None,
         allowed_modules: Iterable[str] | None = None):
    """Read an object written by ``save`` from a path or a readable binary file object.

    Arrays come back as owned, writable copies; Tensors as leaf Tensors (Parameters as
    Parameters) with ``requires_grad`` kept; tuples as tuples; dict key types and order kept.
    A whole model needs ``weights_only=False`` (the default ``None`` means True, as in torch);
    its classes must come from dtrain, from modules already imported, or from the modules or
    packages named in ``allowed_modules``. ``map_location`` takes torch's forms for the CPU
    (see ``dtrain.io.location``). A truncated, corrupted, foreign or too-new file raises
    ``CheckpointError``.
    """
    if weights_only not in (None, True, False):
        raise TypeError(f"dtrain.load: weights_only must be True, False or None, "
                        f"got {weights_only!r}")
    if allowed_modules is not None and weights_only is not False:
        raise ValueError("dtrain.load: allowed_modules applies to whole models, which load with "
                         "weights_only=False")
    where, obj = _read(f, map_location, "dtrain.load")
    if not models.is_model_record(obj):
        return obj
    if weights_only is not False:
        raise _whole_model_refused(where)
    return models.build_model(obj, where, allowed_modules)


def load_model(f: str | os.PathLike | BinaryIO, map_location=None, *,
               allowed_modules: Iterable[str] | None = None):
    """Rebuild a model written by ``save(model, f)`` or ``save_model``: ``load(f,
    weights_only=False, ...)`` that refuses files holding anything but a model."""
    where, obj = _read(f, map_location, "dtrain.load_model")
    return models.build_model(obj, where, allowed_modules)
