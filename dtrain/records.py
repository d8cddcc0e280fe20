"""JSON for metric records (metrics.jsonl, the /status page) that strict readers accept.

JSON has no NaN or infinity; Python's ``json`` writes them as bare ``NaN``/``Infinity`` tokens,
which JavaScript, jq and Go reject, and a diverged run's loss is NaN. The convention here: a
non-finite float is written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (the
names JavaScript's ``Number()`` and Python's ``float()`` both read back), and ``loads`` turns
those strings back into floats.
"""

from __future__ import annotations

import json
import math

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, str):
        return NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encodable(obj):
    """``obj`` with every non-finite float replaced by its string name (see the module doc)."""
    return _encode(obj)


def dumps(obj) -> str:
    """Strict JSON text of ``obj``: non-finite floats become "NaN", "Infinity", "-Infinity"."""
    return json.dumps(_encode(obj), allow_nan=False)


def loads(text: str):
    """Parse ``dumps`` output (or older files with bare NaN tokens), non-finite names as floats."""
    return _decode(json.loads(text))
