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
row, in order (it may add, drop or convert columns, or rename the type: the chain is the one of the type the
event was stored under). :func:`upcast_events` groups stored events by (type, version), runs each group through
its chain in one call per step, and puts the rows back in their order, so a log mixing versions replays as if
it were written at the newest. A group's columns are every field its rows have, typed over all values (a
field some rows lack is null in them; integers mixed with floats become floats). A chain with a missing step is
refused when the aggregate is checked (:func:`check_upcasters`), before any event is read, and so is an event or
a state of a version newer than the class knows.
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
    """Raise :class:`ConfigError` naming every missing step: for each event type with upcasters, one from every
    version below its current one (a type without upcasters, a renamed one say, began at its current version);
    for each (type, version) in ``seen`` (stored events), every step to the current version
    and no version beyond it; for the state, an upcaster from every older state version."""
    current = _schema_versions(aggregate)
    upcasters = _event_upcasters(aggregate)
    upcast_types = {event_type for event_type, _ in upcasters}
    missing = [
        f"upcasters[({event_type!r}, {version})]"
        for event_type, newest in sorted(current.items())
        for version in range(1 if event_type in upcast_types else newest, newest)  # no upcasters: began at newest
        if (event_type, version) not in upcasters
    ]
    for event_type, version in sorted(seen or ()):
        newest = current.get(event_type, 1)
        if version > newest:
            missing.append(f"schema_versions[{event_type!r}] >= {version} (events of version {version} are stored)")
        missing += [f"upcasters[({event_type!r}, {v})]" for v in range(version, newest) if (event_type, v) not in
                    upcasters and f"upcasters[({event_type!r}, {v})]" not in missing]  # fmt: skip
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
        if version != current.get(event["event_type"], 1):
            groups[(event["event_type"], version)].append(index)
    if not groups:
        return events
    check_upcasters(aggregate, set(groups))  # a version newer than the class knows is refused here
    upcasters = _event_upcasters(aggregate)
    upcast = list(events)
    for (event_type, version), indexes in groups.items():
        table = _table([{"event_type": event_type, **_data(events[index])} for index in indexes])
        for step in range(version, current[event_type]):
            table = _step(upcasters[(event_type, step)], table, event_type, step)
        for index, row in zip(indexes, table.to_pylist(), strict=True):
            new_type = row.pop("event_type")
            upcast[index] = {**events[index], "event_type": new_type, "schema_version": current[event_type],
                             "data": msgspec.json.encode(row).decode()}  # fmt: skip
    return upcast


def upcast_state(aggregate: object, state: Any, version: int) -> Any:
    """A snapshot's ``state`` written at state version ``version``, brought to the aggregate's; a version newer
    than the aggregate's is refused (an older class cannot read what a newer one wrote)."""
    if version > _state_version(aggregate):
        raise ConfigError(
            f"state of version {version} is newer than aggregate {type(aggregate).__qualname__} reads "
            f"(state_version {_state_version(aggregate)}): use the class that wrote it"
        )
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


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a table whose columns are every field any row has (in order of first appearance), each typed from
    all its values: a field the first row lacks is kept (null where a row lacks it). Values Arrow cannot hold in
    one column (a number in some rows, text in others) raise :class:`ConfigError` naming the field."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    return pa.table({name: _column(rows, name) for name in names})


def _column(rows: list[dict[str, Any]], name: str) -> pa.Array:
    try:
        return pa.array([row.get(name) for row in rows])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ConfigError(f"field {name!r} of {rows[0]['event_type']} events mixes types an upcaster's column "
                          f"cannot hold: {error}") from None  # fmt: skip


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
