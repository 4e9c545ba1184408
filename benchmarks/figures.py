"""Pure arithmetic of the fault table and the soak (no Ray, Kafka or benchmark-only packages: unit-tested)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["merged_faults", "rss_slope"]


def rss_slope(points: list[tuple[float, float]]) -> dict[str, float | None]:
    """Least-squares line through (seconds, MiB): MiB per hour and the change over the span relative to its
    start (percent)."""
    if len(points) < 3:
        return {"mib_per_h": None, "change_pct": None, "start_mib": None, "end_mib": None}
    xs, ys = [x for x, _ in points], [y for _, y in points]
    slope, intercept = statistics.linear_regression(xs, ys)
    start, end = intercept + slope * xs[0], intercept + slope * xs[-1]
    return {"mib_per_h": round(slope * 3_600, 2), "change_pct": round(100 * (end - start) / start, 2),
            "start_mib": round(start, 1), "end_mib": round(end, 1)}  # fmt: skip


def merged_faults(
    previous: dict[str, Any] | None, ran: dict[str, Any], when: str, kinds: Sequence[str]
) -> dict[str, Any]:
    """The fault table with the kinds just run (dated ``when``) in place of their earlier rows, in the order of
    ``kinds``."""
    earlier = previous or {}
    rows = {kind: {"when": earlier.get("when"), **row} for kind, row in earlier.get("by_fault", {}).items()}
    rows |= {kind: {**row, "when": when} for kind, row in ran["by_fault"].items()}
    ordered = {kind: rows[kind] for kind in kinds if kind in rows}
    return {"when": when, "events": ran["events"], "runs": ran["runs"], "by_fault": ordered}
