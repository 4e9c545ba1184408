"""Session fixtures for tests that need a real Kafka broker.

``kafka_bootstrap`` uses ``KAFKA_BOOTSTRAP`` when set (an existing broker, left alone), else starts a
dev broker on a free loopback port for the whole session and stops it at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster.kafka_dev import DevBrokerConfig, bootstrap_from_env, start_broker, stop_broker

__all__ = ["kafka_bootstrap"]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap string of a broker that answers for the whole test session."""
    external = bootstrap_from_env()
    if external is not None:
        yield external
        return
    state_dir = tmp_path_factory.mktemp("kafka-dev-broker")
    broker = start_broker(DevBrokerConfig(state_dir=state_dir, port=0))
    try:
        yield broker.bootstrap
    finally:
        stop_broker(broker.state_dir)
