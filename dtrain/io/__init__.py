"""Checkpoints without pickle: ``save``/``load`` for nested state and whole models.

Loading a checkpoint never executes code stored in it: the payload is msgpack, whose only
non-plain values are a fixed set of extension types (arrays, tensors, tuples, big ints, NumPy
scalars and dtypes, complex numbers); anything else is refused. Array bytes are not inside the
msgpack tree but follow it, so saving writes each array's memory straight to the file.

Modules: ``container`` (the checksummed file: header, digest, atomic write, bounded reading),
``arraytable`` (the array-table codec files and the wire share: arrays as table entries plus
raw buffers, packed here as ``[dtype, shape, offset, nbytes]``),
``codec`` (the msgpack object codec and its limits), ``models`` (whole models as plain data),
``location`` (``map_location``) and ``serialization`` (the public functions).
"""

from .container import CheckpointError
from .serialization import load, load_model, save, save_model

__all__ = ["CheckpointError", "load", "load_model", "save", "save_model"]
