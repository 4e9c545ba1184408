"""Kafka connection, source, sink and dead-letter topic configs, and their mapping to aiokafka keyword arguments.

Secrets are ``SecretStr`` (never printed, never logged); a password can come from an environment variable
named in the config (``password_env``), resolved by the driver once, before the pipeline starts
(:func:`resolve_kafka_secrets`). SASL PLAIN sends the password in clear text, so it is refused without TLS
unless ``allow_plaintext_sasl`` says so explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator

from pipelines.config.base import ConfigModel
from pipelines.config.dead_letter import DeadLetterContent
from pipelines.config.registry import RegistryConfig
from pipelines.config.tls import TlsConfig, tls_context
from pipelines.errors import ConfigError

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "CircuitBreakerConfig",
    "KafkaConnectionConfig",
    "KafkaDeadLetterConfig",
    "KafkaSinkConfig",
    "KafkaSourceConfig",
    "SaslConfig",
    "TlsConfig",
    "client_options",
    "resolve_kafka_secrets",
    "tls_context",
]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class SaslConfig(ConfigModel):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    username: str | None = Field(default=None, min_length=1)
    username_env: str | None = Field(default=None, description="environment variable holding the user name")
    password: SecretStr | None = None
    password_env: str | None = Field(default=None, description="environment variable holding the password")

    @model_validator(mode="after")
    def _one_password_source(self) -> SaslConfig:
        if (self.password is None) == (self.password_env is None):
            raise ValueError("give exactly one of password and password_env (prefer password_env)")
        if (self.username is None) == (self.username_env is None):
            raise ValueError("give exactly one of username and username_env")
        return self


class KafkaConnectionConfig(ConfigModel):
    """How to reach the brokers. ``bootstrap_servers`` null: ``KAFKA_BOOTSTRAP``, else 127.0.0.1:9092."""

    bootstrap_servers: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    tls: TlsConfig | None = None
    sasl: SaslConfig | None = None
    allow_plaintext_sasl: bool = Field(default=False, description="allow SASL PLAIN without TLS (test rigs only)")
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    create_topics: bool = Field(
        default=True, description="create missing output topics (sinks, dead letters) with the source's partitions"
    )
    replication_factor: int | None = Field(
        default=None,
        ge=1,
        description=(
            "replication factor of the topics eventray creates (outputs, dead letters, commit markers); "
            "default: the brokers' default.replication.factor"
        ),
    )

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaConnectionConfig:
        uses_sasl = self.security_protocol.startswith("SASL")
        uses_tls = self.security_protocol in ("SSL", "SASL_SSL")
        if uses_sasl and self.sasl is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs a sasl section")
        if self.sasl is not None and not uses_sasl:
            raise ValueError("a sasl section needs security_protocol SASL_SSL (or SASL_PLAINTEXT)")
        if self.tls is not None and not uses_tls:
            raise ValueError("a tls section needs security_protocol SSL or SASL_SSL")
        plain_over_clear = self.sasl is not None and self.sasl.mechanism == "PLAIN" and not uses_tls
        if plain_over_clear and not self.allow_plaintext_sasl:
            raise ValueError(
                "SASL PLAIN without TLS sends the password in clear text: use security_protocol SASL_SSL, "
                "or set allow_plaintext_sasl: true for a test rig"
            )
        return self


class KafkaSourceConfig(ConfigModel):
    """Partitions of one topic, assigned to source actors by the Supervisor (no consumer-group rebalances); or of
    several topics read alike (``topics``): one schema and one chain of operators, each topic its own partitions,
    its own offsets and its own place in the checkpoints, as if each were an input of its own (``each_topic``)."""

    type: Literal["kafka"] = "kafka"
    topic: str = Field(default="", description="the topic to read (or topics, for several)")
    topics: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="several topics with one schema and operators, instead of topic"
    )
    group_id: str | None = Field(default=None, description="offsets are committed here; default eventray-<name>")
    start: Literal["earliest", "latest", "committed", "timestamp"] = "committed"
    start_timestamp_ms: int | None = Field(default=None, ge=0)
    fallback: Literal["earliest", "latest"] = Field(default="earliest", description="when nothing is committed")
    commit_interval_ms: int = Field(default=1_000, ge=10)
    partition_discovery_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _timestamp_when_needed(self) -> KafkaSourceConfig:
        if (self.start == "timestamp") != (self.start_timestamp_ms is not None):
            raise ValueError("start: timestamp goes with start_timestamp_ms (and only then)")
        return self

    @model_validator(mode="after")
    def _topic_or_topics(self) -> KafkaSourceConfig:
        if bool(self.topic) == bool(self.topics):
            given = "both topic and topics are set" if self.topic else "neither topic nor topics is set"
            raise ValueError(f"{given}: name the topic to read in topic, or several topics in topics")
        repeated = sorted({topic for topic in self.topics if self.topics.count(topic) > 1})
        if repeated:
            raise ValueError(f"topics lists {repeated} more than once: list each topic once")
        return self

    def each_topic(self) -> list[KafkaSourceConfig]:
        """This source as one source per topic (itself, for a single topic)."""
        if not self.topics:
            return [self]
        return [self.model_copy(update={"topic": topic, "topics": []}) for topic in self.topics]


class KafkaSinkConfig(ConfigModel):
    """Rows as JSON records to ``topic``; with ``topic_column``, each row to the topic its column names (commands
    to their participants, events by type), which must be one of ``topics``: the topics a sink writes are known
    before it runs (created, granted, verified). A row whose column is null or names no listed topic goes to
    ``topic``, with the header ``eventray.unrouted`` holding what it named: nothing is lost or sent elsewhere."""

    type: Literal["kafka"] = "kafka"
    topic: str = Field(min_length=1, description="the topic of every row, or with topic_column of unrouted rows")
    topic_column: str | None = Field(default=None, description="route each row to the topic this column names")
    topics: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="with topic_column: every topic a row may name"
    )
    key_column: str | None = Field(default=None, description="record key; also picks the partition")
    compacted: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="topics of this sink created with cleanup.policy=compact (the newest record per key is kept)",
    )
    partition_by: Literal["key", "source_partition"] = "key"
    linger_ms: int = Field(default=5, ge=0)
    compression: Literal["none", "gzip", "lz4", "zstd"] = "none"
    format: Literal["json", "avro"] = Field(
        default="json", description="avro: records in the Confluent wire format, with the registry's schema id"
    )
    avro_schema: dict[str, Any] | None = Field(default=None, description="format: avro: the writer record schema")
    registry: RegistryConfig | None = Field(default=None, description="format: avro: where the schema is registered")
    auto_register: bool = Field(
        default=False,
        description=(
            "register the writer schema at start if its subject lacks it (off: `eventray schema register` is the "
            "explicit step, and a sink whose schema is not registered refuses to start)"
        ),
    )

    @model_validator(mode="after")
    def _avro_needs_a_schema_and_a_registry(self) -> KafkaSinkConfig:
        avro_parts = (self.avro_schema is not None, self.registry is not None)
        if self.format == "avro" and not all(avro_parts):
            raise ValueError("format: avro needs avro_schema (the writer record schema) and registry (where it is)")
        if self.format == "json" and any(avro_parts):
            raise ValueError("avro_schema and registry go with format: avro")
        return self

    @model_validator(mode="after")
    def _routes_are_listed(self) -> KafkaSinkConfig:
        if (self.topic_column is None) != (not self.topics):
            raise ValueError(
                "topic_column and topics go together: topic_column names the column, topics every topic a row may "
                "name (rows naming another go to topic)"
            )
        return self

    @model_validator(mode="after")
    def _compacted_are_written(self) -> KafkaSinkConfig:
        unknown = [topic for topic in self.compacted if topic not in self.all_topics]
        if unknown:
            raise ValueError(f"compacted names {unknown}, which this sink does not write: list topics of topic/topics")
        return self

    @property
    def all_topics(self) -> list[str]:
        """Every topic the sink may write: ``topic`` first, then the routes."""
        return list(dict.fromkeys([self.topic, *self.topics]))


class CircuitBreakerConfig(ConfigModel):
    """Halts the pipeline when too much input is invalid (a bad deploy upstream), instead of dead-lettering it
    all."""

    max_invalid_ratio: float = Field(default=0.5, gt=0, le=1)
    window_events: int = Field(default=10_000, ge=1, description="the ratio is over this many recent events")
    min_events: int = Field(default=1_000, ge=1, description="no ratio verdict before this many events")
    max_consecutive_invalid: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _ratio_can_trip(self) -> CircuitBreakerConfig:
        if self.min_events > self.window_events:
            raise ValueError(
                f"min_events ({self.min_events}) exceeds window_events ({self.window_events}): the ratio check "
                "could never run; lower min_events or raise window_events"
            )
        return self


class KafkaDeadLetterConfig(DeadLetterContent):
    type: Literal["kafka"] = "kafka"
    topic: str = Field(min_length=1)
    max_record_bytes: int = Field(
        default=1_000_000,
        ge=4_096,
        description="a dead letter's key, value and headers are trimmed to fit (header eventray.payload_trimmed "
        "says so); at most the topic's max.message.bytes and the producer's max_request_size (1,048,576)",
    )


def resolve_kafka_secrets(connection: KafkaConnectionConfig, environ: Mapping[str, str]) -> KafkaConnectionConfig:
    """Fill in the bootstrap servers and a SASL password from the environment; raise ConfigError if missing."""
    update: dict[str, Any] = {}
    if connection.bootstrap_servers is None:
        # blank counts as unset, as for `eventray kafka` (cluster/kafka_dev)
        update["bootstrap_servers"] = (environ.get("KAFKA_BOOTSTRAP") or "").strip() or DEFAULT_BOOTSTRAP
    sasl = connection.sasl
    if sasl is not None:
        resolved: dict[str, Any] = {}
        if sasl.password_env is not None:
            resolved["password"] = SecretStr(_required_env(environ, sasl.password_env, "password"))
            resolved["password_env"] = None
        if sasl.username_env is not None:
            resolved["username"] = _required_env(environ, sasl.username_env, "username")
            resolved["username_env"] = None
        if resolved:
            update["sasl"] = sasl.model_copy(update=resolved)
    return connection.model_copy(update=update)


def _required_env(environ: Mapping[str, str], name: str, what: str) -> str:
    value = environ.get(name)
    if not value:
        raise ConfigError(
            f"kafka.sasl.{what}_env: environment variable {name} is not set. "
            f"Operator action: export {name} with the SASL {what}"
        )
    return value


def client_options(connection: KafkaConnectionConfig) -> dict[str, Any]:
    """aiokafka keyword arguments for this connection (after :func:`resolve_kafka_secrets`)."""
    options: dict[str, Any] = {
        "bootstrap_servers": connection.bootstrap_servers or DEFAULT_BOOTSTRAP,
        "security_protocol": connection.security_protocol,
        "request_timeout_ms": connection.request_timeout_ms,
    }
    if connection.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = tls_context(connection.tls or TlsConfig())
    if connection.sasl is not None:
        if connection.sasl.password is None:
            raise ConfigError("kafka.sasl: the password was not resolved from password_env")
        options["sasl_mechanism"] = connection.sasl.mechanism
        if connection.sasl.username is None:
            raise ConfigError("kafka.sasl: the username was not resolved from username_env")
        options["sasl_plain_username"] = connection.sasl.username
        options["sasl_plain_password"] = connection.sasl.password.get_secret_value()
    return options
