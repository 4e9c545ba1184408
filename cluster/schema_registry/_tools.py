"""The external programs the dev registry needs (java, mvn), found by the helper shared with the dev Kafka
broker (:mod:`cluster.dev_services.external_tools`), failing with ``DevRegistryError``."""

from __future__ import annotations

from pathlib import Path

from cluster import dev_services

from ._errors import REGISTRY_ERRORS

__all__ = ["require_tool"]


def require_tool(name: str) -> Path:
    """Return the absolute path of ``name`` on PATH; raise DevRegistryError naming the install step if not."""
    return dev_services.require_tool(name, REGISTRY_ERRORS)
