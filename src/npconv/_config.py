"""Explicit run-time settings: the workspace limit (and, later, thread count).

No hidden global state beyond these, and each has a setter, a getter and a
context manager. The values live in ``contextvars`` so a ``with`` block in one
thread does not leak into another.
"""
from __future__ import annotations

import contextlib
import contextvars
import numbers

DEFAULT_WORKSPACE_LIMIT = 256 * 2**20  # bytes

_workspace_limit = contextvars.ContextVar("npconv_workspace_limit", default=DEFAULT_WORKSPACE_LIMIT)


def _check_bytes(nbytes) -> int:
    if not isinstance(nbytes, numbers.Integral) or isinstance(nbytes, bool) or nbytes < 1:
        raise ValueError(f"workspace limit must be a positive int number of bytes, got {nbytes!r}")
    return int(nbytes)


def set_workspace_limit(nbytes: int) -> None:
    """Cap the im2col/col2im workspace of one call at ``nbytes`` (default 256 MiB).

    The batch (and, if one sample does not fit, the first output dimension) is
    processed in chunks that fit. Results do not depend on the limit.
    """
    _workspace_limit.set(_check_bytes(nbytes))


def get_workspace_limit() -> int:
    """The current workspace limit in bytes."""
    return _workspace_limit.get()


@contextlib.contextmanager
def workspace_limit(nbytes: int):
    """Context manager: ``with npconv.workspace_limit(64 * 2**20): ...``."""
    token = _workspace_limit.set(_check_bytes(nbytes))
    try:
        yield
    finally:
        _workspace_limit.reset(token)
