"""Turn a failure into what the user needs: their file and line, once, and the error itself.

An error in the job's code used to print as one line without a location (in-process) or as
the same 69-line traceback three times (with workers). ``describe`` finds the innermost frame
in the user's code, in a live exception or in a worker's traceback text, and says where.
"""

from __future__ import annotations

import os
import re
import sysconfig
import traceback

import dtrain

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
_OURS = tuple(os.path.dirname(os.path.abspath(p)) + os.sep
              for p in (dtrain.__file__,))  # dtrain/, launcher and workers install inside it
_LIBRARY = tuple(os.path.abspath(p) + os.sep for p in {
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
    sysconfig.get_paths()["platlib"]})


def _is_user_file(path: str, script: str | None) -> bool:
    if path.startswith("<"):  # <frozen importlib._bootstrap>, <string>: nobody's file
        return False
    path = os.path.abspath(path)
    if script and path == os.path.abspath(script):
        return True
    root = os.path.dirname(os.path.dirname(os.path.abspath(dtrain.__file__))) + os.sep
    in_checkout = any(path.startswith(root + d + os.sep) for d in ("launcher", "workers"))
    return not (path.startswith(_OURS) or path.startswith(_LIBRARY) or in_checkout
                or path.startswith("<"))


def _frames_from_text(text: str) -> list[tuple[str, int, str, str]]:
    """(file, line, function, code) of every frame in a formatted traceback."""
    lines = text.splitlines()
    frames = []
    for i, line in enumerate(lines):
        m = _FRAME.match(line)
        if m:
            code = lines[i + 1].strip() if i + 1 < len(lines) and not _FRAME.match(
                lines[i + 1]) else ""
            frames.append((m["file"], int(m["line"]), m["func"], code))
    return frames


def _where(frames, script: str | None) -> str:
    mine = [f for f in frames if _is_user_file(f[0], script)]
    if not mine:
        return ""
    file, line, func, code = mine[-1]
    return f"{file}:{line} in {func}: {code}" if code else f"{file}:{line} in {func}"


def describe(exc: BaseException, script: str | None = None) -> str:
    """``exc`` as one or two lines: the location in the user's code (if any) and the error."""
    text = str(exc)
    if "Traceback (most recent call last)" in text:  # a worker's traceback, sent as text
        head, _, tb = text.partition("Traceback (most recent call last)")
        last = tb.strip().splitlines()[-1] if tb.strip() else ""
        where = _where(_frames_from_text(tb), script)
        head = head.strip().rstrip(":")
        return f"{head}: {where}\n  {last}" if where else f"{head}: {last}"
    frames = [(f.filename, f.lineno, f.name, f.line or "")
              for f in traceback.extract_tb(exc.__traceback__)]
    where = _where(frames, script)
    error = f"{type(exc).__name__}: {exc}" if where or not isinstance(
        exc, (ValueError, RuntimeError, OSError)) else text
    return f"{where}\n  {error}" if where else error
