"""Network faults between eventray and Kafka in the middle of an exactly-once Kafka-to-Kafka run, through a
loopback fault proxy (cluster/kafka_dev/fault_proxy.py) that the test's own broker advertises, so every connection of
every actor, the Supervisor and the producers goes through it:

- **blackhole** for 10 s: connections stay open and no byte moves (requests time out, as on a dropped route);
- **reset**: every open connection is aborted at once and new ones are reset for 2 s (a broker host restarted,
  as the clients see it);
- **delayed EndTxn**: while the rest of the input flows, every transaction commit request is held 5 s, beyond
  the clients' request timeout (3 s), until 3 were held: a producer cannot know in time whether its epoch's
  transaction committed; recovery decides by the commit markers, and the actors' producers are made afresh.

The fault starts once a checkpoint of the run is complete, so it falls in the middle of the run however fast the
machine is; the rest of the input is produced once a blackhole or a reset is healed, and during the delayed
commits. The delivery checker then finds nothing
lost, duplicated or read from an aborted transaction, and every window equal to its recomputation."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.kafka_dev import DevBrokerConfig, start_broker, stop_broker
from cluster.kafka_dev.fault_proxy import END_TXN_API_KEY, FaultProxy, fault_proxy
from tests.chaos.chaos_tools import checkpointed_progress, run_with_gated_input
from tests.chaos.test_recovery import assert_exactly_once, kafka_exactly_once_orders, verified
from tests.integration.pipelines_under_test import create_topic, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.chaos, pytest.mark.ray, pytest.mark.kafka, pytest.mark.slow]

EVENTS = 40_000
REQUEST_TIMEOUT_MS = 3_000  # well inside a 10 s blackhole: a Kafka call under way times out and is recovered from
FAULTS = {"blackhole": 10.0, "reset": 2.0, "delayed_end_txn": 0.0}  # how long each lasts (EndTxn: by progress)
END_TXN_HELD_S = 5.0


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[FaultProxy]:
    """A broker for this test alone that advertises the fault proxy's port: clients reach it only through it."""
    broker_port = free_port()  # known before the broker starts: its readiness probe already goes through the proxy
    with fault_proxy(target_port=broker_port) as proxy:
        config = DevBrokerConfig(state_dir=tmp_path / "broker", port=broker_port, advertised_port=proxy.port)
        start_broker(config)
        try:
            properties = (config.state_dir / "server.properties").read_text()
            assert f"advertised.listeners=PLAINTEXT://127.0.0.1:{proxy.port}" in properties
            yield proxy
        finally:
            stop_broker(config.state_dir)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_an_exactly_once_kafka_run_rides_out_a_network_fault(
    ray_driver: LocalRayCluster, proxied_broker: FaultProxy, tmp_path: Path, fault: str
) -> None:
    proxy = proxied_broker
    bootstrap = f"127.0.0.1:{proxy.port}"
    name = unique(f"net-{fault}")
    create_topic(bootstrap, f"{name}.in")
    checkpoints = tmp_path / "checkpoints"
    applied: list[int] = []  # the connections open through the proxy when the fault began
    healing: list[threading.Thread] = []

    def fault_once_a_checkpoint_is_complete() -> bool:
        if not applied and checkpointed_progress(checkpoints).epoch >= 2:
            applied.append(proxy.open_connections)
            if fault == "delayed_end_txn":  # while the input flows on, so that epochs commit during the fault
                proxy.hold_requests(END_TXN_API_KEY, END_TXN_HELD_S)
                healing.append(proxy.heal_after_held_requests(3))
            else:
                proxy.blackhole() if fault == "blackhole" else proxy.reset()
                time.sleep(FAULTS[fault])
                proxy.heal()
        return bool(applied)

    config = kafka_exactly_once_orders(tmp_path, EVENTS, name, bootstrap,
                                       kafka={"request_timeout_ms": REQUEST_TIMEOUT_MS})  # fmt: skip
    try:
        summary = run_with_gated_input(ray_driver, config, bootstrap, EVENTS, 17, fault_once_a_checkpoint_is_complete)
    finally:
        for thread in healing:
            thread.join(timeout=310)

    assert applied and applied[0] > 0, "the fault began while the run's clients were connected through the proxy"
    what_it_did = {"blackhole": proxy.held_chunks, "reset": proxy.resets, "delayed_end_txn": proxy.held_request_count}
    assert what_it_did[fault] > 0, f"the {fault} held or reset traffic of the run"
    # Whether a Kafka call was under way during the fault is timing: one that was fails (a timeout, a reset) and
    # the Supervisor restores the last checkpoint; otherwise the clients reconnect. Both are correct; what must
    # hold either way is every event, exactly once.
    assert summary.progress.events_in == EVENTS
    assert_exactly_once(verified(config), EVENTS)
