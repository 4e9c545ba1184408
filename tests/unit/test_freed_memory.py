"""Freed memory goes back to the operating system on glibc: memory malloc holds below a block still in use is
not returned by ``free`` alone, and :func:`release_freed_memory` returns it."""

from __future__ import annotations

import os
import platform

import psutil
import pytest

from cluster.control.freed_memory import release_freed_memory

_MIB = 1 << 20


_TUNED = [name for name in os.environ if name.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
@pytest.mark.skipif(bool(_TUNED), reason=f"the allocator is tuned or replaced here: {_TUNED}")
def test_memory_freed_below_a_live_block_is_released() -> None:
    process = psutil.Process()
    blocks = [bytes(2_000) + bytes([i % 256]) for i in range(40_000)]  # malloc, not pymalloc (> 512 B)
    pinned = bytes(2_000) + b"top"  # allocated after them: the heap cannot shrink from its top
    held = process.memory_info().rss
    del blocks
    after_free = process.memory_info().rss
    assert held - after_free < 20 * _MIB, "free alone kept most of the 80 MiB (else this test shows nothing)"

    assert release_freed_memory()

    released = after_free - process.memory_info().rss
    assert released > 40 * _MIB, f"released {released / _MIB:.1f} MiB"
    assert pinned.endswith(b"top")
