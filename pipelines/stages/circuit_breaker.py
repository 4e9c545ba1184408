"""The dead-letter circuit breaker: halt instead of dead-lettering everything after a bad deploy upstream.

It trips when, over the last ``window_events`` events (once at least ``min_events`` were seen), the share of
invalid ones exceeds ``max_invalid_ratio``, or when ``max_consecutive_invalid`` invalid events come in a row.
Pure: it sees boolean masks of batches, in offset order, and keeps its counts between calls.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from pipelines.config.kafka import CircuitBreakerConfig
from pipelines.errors import PipelineHalted

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    def __init__(self, config: CircuitBreakerConfig, where: str) -> None:
        self._config = config
        self._where = where
        self._window: deque[tuple[int, int]] = deque()  # (events, invalid) per observed batch
        self._events = 0
        self._invalid = 0
        self._consecutive = 0

    def observe(self, invalid: np.ndarray) -> None:
        """Record one batch (``invalid[i]`` true when row ``i`` was dead-lettered); raise PipelineHalted if it trips."""
        if invalid.size == 0:
            return
        self._track_runs(invalid)
        self._window.append((int(invalid.size), int(invalid.sum())))
        self._events += int(invalid.size)
        self._invalid += int(invalid.sum())
        while len(self._window) > 1 and self._events - self._window[0][0] >= self._config.window_events:
            events, bad = self._window.popleft()
            self._events -= events
            self._invalid -= bad
        self._check()

    def _track_runs(self, invalid: np.ndarray) -> None:
        valid_positions = np.flatnonzero(~invalid)
        if valid_positions.size == 0:
            self._consecutive += int(invalid.size)
            longest = self._consecutive
        else:
            leading = self._consecutive + int(valid_positions[0])
            edges = np.concatenate(([-1], valid_positions, [invalid.size]))
            longest = max(leading, int((np.diff(edges) - 1).max()))
            self._consecutive = int(invalid.size - 1 - valid_positions[-1])
        if longest >= self._config.max_consecutive_invalid:
            raise PipelineHalted(
                f"dead-letter circuit breaker tripped at {self._where}: {longest:,} invalid events in a row "
                f"(limit {self._config.max_consecutive_invalid:,}). Operator action: check the producer's "
                "latest deploy and the schema; after the fix, restart: input resumes from the committed offsets"
            )

    def _check(self) -> None:
        if self._events < self._config.min_events:
            return
        ratio = self._invalid / self._events
        if ratio > self._config.max_invalid_ratio:
            raise PipelineHalted(
                f"dead-letter circuit breaker tripped at {self._where}: {ratio:.0%} of the last {self._events:,} "
                f"events were invalid (limit {self._config.max_invalid_ratio:.0%}). Operator action: check the "
                "producer's latest deploy and the schema; after the fix, restart: input resumes from the "
                "committed offsets"
            )
