"""Thread-local switch for gradient recording: ``no_grad`` and ``enable_grad``.

As in PyTorch, each context saves the previous mode, sets its own and restores the old one on
exit, so nesting works; both also decorate functions.
"""

from __future__ import annotations

import functools
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether operations on this thread record a graph for backward."""
    return getattr(_state, "enabled", True)


def set_grad_enabled(mode: bool) -> None:
    """Turn graph recording on or off for this thread."""
    _state.enabled = bool(mode)


class _GradMode:
    """A context manager and decorator that sets grad mode to ``self.mode`` while active."""

    mode = True

    def __enter__(self):
        self._previous = is_grad_enabled()
        set_grad_enabled(self.mode)
        return self

    def __exit__(self, *exc):
        set_grad_enabled(self._previous)
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return func(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Disable gradient recording: results have ``requires_grad == False``."""

    mode = False


class enable_grad(_GradMode):
    """Enable gradient recording, e.g. inside a ``no_grad`` block."""

    mode = True
