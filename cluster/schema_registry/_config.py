"""Configuration of the local dev schema registry, and the environment variables this package reads.

Environment variables are read here and nowhere else in the package, at call time (never at import):
``EVENTRAY_CACHE_DIR`` (root of eventray's download cache, default ``~/.cache/eventray``) and
``SCHEMA_REGISTRY_URL`` (an existing registry to use instead of starting one).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_PORT", "DevRegistryConfig", "registry_url_from_env"]

_CACHE_ROOT_ENV = "EVENTRAY_CACHE_DIR"
_REGISTRY_URL_ENV = "SCHEMA_REGISTRY_URL"

DEFAULT_PORT = 8081  # Confluent's, which clients and docs assume; Apicurio's own default (8080) is busier


def _default_cache_dir() -> Path:
    """Return ``$EVENTRAY_CACHE_DIR/registry``, or ``~/.cache/eventray/registry`` when the variable is unset."""
    root = os.environ.get(_CACHE_ROOT_ENV) or str(Path.home() / ".cache" / "eventray")
    return Path(root).expanduser() / "registry"


def _default_state_dir() -> Path:
    return Path.cwd() / ".eventray" / "registry"


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

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    state_dir: Path = Field(default_factory=_default_state_dir)
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    heap_mb: int = Field(default=256, ge=128)
    build_timeout_s: float = Field(default=900.0, gt=0)
    ready_timeout_s: float = Field(default=60.0, gt=0)
    stop_timeout_s: float = Field(default=20.0, gt=0)

    @field_validator("cache_dir", "state_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()
