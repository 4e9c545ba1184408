"""A Kafka broker restart in the middle of an exactly-once Kafka-to-Kafka run, on a broker of the test's own
(the session's broker stays up for the other tests). While the broker is gone, actors and the Supervisor get
Kafka errors that may pass; the Supervisor restores the topology from the last checkpoint with a growing wait
until Kafka answers again. The delivery checker then finds nothing lost, duplicated or read from an aborted
transaction, and every window equal to its recomputation.

The input is released in parts: the broker goes down once a checkpoint of the run is complete (so the outage
falls in the middle of the run however fast the machine is) and the rest is produced once it is back."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.kafka_dev import DevBrokerConfig, start_broker, stop_broker
from tests.chaos.chaos_tools import checkpointed_progress, run_with_gated_input
from tests.chaos.test_recovery import assert_exactly_once, kafka_exactly_once_orders, verified
from tests.integration.pipelines_under_test import create_topic, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.chaos, pytest.mark.ray, pytest.mark.kafka, pytest.mark.slow]

EVENTS = 40_000
OUTAGE_S = 10.0
REQUEST_TIMEOUT_MS = 3_000  # well inside the outage: a Kafka call under way times out and is recovered from


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[DevBrokerConfig]:
    """A broker for this test alone; its config names the ports it got, so a restart takes the same ones."""
    config = DevBrokerConfig(state_dir=tmp_path / "broker", port=0)
    start_broker(config)
    listeners = re.search(r"listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)",
                          (config.state_dir / "server.properties").read_text())  # fmt: skip
    assert listeners is not None
    pinned = config.model_copy(update={"port": int(listeners[1]), "controller_port": int(listeners[2]),
                                       "keep_data": True})  # fmt: skip
    try:
        yield pinned
    finally:
        stop_broker(pinned.state_dir)


@pytest.mark.parametrize("stop", ["clean", "hard"])
def test_an_exactly_once_kafka_run_rides_out_a_broker_restart(
    ray_driver: LocalRayCluster, own_broker: DevBrokerConfig, tmp_path: Path, stop: str
) -> None:
    """``clean``: the broker shuts down (SIGTERM) and closes its logs; ``hard``: it is SIGKILLed, and recovers
    its log on restart."""
    bootstrap = f"127.0.0.1:{own_broker.port}"
    name = unique(f"outage-{stop}")
    create_topic(bootstrap, f"{name}.in")
    checkpoints = tmp_path / "checkpoints"
    bounced: list[float] = []

    def bounce_once_a_checkpoint_is_complete() -> bool:
        if not bounced and checkpointed_progress(checkpoints).epoch >= 2:
            assert stop_broker(own_broker.state_dir, hard=stop == "hard"), "the broker was running and is gone"
            time.sleep(OUTAGE_S)
            start_broker(own_broker)
            bounced.append(OUTAGE_S)
        return bool(bounced)

    config = kafka_exactly_once_orders(tmp_path, EVENTS, name, bootstrap,
                                       kafka={"request_timeout_ms": REQUEST_TIMEOUT_MS})  # fmt: skip
    summary = run_with_gated_input(ray_driver, config, bootstrap, EVENTS, 13, bounce_once_a_checkpoint_is_complete)

    assert bounced, "the broker was restarted during the run"
    # Whether a Kafka call was under way when the broker went away is timing: one that was times out (the outage
    # outlasts request_timeout_ms) and the Supervisor restores the last checkpoint; otherwise the clients ride
    # the restart out. Both are correct; what must hold either way is every event, exactly once.
    assert summary.progress.events_in == EVENTS
    assert_exactly_once(verified(config), EVENTS)
