"""The exceptions eventray raises: one root, two branches, every one of them drawn here.

    EventrayError
    ├── RetriableError                  the operation may succeed if tried again
    │   ├── EpochTimeout                an epoch was not complete in checkpoint.timeout_ms (cluster.control.epochs)
    │   ├── OwnerGone                   the actor asked for a view's keys died; the router asks the next owner
    │   │                               (cluster.control.handles)
    │   ├── NotOwner                    the actor asked for a view's keys does not own them (a rescale moves
    │   │                               them); the router asks again (pipelines.state.queryable)
    │   └── RegistryUnavailable         the schema registry cannot be reached or failed (5xx); a source retries
    │                                   (pipelines.schemas.registry_client)
    ├── RowValueError                   one event's value cannot be processed: that event is dead-lettered with
    │                                   the reason, the others go on (pipelines.transform.row_errors)
    ├── QueryError                      a query of a view cannot be answered; its HTTP status says why
    │   │                               (cluster.cqrs.router)
    │   └── CqrsError                   the gateway or the query router answered an error (cluster.cqrs.client)
    └── FatalError                      retrying will not help; an operator has to act
        ├── ConfigError                 the pipeline config is wrong: names the field path and what is allowed
        │   └── ExpressionError         a filter/derive/check expression cannot be parsed or names unknown columns
        ├── KafkaAccessDenied           Kafka refused the pipeline: TLS, authentication, or a missing ACL
        ├── PipelineHalted              the pipeline stopped itself (a dead-letter circuit breaker tripped)
        ├── PipelineFailed              an actor failed past recovery (cluster.control.supervisor)
        ├── SwitchRefused               a view cannot be switched to a pipeline that publishes no owners of it
        │                               (cluster.cqrs.router)
        ├── RayAuthRefused              the Ray cluster refused this process's token (cluster.control.ray_auth)
        ├── DevBrokerError              the dev Kafka broker could not start or stop (cluster.kafka_dev)
        ├── DevRegistryError            the dev schema registry could not be built, start or stop
        │                               (cluster.schema_registry)
        ├── RegistryError               the schema registry answered an error (pipelines.schemas.registry_client)
        │   ├── SchemaNotFound          it does not know the id, subject or version asked for
        │   └── SchemaRejected          it refused a schema: incompatible with its subject, or invalid
        ├── AvroEncodingError           a sink's row does not fit its Avro writer schema (pipelines.io.avro_rows)
        ├── StateFormatError            keyed state written with another meaning (pipelines.state.keyed_operator)
        ├── ProcessOutputError          a process function emitted rows that do not fit its output_schema
        │                               (pipelines.state.process_output)
        ├── TornSnapshotError           a checkpoint file is incomplete or altered (pipelines.state.checkpoint_store)
        ├── MissingLineageError         checkpoints without their lineage (pipelines.state.checkpoint_store)
        ├── CheckpointWriteError        a checkpoint could not be written (pipelines.state.checkpoint_store)
        ├── SealedValueError            a sealed dead-letter value cannot be opened (pipelines.at_rest)
        └── CheckpointKeyError          a checkpoint key is missing or wrong (pipelines.at_rest)
            └── FileAuthenticationError a file failed its authentication under the key (pipelines.at_rest)

Every exception is picklable (it crosses actor boundaries): constructors take one message string, which is all
that is passed to ``Exception.__init__``. ``tests/unit/test_error_tree.py`` walks the packages and holds this
drawing to them: every exception class is in it, under the parent drawn, and survives a pickle round trip.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EventrayError",
    "ExpressionError",
    "FatalError",
    "KafkaAccessDenied",
    "PipelineHalted",
    "RetriableError",
    "causes",
]


class EventrayError(Exception):
    """Root of every error eventray raises on purpose."""


class RetriableError(EventrayError):
    """The operation may succeed when tried again."""


class FatalError(EventrayError):
    """Retrying will not help: the message says what an operator should do."""


class ConfigError(FatalError):
    """The pipeline configuration is invalid; the message names each field path and the fix."""


class ExpressionError(ConfigError):
    """An expression in the config cannot be parsed or refers to something that does not exist."""


class KafkaAccessDenied(FatalError):
    """Kafka refused the pipeline's connection or one of its operations; the message names the cause (the TLS
    or SASL setting, or the resource and the ACLs it needs)."""


class PipelineHalted(FatalError):
    """The pipeline stopped itself to protect its outputs."""


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it, through Ray's wrapping (``RayTaskError.cause``) and ``__cause__``."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return chain
