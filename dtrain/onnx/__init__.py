"""``dtrain.onnx``: export models built from dtrain.nn layers to ONNX (needs ``dtrain[onnx]``)."""

from .export import export
from .from_checkpoint import export_checkpoint
from .graph import ExportError

__all__ = ["ExportError", "export", "export_checkpoint"]
