"""Tensor text in PyTorch's layout, so printed values read the same in dtrain and torch.

The rules are torch's default print options: 4 digits, scientific notation when magnitudes span
more than 1000x or leave [1e-4, 1e8], integer-valued floats as ``1.``, rows wrapped at 80
columns, and tensors of more than 1000 elements summarized by 3 items at each edge.
"""

from __future__ import annotations

import math

import numpy as np

PRECISION = 4
THRESHOLD = 1000
EDGEITEMS = 3
LINEWIDTH = 80


class NumberFormat:
    """One format and width for every element shown, chosen from their values."""

    def __init__(self, values: np.ndarray):
        self.floating = values.dtype.kind == "f"
        self.int_mode = True
        self.sci_mode = False
        self.width = 1
        if not self.floating:
            self.width = max((len(str(v)) for v in values.reshape(-1).tolist()), default=1)
            return
        shown = values.reshape(-1).astype(np.float64)
        finite = shown[np.isfinite(shown) & (shown != 0)]
        if finite.size == 0:
            return
        magnitude = np.abs(finite)
        smallest, largest = magnitude.min(), magnitude.max()
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        self.sci_mode = bool(largest / smallest > 1000.0 or largest > 1e8 or smallest < 1e-4)
        self.width = max(len(self._text(v)) for v in finite.tolist())

    def _text(self, value) -> str:
        if not self.floating:
            return str(value)
        if self.sci_mode:
            return f"{value:.{PRECISION}e}"
        if self.int_mode:
            return f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        return f"{value:.{PRECISION}f}"

    def __call__(self, value) -> str:
        """``value`` formatted and right-aligned to the common width."""
        return self._text(value).rjust(self.width)


def _shown(data: np.ndarray) -> np.ndarray:
    """The elements a summarized print shows: ``EDGEITEMS`` at each end of every dimension."""
    if data.ndim == 0:
        return data
    if data.shape[0] > 2 * EDGEITEMS:
        data = np.concatenate([data[:EDGEITEMS], data[-EDGEITEMS:]])
    if data.ndim == 1:
        return data
    return np.stack([_shown(row) for row in data])


def _vector(data: np.ndarray, indent: int, summarize: bool, fmt: NumberFormat) -> str:
    per_line = max(1, (LINEWIDTH - indent) // (fmt.width + 2))
    values = data.tolist()
    if summarize and len(values) > 2 * EDGEITEMS:
        items = [fmt(v) for v in values[:EDGEITEMS]] + [" ..."]
        items += [fmt(v) for v in values[-EDGEITEMS:]]
    else:
        items = [fmt(v) for v in values]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _block(data: np.ndarray, indent: int, summarize: bool, fmt: NumberFormat) -> str:
    if data.ndim == 0:
        return fmt(data.item())
    if data.ndim == 1:
        return _vector(data, indent, summarize, fmt)
    rows = range(data.shape[0])
    if summarize and data.shape[0] > 2 * EDGEITEMS:
        parts = [_block(data[i], indent + 1, summarize, fmt) for i in rows[:EDGEITEMS]] + ["..."]
        parts += [_block(data[i], indent + 1, summarize, fmt) for i in rows[-EDGEITEMS:]]
    else:
        parts = [_block(data[i], indent + 1, summarize, fmt) for i in rows]
    return "[" + ("," + "\n" * (data.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def _with_suffixes(text: str, suffixes: list[str], indent: int) -> str:
    # the length estimate counts two more than the last line holds, exactly as torch does
    last_line = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > LINEWIDTH:
            text += ",\n" + " " * indent + suffix
            last_line = indent + len(suffix)
        else:
            text += ", " + suffix
            last_line += len(suffix) + 2
    return text + ")"


def tensor_repr(data: np.ndarray, dtype_suffix: str | None, grad_suffix: str | None) -> str:
    """``tensor(...)`` text of ``data`` followed by the given suffixes, as torch prints it."""
    prefix = "tensor("
    indent = len(prefix)
    suffixes = []
    if data.size == 0:
        body = "[]"
        if data.ndim != 1:
            suffixes.append(f"size={tuple(data.shape)}")
    else:
        summarize = data.size > THRESHOLD
        fmt = NumberFormat(_shown(data) if summarize else data)
        body = _block(data, indent, summarize, fmt)
    if dtype_suffix:
        suffixes.append(dtype_suffix)
    if grad_suffix:
        suffixes.append(grad_suffix)
    return _with_suffixes(prefix + body, suffixes, indent)
