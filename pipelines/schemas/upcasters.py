"""Upcasters of an input read through a registry: what resolution cannot say, per (event type, version).

Avro resolution brings every writer version to the reader's *shape* (renames, defaults, widened numbers). A
change of *meaning* — an amount in euros in v1 and in cents from v2, a status code renamed — needs code. The
input names a mapping in ``schema.registry.upcasters`` (``package.module:UPCASTERS``), the same form an event-
sourced aggregate's ``upcasters`` has (:mod:`pipelines.state.upcasting`)::

    UPCASTERS = {("OrderPlaced", 1): euros_to_cents,   # (record name, subject version) -> v to v + 1
                 ("OrderPlaced", 2): ...}

Each function takes the records of one type and version as an Arrow table (an ``event_type`` column, the record's
name, then the input's columns, already resolved) and returns the table of the next version, one row per row in
order. Records of version v go through the functions of v, v + 1, ... as far as the chain goes, in one call per
step per fetch, so a topic mixing v1, v2 and v3 reads as the newest meaning. The version is the one the writer's
schema has under the topic's subject (asked of the registry once per schema id, only when upcasters are set).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from pipelines.errors import ConfigError
from pipelines.state.upcasting import EventUpcaster
from pipelines.state.user_code import import_user_attribute

__all__ = ["EVENT_TYPE_COLUMN", "UPCAST_ERROR", "Upcasters", "load_upcasters", "upcast_group"]

UPCAST_ERROR = "upcast"
EVENT_TYPE_COLUMN = "event_type"
Upcasters = Mapping[tuple[str, int], EventUpcaster]


def load_upcasters(path: str) -> Upcasters:
    """The mapping ``path`` names, checked: keys (record name, version >= 1), values callable."""
    found = import_user_attribute(path, "schema.registry.upcasters")
    if not isinstance(found, Mapping):
        raise ConfigError(f"schema.registry.upcasters {path!r} is a {type(found).__name__}; expected a dict "
                          "{(record name, version): function}")  # fmt: skip
    for key, function in found.items():
        valid_key = isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str) and isinstance(key[1], int)
        if not valid_key or key[1] < 1:
            raise ConfigError(f"schema.registry.upcasters {path!r}: key {key!r} is not (record name, version >= 1)")
        if not callable(function):
            raise ConfigError(f"schema.registry.upcasters {path!r}: {key!r} maps to a {type(function).__name__}, "
                              "not a function")  # fmt: skip
    return dict(found)


def upcast_group(upcasters: Upcasters, record_name: str, version: int, table: pa.Table) -> pa.Table:
    """``table`` (the records of one type and version) through the chain from ``version`` on, in the columns
    and types it came in. Raises ValueError naming the step for a function that fails or returns another
    number of rows or columns that do not convert back (the caller dead-letters the group with the reason)."""
    name = record_name.rsplit(".", 1)[-1]
    step = version
    if (name, step) not in upcasters:
        return table
    names = pa.array([name] * table.num_rows, pa.string())
    typed = EVENT_TYPE_COLUMN in table.column_names  # the input's own type column (registry.type_column)
    if typed:
        current = table.set_column(table.schema.get_field_index(EVENT_TYPE_COLUMN), EVENT_TYPE_COLUMN, names)
    else:
        current = table.add_column(0, EVENT_TYPE_COLUMN, names)
    while (name, step) in upcasters:
        try:
            upcast: Any = upcasters[(name, step)](current)
        except Exception as error:  # noqa: BLE001 - user code: its records are dead letters, with why
            raise ValueError(f"upcaster ({name}, {step}) failed: {type(error).__name__}") from None
        if not isinstance(upcast, pa.Table) or upcast.num_rows != current.num_rows:
            rows = upcast.num_rows if isinstance(upcast, pa.Table) else type(upcast).__name__
            raise ValueError(f"upcaster ({name}, {step}) returned {rows} rows for {current.num_rows}")
        current, step = upcast, step + 1
    columns = [
        table.column(field.name)
        if typed and field.name == EVENT_TYPE_COLUMN
        else _column_back(current, field, name, version)
        for field in table.schema
    ]  # the type column keeps what the input holds (the record's full name), whatever the upcasters did
    return pa.Table.from_arrays(columns, schema=table.schema)


def _column_back(upcast: pa.Table, field: pa.Field, name: str, version: int) -> pa.ChunkedArray:
    """Column ``field`` of the upcast table, in the type it came in; ValueError naming it if it cannot be."""
    try:
        return upcast.column(field.name).cast(field.type)
    except KeyError:
        raise ValueError(f"upcasters of {name} from version {version} dropped column {field.name!r}") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise ValueError(
            f"upcasters of {name} from version {version} left column {field.name!r} that is not {field.type} "
            f"({type(error).__name__})"
        ) from None
