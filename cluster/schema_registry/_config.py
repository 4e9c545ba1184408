"""Configuration of the local dev schema registry, and the environment variables this package reads.

Environment variables are read here and nowhere else in the package, at call time (never at import):
``SCHEMA_REGISTRY_URL`` (an existing registry to use instead of starting one), and, through
:mod:`cluster.dev_services.locations`, ``EVENTRAY_CACHE_DIR`` (root of eventray's download cache, default
``~/.cache/eventray``; the registry's build goes in its ``registry`` dir).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.dev_services import default_cache_dir, default_state_dir

__all__ = ["DEFAULT_PORT", "DevRegistryConfig", "registry_url_from_env"]

_REGISTRY_URL_ENV = "SCHEMA_REGISTRY_URL"

DEFAULT_PORT = 8081  # Confluent's, which clients and docs assume; Apicurio's own default (8080) is busier


def registry_url_from_env() -> str | None:
    """Return ``SCHEMA_REGISTRY_URL`` when set to a non-blank value (an existing registry to use), else None."""
    value = os.environ.get(_REGISTRY_URL_ENV, "").strip()
    return value.rstrip("/") or None


class DevRegistryConfig(BaseModel):
    """How to run one Apicurio Registry (in-memory storage) on loopback.

    ``port`` 0 means "pick a free loopback port at start". Paths are made absolute at construction,
    because the state dir recorded in the registry's command line is how ``stop_registry`` recognises
    its own process.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cache_dir: Path = Field(default_factory=lambda: default_cache_dir("registry"))
    state_dir: Path = Field(default_factory=lambda: default_state_dir("registry"))
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    heap_mb: int = Field(default=256, ge=128)
    build_timeout_s: float = Field(default=900.0, gt=0)
    ready_timeout_s: float = Field(default=60.0, gt=0)
    stop_timeout_s: float = Field(default=20.0, gt=0)

    @field_validator("cache_dir", "state_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()
