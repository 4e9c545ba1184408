"""The eventray_* series on the Ray node's Prometheus endpoint agree with what a run did."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from cluster.run_report import RunSummary
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


class EndpointWatcher(threading.Thread):
    """Scrapes the endpoint every half second while a run goes on, keeping every series of one name seen in any
    scrape: a gauge set by the Supervisor is exported on the reporter's schedule and may be gone once the
    Supervisor has exited, so it is looked for during the run, not only after it."""

    def __init__(self, url: str, name: str, pipeline: str) -> None:
        super().__init__(name="metrics-watcher", daemon=True)
        self._url, self._name, self._pipeline = url, name, pipeline
        self.seen: set[str] = set()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            try:
                text = _scrape(self._url)
            except OSError:  # the endpoint not answering for a moment is not what this test is about
                continue
            self.seen |= {labels for labels, _ in _series(text, self._name, self._pipeline)}

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
    url: str, pipeline: str, summary: RunSummary, actors: EndpointWatcher
) -> tuple[str, dict[str, float], list[tuple[str, float]]]:
    """Scrape until every counter, the drained lag and the actors gauge have arrived (each actor reports on its
    own schedule), or 120 s have passed; the last scrape, the totals and the lag series."""
    expected = _expected_totals(summary)
    deadline = time.monotonic() + 120
    while True:
        text = _scrape(url)
        totals = {name: sum(value for _, value in _series(text, name, pipeline)) for name in expected}
        lags = _series(text, "eventray_lag_records", pipeline)
        drained = len(lags) == 8 and all(value == 0 for _, value in lags)
        if (totals == expected and drained and _current_aggregates(actors.seen)) or time.monotonic() > deadline:
            return text, totals, lags
        time.sleep(1)


def test_metrics_endpoint_shows_events_lag_and_actors(ray_driver: LocalRayCluster, tmp_path: Path) -> None:
    # paced, so the run outlasts many reporting intervals (1 s in the test cluster) whatever the machine
    config = orders_with({**generator_source(), "rate_per_s": EVENTS / 15}, tmp_path,
                         {"max_events": EVENTS, "aggregate_actors": 2})  # fmt: skip
    config = config.model_copy(update={"name": unique("metrics")})
    actors = EndpointWatcher(ray_driver.metrics_url, "eventray_actors", config.name)
    actors.start()
    try:
        summary = run_pipeline(config, address=ray_driver.address)
        # the watcher goes on after the run: the Supervisor's gauge may reach the endpoint only then
        text, totals, lags = _wait_for_the_endpoint(ray_driver.metrics_url, config.name, summary, actors)
    finally:
        actors.stop()

    assert totals == _expected_totals(summary), f"after 120 s the endpoint shows {totals}"
    assert summary.progress.events_in == EVENTS
    assert len(lags) == 8, f"one lag series per partition, saw {lags}"
    assert all(value == 0 for _, value in lags), f"lag is 0 after the drain, saw {lags}"
    seen = sorted(actors.seen)
    assert _current_aggregates(actors.seen), f"an eventray_actors series for the current aggregates; saw {seen}"
    assert _series(text, "eventray_batch_latency_s_count", config.name)
