"""Session fixture for tests that need a real schema registry (the Confluent-compatible API).

``schema_registry_url`` uses ``SCHEMA_REGISTRY_URL`` when set (an existing registry, left alone), else starts
the dev registry (Apicurio, in-memory) on a free loopback port for the whole session and stops it at the end.
Needs neither Kafka nor Ray.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster.schema_registry import DevRegistryConfig, registry_url_from_env, start_registry, stop_registry

__all__ = ["schema_registry_url"]


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a Confluent-compatible registry API (e.g. ``http://127.0.0.1:N/apis/ccompat/v7``) that
    answers for the whole test session."""
    external = registry_url_from_env()
    if external is not None:
        yield external
        return
    state_dir = tmp_path_factory.mktemp("schema-registry")
    registry = start_registry(DevRegistryConfig(state_dir=state_dir, port=0))
    try:
        yield registry.url
    finally:
        stop_registry(registry.state_dir)
