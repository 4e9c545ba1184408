"""Avro schemas of events: compatibility between versions (:mod:`pipelines.schemas.avro_compatibility`), and the
registry, the wire format and the resolution of writer schemas to a reader's columns in the modules beside it."""

from pipelines.schemas.avro_compatibility import (
    AvroSchema,
    Compatibility,
    DeployFirst,
    Direction,
    Incompatibility,
    IncompatibilityKind,
    check_against_versions,
    check_can_read,
)

__all__ = [
    "AvroSchema",
    "Compatibility",
    "DeployFirst",
    "Direction",
    "Incompatibility",
    "IncompatibilityKind",
    "check_against_versions",
    "check_can_read",
]
