"""The eventray_* series on the Ray node's Prometheus endpoint agree with what a run did."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from cluster.runner import run_pipeline
from tests.integration.pipelines_under_test import generator_source, orders_with, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EVENTS = 30_000


def _series(text: str, name: str, pipeline: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of ``name`` (Ray prefixes ``ray_``) for ``pipeline``."""
    pattern = re.compile(rf"^(?:ray_)?{name}\{{([^}}]*)\}} ([0-9.e+-]+)$", re.MULTILINE)
    return [(labels, float(value)) for labels, value in pattern.findall(text) if f'pipeline="{pipeline}"' in labels]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_metrics_endpoint_shows_events_lag_and_actors(ray_driver: LocalRayCluster, tmp_path: Path) -> None:
    config = orders_with(generator_source(), tmp_path, {"max_events": EVENTS, "aggregate_actors": 2})
    config = config.model_copy(update={"name": unique("metrics")})

    summary = run_pipeline(config, address=ray_driver.address)

    expected = {
        "eventray_events_in_total": EVENTS,
        "eventray_dead_lettered_total": summary.progress.dead_lettered,
        "eventray_windows_emitted_total": summary.progress.windows_emitted,
    }
    deadline = time.monotonic() + 60
    while True:  # each actor reports on its own schedule: wait until every counter has arrived
        text = _scrape(ray_driver.metrics_url)
        totals = {name: sum(value for _, value in _series(text, name, config.name)) for name in expected}
        if totals == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert totals == expected
    assert summary.progress.events_in == EVENTS
    lags = _series(text, "eventray_lag_records", config.name)
    assert len(lags) == 8, "one lag series per partition"
    assert all(value == 0 for _, value in lags), "lag is 0 after the drain"
    actors = dict(_series(text, "eventray_actors", config.name))
    assert any('role="aggregate"' in labels and 'state="current"' in labels for labels in actors)
    assert _series(text, "eventray_batch_latency_s_count", config.name)
