"""Fixtures for integration tests: one local Ray cluster and one Kafka broker per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from tests.integration.kafka_fixtures import kafka_bootstrap
from tests.integration.ray_cluster import LocalRayCluster, start_local_cluster

__all__ = ["kafka_bootstrap", "ray_cluster", "ray_driver"]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    cluster = start_local_cluster(tmp_path_factory.mktemp("ray"))
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


@pytest.fixture(scope="session")
def ray_driver(ray_cluster: LocalRayCluster) -> LocalRayCluster:
    """This test process joined to the session's cluster as a driver."""
    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, namespace="eventray", logging_level="WARNING")
    return ray_cluster
