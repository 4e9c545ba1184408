"""Scratch buffers a thread reuses from call to call.

A new numpy array as large as a fetch costs page faults on every call (glibc hands freed memory of that size
back to the system), often more than the passes that use it. A hot path that needs such a buffer only for the
length of one call takes it from here instead.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["scratch"]

_buffers = threading.local()


def scratch(name: str, size: int, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A buffer of ``size`` elements of ``dtype``, not initialised, owned by the calling thread and reused by its
    next call with the same ``name``: valid until then. Grown when a call needs more; untouched pages of a
    large one never become resident."""
    kept: dict[str, npt.NDArray[Any]] = _buffers.__dict__.setdefault("kept", {})
    buffer = kept.get(name)
    if buffer is None or buffer.dtype != dtype or len(buffer) < size:
        buffer = kept[name] = np.empty(size, dtype=dtype)
    return buffer[:size]
