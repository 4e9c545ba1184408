"""Test-session set-up shared by every test: the auth mode, and one local Ray cluster and one Kafka broker per
session for the integration and chaos tests, and one schema registry (each started only when a test asks for it).

``RAY_AUTH_MODE`` is set here, before anything imports Ray, so this process and every process it starts
(``ray start``, the CLI, job drivers) use the same mode (ARCHITECTURE.md section 7): ``token``, as for users, with
the session's own token file (``RAY_AUTH_TOKEN_PATH``), never ``~/.ray/auth_token``. So is the key of hashing
masks, ``EVENTRAY_MASK_KEY``, when the environment has none.
"""

from __future__ import annotations

import logging
import os

from tests.session_auth import remove_session_token, session_ray_auth

os.environ.update(session_ray_auth(os.environ))
# the key of `mask: hash` (HMAC), as an operator exports it; job drivers started by tests inherit it
os.environ.setdefault("EVENTRAY_MASK_KEY", "eventray-tests-only-mask-key-0123456789")

from collections.abc import Iterator

import pytest
import ray

from tests.integration.kafka_fixtures import kafka_bootstrap
from tests.integration.ray_cluster import LocalRayCluster, start_local_cluster
from tests.integration.registry_fixtures import schema_registry_url

__all__ = ["kafka_bootstrap", "ray_cluster", "ray_driver", "schema_registry_url"]


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
        ray.init(address=ray_cluster.address, namespace="eventray", logging_level=logging.WARNING)
    return ray_cluster


def pytest_unconfigure(config: pytest.Config) -> None:
    remove_session_token()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-events",
        type=int,
        default=120_000,
        help="events per chaos run (default 120,000, sized for CI; e.g. 1000000 for a long soak)",
    )


@pytest.fixture
def chaos_events(request: pytest.FixtureRequest) -> int:
    events: int = request.config.getoption("--chaos-events")
    return events
