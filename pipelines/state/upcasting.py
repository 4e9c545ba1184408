"""Upcasters: stored events and snapshots of older schema versions brought to the version the aggregate reads.

An aggregate class says what it writes and how older versions become newer, in optional class attributes::

    class Account:
        schema_versions = {"Deposited": 3}          # the version decide writes now (default 1)
        upcasters = {("Deposited", 1): v1_to_v2,    # (event type, version) -> that version to the next
                     ("Deposited", 2): v2_to_v3}
        state_version = 2                           # the version of the state a snapshot holds (default 1)
        state_upcasters = {1: state_v1_to_v2}       # a snapshot's state at that version -> the next

An event upcaster is column-wise: it takes the events of one type and version as an Arrow table (an
``event_type`` column, then one column per data field) and returns the table at the next version, one row per
row, in order (it may rename the type, add, drop or convert columns). :func:`upcast_events` groups stored events
by (type, version), runs each group through its chain in one call per step, and puts the rows back in their
order, so a log mixing versions replays as if it were written at the newest. A chain with a missing step is
refused when the aggregate is checked (:func:`check_upcasters`), before any event is read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
import pyarrow as pa

from pipelines.errors import ConfigError

__all__ = ["EventUpcaster", "StateUpcaster", "check_upcasters", "upcast_events", "upcast_state"]

EventUpcaster = Callable[[pa.Table], pa.Table]
StateUpcaster = Callable[[Any], Any]


def check_upcasters(aggregate: object, seen: set[tuple[str, int]] | None = None) -> None:
    """Raise :class:`ConfigError` naming every missing step: for each event type with a current version above 1
    (and each (type, version) in ``seen``), an upcaster from every older version; for the state, likewise."""
    current = _schema_versions(aggregate)
    upcasters = _event_upcasters(aggregate)
    missing = [
        f"upcasters[({event_type!r}, {version})]"
        for event_type, newest in sorted(current.items())
        for version in range(1, newest)
        if (event_type, version) not in upcasters
    ]
    for event_type, version in sorted(seen or ()):
        newest = current.get(event_type, 1)
        if version > newest:
            missing.append(f"schema_versions[{event_type!r}] >= {version} (events of version {version} are stored)")
    state_steps = _state_upcasters(aggregate)
    missing += [f"state_upcasters[{v}]" for v in range(1, _state_version(aggregate)) if v not in state_steps]
    if missing:
        name = type(aggregate).__qualname__
        raise ConfigError(f"aggregate {name} lacks {', '.join(missing)}: add them, each to the next version")


def upcast_events(aggregate: object, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` (stored rows with ``event_type``, ``schema_version`` and ``data`` as JSON text), those of an
    older version upcast to the current one, in the same order; rows already current are returned as they are."""
    current = _schema_versions(aggregate)
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for index, event in enumerate(events):
        version = event.get("schema_version") or 1
        if version < current.get(event["event_type"], 1):
            groups[(event["event_type"], version)].append(index)
    if not groups:
        return events
    check_upcasters(aggregate, set(groups))
    upcasters = _event_upcasters(aggregate)
    upcast = list(events)
    for (event_type, version), indexes in groups.items():
        rows = [{"event_type": event_type, **_data(events[index])} for index in indexes]
        table = pa.Table.from_pylist(rows)
        for step in range(version, current[event_type]):
            table = _step(upcasters[(event_type, step)], table, event_type, step)
        for index, row in zip(indexes, table.to_pylist(), strict=True):
            new_type = row.pop("event_type")
            upcast[index] = {**events[index], "event_type": new_type, "schema_version": current[event_type],
                             "data": msgspec.json.encode(row).decode()}  # fmt: skip
    return upcast


def upcast_state(aggregate: object, state: Any, version: int) -> Any:
    """A snapshot's ``state`` written at state version ``version``, brought to the aggregate's."""
    steps = _state_upcasters(aggregate)
    for step in range(version, _state_version(aggregate)):
        if step not in steps:
            raise ConfigError(f"aggregate {type(aggregate).__qualname__} lacks state_upcasters[{step}]")
        state = steps[step](state)
    return state


def _step(upcaster: EventUpcaster, table: pa.Table, event_type: str, version: int) -> pa.Table:
    result = upcaster(table)
    if not isinstance(result, pa.Table) or result.num_rows != table.num_rows or "event_type" not in result.column_names:
        raise ConfigError(
            f"upcasters[({event_type!r}, {version})] must return a table of as many rows ({table.num_rows}), with "
            "the event_type column"
        )
    return result


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    decoded: dict[str, Any] = msgspec.json.decode(data) if data else {}
    return decoded


def _schema_versions(aggregate: object) -> dict[str, int]:
    return dict(getattr(aggregate, "schema_versions", {}))


def _event_upcasters(aggregate: object) -> dict[tuple[str, int], EventUpcaster]:
    return dict(getattr(aggregate, "upcasters", {}))


def _state_version(aggregate: object) -> int:
    return int(getattr(aggregate, "state_version", 1))


def _state_upcasters(aggregate: object) -> dict[int, StateUpcaster]:
    return dict(getattr(aggregate, "state_upcasters", {}))
