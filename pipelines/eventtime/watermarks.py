"""The two ends of event time that every watermark lies between: one home for sources, keyed operators and actors.

A watermark is an event time in milliseconds (int64) such that no event at or before it is still expected.
``NO_WATERMARK`` is the watermark of an input that has seen no event yet; ``END_OF_TIME_MS`` that of an input
that has ended (and what :meth:`~pipelines.state.keyed_operator.KeyedOperator.flush` advances to). Both stay far from
int64 overflow when a window size, lateness or disorder bound is added to or taken from them.
"""

from __future__ import annotations

__all__ = ["END_OF_TIME_MS", "NO_WATERMARK"]

NO_WATERMARK = -(1 << 62)
END_OF_TIME_MS = 1 << 62
