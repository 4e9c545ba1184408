"""Rebuilding an event-sourced aggregate from its stored events: to a version, or as of a time.

An event as stored (:mod:`pipelines.state.event_sourced`) is a row with ``version``, ``event_type``, ``data``
(its fields as JSON text) and ``_timestamp`` (the time of the command that decided it). A replay folds them in
version order through the aggregate's ``evolve``, exactly as the live stage did, so the state it rebuilds is the
state the stage had after that version. Rows are given in any order; a version stored twice (an at-least-once
sink) is taken once, and a missing version stops the replay before it, with the reason. Events of an older
schema version are upcast first (:mod:`pipelines.state.upcasting`); a replay may start from a snapshot (the state
at a version, upcast to the aggregate's state version) instead of the first event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipelines.state.event_sourced import Aggregate
from pipelines.state.upcasting import upcast_events, upcast_state

__all__ = ["Replayed", "replay_history"]


@dataclass(frozen=True)
class Step:
    """One event folded in: its version, type, data, time, and the state after it."""

    version: int
    event_type: str
    data: Any
    time_ms: int | None
    state: Any


@dataclass(frozen=True)
class Replayed:
    """The state rebuilt, the version it is at (0: no event), each step when asked for, and what was wrong with
    the stored history (versions stored twice, a missing version)."""

    state: Any
    version: int
    steps: tuple[Step, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)
    from_snapshot: int | None = None  # the version of the snapshot it started from (None: from the first event)


def replay_history(
    aggregate: Aggregate,
    events: list[dict[str, Any]],
    to_version: int | None = None,
    as_of_ms: int | None = None,
    keep_steps: bool = False,
    snapshots: list[dict[str, Any]] | None = None,
) -> Replayed:
    """``aggregate``'s state after its events up to ``to_version`` and at or before ``as_of_ms`` (each when
    given), starting from the newest of ``snapshots`` within both (rows with ``version``, ``data`` and
    ``schema_version``, the state version); ``keep_steps``: with the state after each event."""
    by_version: dict[int, dict[str, Any]] = {}
    repeated = 0
    for event in sorted(events, key=lambda row: row["version"]):
        if event["version"] in by_version:
            repeated += 1
        else:
            by_version[event["version"]] = event
    problems = [f"{repeated} event(s) are stored more than once (each version is replayed once)"] if repeated else []
    if as_of_ms is not None:  # the replay stops before the first event (in version order) after the time: a
        # snapshot beyond that version is not a start, whatever its own time (commands' times need not be ordered)
        later = [n for n in sorted(by_version) if (by_version[n].get("_timestamp") or 0) > as_of_ms]
        if later:
            to_version = later[0] - 1 if to_version is None else min(to_version, later[0] - 1)
    start = _newest_snapshot(snapshots or [], to_version)
    if start is None:
        state, version = aggregate.initial(), 0
    else:
        state = upcast_state(aggregate, msgspec.json.decode(start["data"]), start.get("schema_version") or 1)
        version = start["version"]
    due = upcast_events(aggregate, [by_version[number] for number in sorted(by_version) if number > version])
    steps = []
    for event in due:
        number = event["version"]
        if to_version is not None and number > to_version:
            break
        if number != version + 1:
            problems.append(f"version {version + 1} is missing from the store: the replay stops at {version}")
            break
        data = msgspec.json.decode(event["data"]) if event.get("data") else {}
        state = aggregate.evolve(state, {"event_type": event["event_type"], **data})
        state = msgspec.msgpack.decode(msgspec.msgpack.encode(state))  # as the live stage stores it
        version = number
        if keep_steps:
            steps.append(Step(number, event["event_type"], data, event.get("_timestamp"), state))
    if to_version is not None and as_of_ms is None and version < to_version and not problems:
        problems.append(f"the aggregate has {version} event(s): version {to_version} does not exist yet")
    return Replayed(state, version, tuple(steps), tuple(problems), None if start is None else start["version"])


def _newest_snapshot(snapshots: list[dict[str, Any]], to_version: int | None) -> dict[str, Any] | None:
    fitting = [snapshot for snapshot in snapshots if to_version is None or snapshot["version"] <= to_version]
    return max(fitting, key=lambda snapshot: snapshot["version"], default=None)
