"""The fault table's merge and the soak's figures: pure arithmetic over recorded samples (benchmarks/)."""

from __future__ import annotations

import pytest

from benchmarks.figures import merged_faults, rss_slope
from cluster.control.actor_ids import ACTOR_ID


@pytest.mark.parametrize(
    ("actor_name", "slot"),
    [
        ("source-0-1e1852-6", "source-0"),
        ("aggregate-1-1e1852s1-3", "aggregate-1"),
        ("aggregate-2-1e1852-3-r2", "aggregate-2"),
        ("per_customer-1-0a0b0c-12", "per_customer-1"),
    ],
)
def test_an_actor_name_gives_its_slot_whatever_the_run_attempt_and_rescale(actor_name: str, slot: str) -> None:
    match = ACTOR_ID.match(actor_name)

    assert match is not None and match["slot"] == slot


def test_the_rss_slope_is_the_least_squares_line_per_hour_and_its_change_over_the_span() -> None:
    growing = [(600.0 + 60 * minute, 200.0 + 0.5 * minute + (0.3 if minute % 2 else -0.3)) for minute in range(50)]

    line = rss_slope(growing)

    assert line["mib_per_h"] == pytest.approx(30.0, abs=0.5), "0.5 MiB a minute"
    assert line["start_mib"] == pytest.approx(200.0, abs=0.5) and line["end_mib"] == pytest.approx(224.5, abs=0.5)
    assert line["change_pct"] == pytest.approx(12.25, abs=0.3)
    assert rss_slope(growing[:2])["mib_per_h"] is None, "two samples make no line worth reporting"


def test_kinds_run_again_replace_their_rows_and_the_others_keep_theirs_with_their_date() -> None:
    previous = {"when": "earlier", "by_fault": {"none": {"runs": [1]}, "blackhole": {"runs": [2]}}}
    ran = {"events": 40_000, "runs": 3, "by_fault": {"blackhole": {"runs": [3]}, "disk_full": {"runs": [4]}}}

    merged = merged_faults(previous, ran, "now", ["none", "blackhole", "disk_full"])

    assert list(merged["by_fault"]) == ["none", "blackhole", "disk_full"], "in the benchmark's kind order"
    assert merged["by_fault"]["none"] == {"when": "earlier", "runs": [1]}
    assert merged["by_fault"]["blackhole"] == {"when": "now", "runs": [3]}
    assert merged["when"] == "now"
