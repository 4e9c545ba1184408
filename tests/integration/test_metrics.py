"""The eventray_* series on the Ray node's Prometheus endpoint agree with what a run did."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from cluster.control.run_report import RunSummary
from cluster.control.runner import run_pipeline
from tests.integration.pipelines_under_test import generator_source, orders_with, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EVENTS = 30_000
PARTITIONS = 8
ACTORS, LAG = "eventray_actors", "eventray_lag_records"


def _series(text: str, name: str, pipeline: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of ``name`` (Ray prefixes ``ray_``) for ``pipeline``."""
    pattern = re.compile(rf"^(?:ray_)?{name}\{{([^}}]*)\}} ([0-9.e+-]+)$", re.MULTILINE)
    return [(labels, float(value)) for labels, value in pattern.findall(text) if f'pipeline="{pipeline}"' in labels]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return str(response.read().decode())


class EndpointWatcher(threading.Thread):
    """Scrapes the endpoint every half second while a run goes on, keeping the latest value of every series of
    the watched names seen in any scrape. Ray keeps a gauge on the endpoint only while the process that set it
    re-reports it (a TTL of two reporting intervals), so the gauges of source actors and of the Supervisor are
    gone soon after they exit: they are looked for during the run, not only after it."""

    def __init__(self, url: str, names: tuple[str, ...], pipeline: str) -> None:
        super().__init__(name="metrics-watcher", daemon=True)
        self._url, self._names, self._pipeline = url, names, pipeline
        self.latest: dict[str, dict[str, float]] = {name: {} for name in names}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            try:
                text = _scrape(self._url)
            except OSError:  # the endpoint not answering for a moment is not what this test is about
                continue
            for name in self._names:
                self.latest[name].update(_series(text, name, self._pipeline))

    def seen(self, name: str) -> set[str]:
        return set(self.latest[name])

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def _expected_totals(summary: RunSummary) -> dict[str, float]:
    return {
        "eventray_events_in_total": EVENTS,
        "eventray_dead_lettered_total": summary.progress.dead_lettered,
        "eventray_windows_emitted_total": summary.progress.windows_emitted,
    }


def _current_aggregates(labels: set[str]) -> list[str]:
    return [series for series in labels if 'role="aggregate"' in series and 'state="current"' in series]


def _wait_for_the_endpoint(
    url: str, pipeline: str, summary: RunSummary, watcher: EndpointWatcher
) -> tuple[str, dict[str, float], list[tuple[str, float]]]:
    """Scrape until every counter and the actors gauge have arrived (each actor reports on its own schedule) and
    no lag series left on the endpoint shows a value from before the drain, or 120 s have passed; the last
    scrape, the totals and the lag series still on it."""
    expected = _expected_totals(summary)
    deadline = time.monotonic() + 120
    while True:
        text = _scrape(url)
        totals = {name: sum(value for _, value in _series(text, name, pipeline)) for name in expected}
        lags = _series(text, LAG, pipeline)
        drained = all(value == 0 for _, value in lags)  # a source actor still alive shows its last lag, 0
        arrived = totals == expected and drained and _current_aggregates(watcher.seen(ACTORS))
        if arrived or time.monotonic() > deadline:
            return text, totals, lags
        time.sleep(1)


def test_metrics_endpoint_shows_events_lag_and_actors(ray_driver: LocalRayCluster, tmp_path: Path) -> None:
    # paced, so the run outlasts many reporting intervals (1 s in the test cluster) whatever the machine
    config = orders_with({**generator_source(), "rate_per_s": EVENTS / 15, "partitions": PARTITIONS}, tmp_path,
                         {"max_events": EVENTS, "aggregate_actors": 2})  # fmt: skip
    config = config.model_copy(update={"name": unique("metrics")})
    watcher = EndpointWatcher(ray_driver.metrics_url, (ACTORS, LAG), config.name)
    watcher.start()
    try:
        summary = run_pipeline(config, address=ray_driver.address)
        # the watcher goes on after the run: the Supervisor's gauge may reach the endpoint only then
        text, totals, lags = _wait_for_the_endpoint(ray_driver.metrics_url, config.name, summary, watcher)
    finally:
        watcher.stop()

    assert totals == _expected_totals(summary), f"after 120 s the endpoint shows {totals}"
    assert summary.progress.events_in == EVENTS
    assert summary.progress.lag_records == 0
    lag_partitions = sorted(re.findall(r'partition="([0-9]+)"', " ".join(watcher.seen(LAG))), key=int)
    assert lag_partitions == [str(p) for p in range(PARTITIONS)], f"one lag series per partition, saw {lag_partitions}"
    per_partition = EVENTS // PARTITIONS
    assert all(0 <= value <= per_partition for value in watcher.latest[LAG].values()), watcher.latest[LAG]
    assert all(value == 0 for _, value in lags), f"lag is 0 after the drain, saw {lags}"
    actors = watcher.seen(ACTORS)
    assert _current_aggregates(actors), f"an eventray_actors series for the current aggregates; saw {sorted(actors)}"
    assert _series(text, "eventray_batch_latency_s_count", config.name)
