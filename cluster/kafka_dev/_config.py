"""Configuration of the local dev broker, and the environment variables this package reads.

Environment variables are read here and nowhere else in the package, at call time (never at import):
``KAFKA_BOOTSTRAP`` (an existing broker to use instead of starting one), and, through
:mod:`cluster.dev_services.locations`, ``EVENTRAY_CACHE_DIR`` (root of eventray's download cache, default
``~/.cache/eventray``; the broker's jars go in its ``kafka`` dir).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.dev_services import default_cache_dir, default_state_dir

__all__ = ["DevBrokerConfig", "bootstrap_from_env"]

_BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP"


def bootstrap_from_env() -> str | None:
    """Return ``KAFKA_BOOTSTRAP`` when set to a non-blank value (an existing broker to use), else None."""
    value = os.environ.get(_BOOTSTRAP_ENV, "").strip()
    return value or None


class DevBrokerConfig(BaseModel):
    """How to run one single-node KRaft broker on loopback.

    ``port`` / ``controller_port`` of 0 mean "pick a free loopback port at start". Paths are made
    absolute at construction, because the config path recorded in the broker's command line is how
    ``stop_broker`` recognises its own process.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka_version: str = Field(default="4.1.1", pattern=r"^\d+\.\d+\.\d+$")
    cache_dir: Path = Field(default_factory=lambda: default_cache_dir("kafka"))
    state_dir: Path = Field(default_factory=lambda: default_state_dir("kafka"))
    port: int = Field(default=9092, ge=0, le=65535)
    controller_port: int = Field(default=0, ge=0, le=65535)
    secure: bool = Field(
        default=False, description="TLS, SCRAM and ACLs: SASL_SSL on port, mutual TLS on mtls_port, no plaintext"
    )
    mtls_port: int = Field(default=0, ge=0, le=65535, description="secured broker: the mutual-TLS client port")
    advertised_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="the port clients are told to connect to (0: port); a proxy there must forward to port",
    )
    heap_mb: int = Field(default=512, ge=128)
    keep_data: bool = False
    ready_timeout_s: float = Field(default=60.0, gt=0)
    stop_timeout_s: float = Field(default=20.0, gt=0)

    @field_validator("cache_dir", "state_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @model_validator(mode="after")
    def _distinct_ports(self) -> DevBrokerConfig:
        if self.advertised_port and self.secure:
            raise ValueError("advertised_port is for a plaintext broker (a proxy in front of it); set secure: false")
        chosen = [port for port in (self.port, self.controller_port, self.mtls_port, self.advertised_port) if port]
        if len(chosen) != len(set(chosen)):
            raise ValueError(
                f"port, controller_port, mtls_port and advertised_port must differ, got {self.port}, "
                f"{self.controller_port}, {self.mtls_port} and {self.advertised_port} (0 picks a free one)"
            )
        return self
