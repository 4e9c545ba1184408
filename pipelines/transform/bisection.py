"""Finding the few failing items of a sequence by bisection, where a check can only say "some item of this range
fails": bad records of a fetch (:mod:`pipelines.decode.codecs`, :mod:`pipelines.decode.binary_codecs`), rows whose
values an expression cannot compute (:mod:`pipelines.transform.row_errors`)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["failing_positions"]


def failing_positions(count: int, passes: Callable[[int, int], bool]) -> list[int]:
    """The positions in ``range(count)`` that fail on their own, in order. ``passes(start, stop)`` must be true
    exactly when no position in ``range(start, stop)`` fails. Only failing ranges are split in two, so k failing
    positions cost at most ``2 k (log2(count) + 1) + 1`` calls."""
    failing: list[int] = []
    pending = [(0, count)] if count else []
    while pending:
        start, stop = pending.pop()
        if passes(start, stop):
            continue
        if stop - start == 1:
            failing.append(start)
            continue
        middle = (start + stop) // 2
        pending += [(middle, stop), (start, middle)]  # the first half is popped first: positions come in order
    return failing
