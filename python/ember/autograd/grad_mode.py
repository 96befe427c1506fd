"""Grad mode: whether operations record a graph. Thread-local, as in PyTorch."""

from __future__ import annotations

import functools
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


def _set(enabled: bool) -> None:
    _state.enabled = enabled


class _GradModeContext:
    _target: bool

    def __enter__(self):
        self._prev = is_grad_enabled()
        _set(self._target)
        return self

    def __exit__(self, *exc):
        _set(self._prev)
        return False

    def __call__(self, fn):
        """Use as a decorator: ``@ember.no_grad()``."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class _BareDecoratable(_GradModeContext):
    """Also usable as a bare decorator, ``@no_grad`` without parentheses, as in PyTorch."""

    def __new__(cls, orig_func=None):
        if orig_func is not None and callable(orig_func) and cls in (no_grad, enable_grad):
            return cls()(orig_func)
        return super().__new__(cls)


class no_grad(_BareDecoratable):
    """Context manager / decorator: operations inside record no graph."""

    _target = False


class enable_grad(_BareDecoratable):
    """Context manager / decorator: re-enable graph recording inside ``no_grad``."""

    _target = True


class inference_mode(no_grad):
    """Alias of ``no_grad`` (ember has no separate inference tensors)."""

    def __init__(self, mode: bool = True):
        self._target = not mode


class set_grad_enabled(_GradModeContext):
    """``set_grad_enabled(False)``: as a context manager, or called alone to set the mode."""

    def __init__(self, mode: bool):
        self._target = bool(mode)
        self._prev = is_grad_enabled()
        _set(self._target)

    def __enter__(self):
        return self

    def __call__(self, fn):
        _set(self._prev)  # decorator use: undo the eager switch made in __init__
        target = self._target

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(target):
                return fn(*args, **kwargs)

        return wrapper
