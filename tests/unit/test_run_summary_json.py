"""``eventray run --json``: the summary as one JSON object that scripts can read back."""

from __future__ import annotations

import json

from cluster.control.autoscaler import Rescale
from cluster.control.run_report import RunProgress, RunSummary, summary_json


def test_the_summary_reads_back_as_json_with_its_counts_and_rate() -> None:
    progress = RunProgress(
        elapsed_s=4.0, events_in=1_000, events_out=480, dead_lettered=10, late_events=0, windows_emitted=57,
        lag_records=0, sources_done=2, sources=2, aggregates=2,
    )  # fmt: skip
    summary = RunSummary(
        pipeline="orders",
        progress=progress,
        stopped_early=False,
        preview=[{"customer_id": "c00001", "orders": 3}],
        outputs=["jsonl:out/orders/windows"],
        recoveries_s=[1.25],
        checkpoints=3,
        rescales=[Rescale(at_s=9.5, sources=(1, 2), aggregates=(1, 1), moved_partitions=4, moved_key_groups=0,
                          duration_s=0.6)],
    )  # fmt: skip

    data = json.loads(summary_json(summary))

    assert data["pipeline"] == "orders" and data["stopped_early"] is False
    assert data["progress"]["events_in"] == 1_000 and data["progress"]["dead_lettered"] == 10
    assert data["progress"]["events_per_s"] == 250.0
    assert data["preview"] == [{"customer_id": "c00001", "orders": 3}]
    assert data["recoveries_s"] == [1.25] and data["checkpoints"] == 3
    assert data["rescales"][0]["sources"] == [1, 2]
