"""``schema.registry``: an input's Avro records are in the Confluent wire format, their writer schemas in a registry.

The registry is any that speaks Confluent Schema Registry's REST API: Confluent's own, Karapace, or Apicurio
Registry's compatible API (``http://HOST:8080/apis/ccompat/v7``). Its URL comes from the environment (the
variable ``url_env`` names, ``SCHEMA_REGISTRY_URL`` unless told) or from ``url``; basic-auth credentials only
from the environment; TLS as for Kafka. The process that reads the topic resolves them, so the Ray nodes must
have the variables, as they have Kafka's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.base import VARIABLE_NAME, ConfigModel
from pipelines.config.state import IMPORT_PATH
from pipelines.config.tls import TlsConfig
from pipelines.errors import ConfigError

__all__ = [
    "COMPATIBILITY_MODES",
    "DEFAULT_REGISTRY_URL_ENV",
    "CompatibilityMode",
    "RegistryConfig",
    "SubjectStrategy",
    "registry_url",
]

DEFAULT_REGISTRY_URL_ENV = "SCHEMA_REGISTRY_URL"

CompatibilityMode = Literal[
    "NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"
]
COMPATIBILITY_MODES: tuple[str, ...] = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
SubjectStrategy = Literal["topic", "record", "topic_record"]


class RegistryConfig(ConfigModel):
    """Where writer schemas are found, how subjects are named, and what the reader expects of them.

    Subjects, as Confluent's strategies name them: ``topic`` -> ``<topic>-value`` (one event type per topic),
    ``record`` -> ``<record full name>``, ``topic_record`` -> ``<topic>-<record full name>`` (several event
    types on one topic, each evolving on its own).
    """

    url: str | None = Field(default=None, description="the registry's base URL; else read from url_env")
    url_env: str = Field(
        default=DEFAULT_REGISTRY_URL_ENV, pattern=VARIABLE_NAME, description="environment variable holding the URL"
    )
    username_env: str | None = Field(
        default=None, pattern=VARIABLE_NAME, description="environment variable holding the basic-auth user"
    )
    password_env: str | None = Field(
        default=None, pattern=VARIABLE_NAME, description="environment variable holding the basic-auth password"
    )
    tls: TlsConfig | None = Field(default=None, description="CA bundle and client certificate for https")
    subject_strategy: SubjectStrategy = "topic"
    reader_schema_file: str | None = Field(
        default=None,
        description=(
            "an .avsc file: the reader schema every writer version is resolved to (a record, or a union of "
            "records for several event types); none: each writer's fields are read by name into `fields`"
        ),
    )
    compatibility: CompatibilityMode | None = Field(
        default=None, description="the mode the subjects must have (checked by `eventray schema check`)"
    )
    type_column: str | None = Field(
        default=None, description="a column of `fields` (string) that gets each record's writer record full name"
    )
    upcasters: str | None = Field(
        default=None,
        pattern=IMPORT_PATH,
        description=(
            "'package.module:UPCASTERS', a dict {(record name, version): function} bringing the records of older "
            "versions to the newest meaning, column-wise, after resolution (pipelines.schemas.upcasters)"
        ),
    )
    cache_size: int = Field(default=1_000, ge=1, description="writer schemas kept (least recently used leave)")
    timeout_s: float = Field(default=10.0, gt=0, description="one request to the registry")
    unavailable_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "how long a source waits for an unreachable registry (retrying) before it fails and recovers; keep it "
            "below checkpoint.timeout_ms (a source waiting holds its epoch's barrier)"
        ),
    )
    unknown_retry_s: float = Field(
        default=30.0, ge=0, description="an id the registry does not know is asked again after this long"
    )

    @model_validator(mode="after")
    def _credentials_together(self) -> RegistryConfig:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together (basic auth needs both)")
        return self


def registry_url(config: RegistryConfig, environ: Mapping[str, str] | None = None) -> str:
    """The registry's base URL, without a trailing slash; a ConfigError naming the variable to set if none."""
    environ = os.environ if environ is None else environ
    url = config.url or environ.get(config.url_env)
    if not url:
        raise ConfigError(
            f"schema.registry: no registry URL: export {config.url_env}=http://HOST:PORT (for Apicurio "
            "http://HOST:PORT/apis/ccompat/v7), or set schema.registry.url; `eventray registry up` starts one here"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"schema.registry: the registry URL {url!r} must start with http:// or https://")
    return url.rstrip("/")
