"""Memory the Supervisor freed, handed back to the operating system after each change of its topology.

glibc's malloc keeps what a process frees in its heaps, for the process's later allocations; it returns only a
free stretch at the top of a heap, and only past a threshold. Each recovery makes the Supervisor allocate and
free a few hundred KiB (new actor handles in Ray's core worker, Kafka clients and their metadata, the checkpoint's
metadata) from several threads, each allocating from an arena of its own. Measured in a soak with a kill every
15 s (glibc's ``mallinfo2`` at every tenth recovery): the Supervisor's RSS grew by about 325 KiB a recovery, of
which about 240 KiB were free chunks that malloc held; Python's own objects (``tracemalloc``) stayed flat. An
hour with a kill a minute grew it by 7.6 %.

``malloc_trim(0)`` gives back every whole free page of every arena (glibc 2.8 and later, with ``madvise``), as
Dask's workers do when asked to trim memory; it locks one arena at a time and took 20 to 40 ms on a fragmented heap of
100 MiB, so it runs on a thread beside the Supervisor's event loop. Elsewhere (musl, macOS: no ``malloc_trim``) nothing
is done; under a preloaded jemalloc or tcmalloc it does nothing useful. The trim alone left about 180 KiB a
recovery: the free chunks spread over many arenas, in pages that chunks in use share; with two arenas
(``cluster/control/node_environment.py``) about 30 KiB, and +2.5 % in the hour (``benchmarks/SOAK.md``).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable

__all__ = ["release_freed_memory"]

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the C library this process already loaded, or None where there is none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # no such function (musl, macOS); no CDLL(None) (Windows)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Give the memory malloc holds free back to the operating system; True when some was (glibc only)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    released = bool(trim(0))
    log.debug("freed memory released: %s", released)
    return released
