"""A generator's arrival rate over time: a base rate with bursts (``source.bursts``), for autoscaling demos.

The number of events of one partition arrived ``t`` seconds after the start is the integral of the rate, a
piecewise-linear function; its inverse gives each offset its arrival time, which is also its event time (so the
generator's event time still tracks wall time during a burst, and lag in seconds stays meaningful).
"""

from __future__ import annotations

import numpy as np

from pipelines.config.pipeline import BurstConfig

__all__ = ["RateProfile"]


class RateProfile:
    """Arrivals of one partition at ``rate_per_s`` (per partition), multiplied by each burst's factor during it."""

    def __init__(self, rate_per_s: float, bursts: list[BurstConfig]) -> None:
        edges = sorted({0.0, *(b.start_s for b in bursts), *(b.start_s + b.duration_s for b in bursts)})
        self._starts = np.array(edges, dtype=np.float64)
        rates = []
        for start in edges:
            factor = max((b.factor for b in bursts if b.start_s <= start < b.start_s + b.duration_s), default=1.0)
            rates.append(rate_per_s * factor)
        self._rates = np.array(rates, dtype=np.float64)
        # events arrived at each edge
        self._arrived = np.concatenate(([0.0], np.cumsum(np.diff(self._starts) * self._rates[:-1])))

    def arrived(self, elapsed_s: float) -> float:
        """Events arrived ``elapsed_s`` seconds after the start (fractional)."""
        if elapsed_s <= 0:
            return 0.0
        index = int(np.searchsorted(self._starts, elapsed_s, side="right")) - 1
        return float(self._arrived[index] + (elapsed_s - self._starts[index]) * self._rates[index])

    def arrival_s(self, offsets: np.ndarray) -> np.ndarray:
        """When each offset arrived, in seconds after the start (the inverse of :meth:`arrived`)."""
        counts = offsets.astype(np.float64)
        index = np.searchsorted(self._arrived, counts, side="right") - 1
        result: np.ndarray = self._starts[index] + (counts - self._arrived[index]) / self._rates[index]
        return result

    def rate_at(self, elapsed_s: float) -> float:
        """Events per second of one partition at ``elapsed_s``."""
        index = max(0, int(np.searchsorted(self._starts, elapsed_s, side="right")) - 1)
        return float(self._rates[index])
