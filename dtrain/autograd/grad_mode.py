"""Thread-local switch for gradient recording: ``no_grad``, ``enable_grad``, ``inference_mode``
and ``set_grad_enabled``.

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


def _set(mode: bool) -> None:
    _state.enabled = bool(mode)


class _GradMode:
    """A context manager and decorator that sets grad mode to ``self.mode`` while active."""

    mode = True

    def __enter__(self):
        self._previous = is_grad_enabled()
        _set(self.mode)
        return self

    def __exit__(self, *exc):
        _set(self._previous)
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return func(*args, **kwargs)

        return wrapper

    def _fresh(self) -> _GradMode:
        """A new context like this one, for one call of a decorated function."""
        return self.__class__()


class no_grad(_GradMode):
    """Disable gradient recording: results have ``requires_grad == False``."""

    mode = False


class enable_grad(_GradMode):
    """Enable gradient recording, e.g. inside a ``no_grad`` block."""

    mode = True


class inference_mode(_GradMode):
    """``no_grad`` under torch's inference-mode name; ``inference_mode(False)`` changes nothing.

    A context manager and a decorator, as torch's.
    """

    def __init__(self, mode: bool = True):
        self._disable = bool(mode)

    def __enter__(self):
        self._previous = is_grad_enabled()
        if self._disable:
            _set(False)
        return self

    def _fresh(self) -> inference_mode:
        return inference_mode(self._disable)


class set_grad_enabled(_GradMode):
    """Turn graph recording on or off for this thread, now; used as a context manager
    (``with set_grad_enabled(phase == "train"):``) the previous mode comes back on exit."""

    def __init__(self, mode: bool):
        self._previous = is_grad_enabled()
        self.mode = bool(mode)
        _set(self.mode)

    def __enter__(self):
        return self

    def __call__(self, func):
        _set(self._previous)  # as a decorator it applies inside the function only
        return super().__call__(func)

    def _fresh(self) -> set_grad_enabled:
        return set_grad_enabled(self.mode)

    def __repr__(self):
        return f"dtrain.set_grad_enabled(mode={self.mode})"
