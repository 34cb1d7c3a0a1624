"""The only module that imports numba: the ``njit`` preset used by every kernel.

Kernels are compiled with ``nogil=True`` (threads can run them in parallel) and ``cache=True``
(compiled once per environment). Set ``NUMBA_DISABLE_JIT=1`` to run kernel bodies as plain
Python, for coverage and debugging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["njit"]


def njit(func: F) -> F:
    """Compile ``func`` with the project's preset (``nogil``, ``cache``, no object mode)."""
    compiled: F = numba.njit(nogil=True, cache=True)(func)  # type: ignore[assignment]
    return compiled
