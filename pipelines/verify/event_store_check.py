"""The event store's checker: the events and replies an event-sourced stage wrote, against a sequential
recomputation of the commands it took.

:func:`recompute_event_store` runs the commands one by one through the user's aggregate in plain Python (a dict
per aggregate, one loop), sharing nothing with :mod:`pipelines.state.event_sourced` but the aggregate itself:
it is the reference a correct run must equal whatever the partition counts, actor counts, kills and replays.
:func:`check_event_store` compares what was read from the events and replies topics with it: per aggregate,
versions contiguous from 1, each once, each event the one the reference decided (type, data, command); each
reply once with the reference's outcome. Rejection reasons are not compared (their wording is the operator's).

Commands are given in the order the stage took them per aggregate: a topic keyed by aggregate id has each
aggregate's commands in one partition, in offset order. Command ids are taken as remembered for the whole run
(the check assumes no id repeats after ``command_ttl_ms``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipelines.config.state import EventSourcedConfig
from pipelines.state.event_sourced import ACCEPTED, REJECTED, Aggregate, Rejected
from pipelines.verify.delivery_check import Finding

__all__ = ["CommandReply", "EventStoreReport", "StoredEvent", "check_event_store", "recompute_event_store"]


@dataclass(frozen=True)
class StoredEvent:
    """An event as the events topic holds it; ``data`` is its JSON object (``event_type`` left out)."""

    aggregate_id: Any
    version: int
    event_type: str
    data: Any
    command_id: str

    @classmethod
    def of_row(cls, row: dict[str, Any], event_type: str | None = None) -> StoredEvent:
        """An event (or, with ``event_type``, a snapshot) as a sink wrote it: its ``data`` decoded."""
        return cls(row["aggregate_id"], row["version"], event_type or row["event_type"],
                   msgspec.json.decode(row["data"]), row["command_id"])  # fmt: skip

    @property
    def name(self) -> str:
        return f"{self.aggregate_id}@v{self.version}"


@dataclass(frozen=True)
class CommandReply:
    """A reply as the replies topic holds it, without its reason."""

    aggregate_id: Any
    command_id: str | None
    status: str
    version: int
    first_version: int | None
    duplicate: bool

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> CommandReply:
        """A reply as a sink wrote it."""
        return cls(row["aggregate_id"], row["command_id"], row["status"], row["version"], row["first_version"],
                   row["duplicate"])  # fmt: skip

    @property
    def name(self) -> str:
        return f"{self.aggregate_id}/{self.command_id}"


@dataclass(frozen=True)
class EventStoreReport:
    """What :func:`check_event_store` found; every finding empty means the store equals the reference."""

    aggregates: int
    expected_events: int
    events: int
    expected_replies: int
    replies: int
    lost: Finding = field(default_factory=Finding)
    duplicated: Finding = field(default_factory=Finding)
    wrong: Finding = field(default_factory=Finding)
    gaps: Finding = field(default_factory=Finding)
    out_of_order: Finding = field(default_factory=Finding)
    replies_lost: Finding = field(default_factory=Finding)
    replies_duplicated: Finding = field(default_factory=Finding)
    replies_wrong: Finding = field(default_factory=Finding)
    snapshots_wrong: Finding = field(default_factory=Finding)

    def failures(self) -> list[str]:
        """One line per kind of fault found (empty: the store is right)."""
        findings = {
            "event(s) lost": self.lost,
            "event(s) written more than once": self.duplicated,
            "event(s) other than the reference decided": self.wrong,
            "aggregate(s) whose versions are not contiguous from 1": self.gaps,
            "aggregate(s) whose events are not in version order in their partition": self.out_of_order,
            "reply(ies) lost": self.replies_lost,
            "reply(ies) written more than once": self.replies_duplicated,
            "reply(ies) with another outcome than the reference": self.replies_wrong,
            "snapshot(s) holding another state than the reference's at their version": self.snapshots_wrong,
        }
        return [
            f"{finding.count} {what}, e.g. {', '.join(finding.examples)}"
            for what, finding in findings.items()
            if finding.count
        ]


def recompute_event_store(
    aggregate: Aggregate,
    commands: Iterable[dict[str, Any]],
    config: EventSourcedConfig,
    states_after: dict[tuple[Any, int], Any] | None = None,
) -> tuple[list[StoredEvent], list[CommandReply]]:
    """The events and replies of ``commands`` (rows with ``_timestamp``, in the order taken per aggregate)
    decided one at a time; rows without a ``_timestamp`` are dead-lettered by the stage, so left out here.
    ``states_after``, when given, gets each aggregate's state after each command that emitted events, by
    (aggregate, version): what a snapshot at that version must hold."""
    states: dict[Any, bytes] = {}
    versions: dict[Any, int] = defaultdict(int)
    outcomes: dict[tuple[Any, str], CommandReply] = {}
    events: list[StoredEvent] = []
    replies: list[CommandReply] = []
    for command in commands:
        if command.get("_timestamp") is None:
            continue
        key, command_id = command[config.key], command.get(config.command_id_column)
        if key is None or command_id is None:
            replies.append(
                CommandReply(key, command_id, REJECTED, versions[key] if key is not None else 0, None, False)
            )
            continue
        command_id = str(command_id)
        if (key, command_id) in outcomes:
            first = outcomes[(key, command_id)]
            replies.append(CommandReply(key, command_id, first.status, first.version, first.first_version, True))
            continue
        decided = _decide(aggregate, states, versions[key], key, command, config)
        version = versions[key]
        if decided is None:
            reply = CommandReply(key, command_id, REJECTED, version, None, False)
        else:
            new_state, stored = decided
            for offset, (event_type, data) in enumerate(stored, start=1):
                events.append(StoredEvent(key, version + offset, event_type, data, command_id))
            if stored:
                states[key] = new_state
                versions[key] = version + len(stored)
                if states_after is not None:
                    states_after[(key, versions[key])] = msgspec.msgpack.decode(new_state)
            reply = CommandReply(key, command_id, ACCEPTED, versions[key], version + 1 if stored else None, False)
        outcomes[(key, command_id)] = reply
        replies.append(reply)
    return events, replies


def _decide(
    aggregate: Aggregate, states: dict[Any, bytes], version: int, key: Any, command: dict[str, Any],
    config: EventSourcedConfig,
) -> tuple[bytes, list[tuple[str, Any]]] | None:  # fmt: skip
    """The new stored state and the events (type, JSON data) of an accepted command; None if it is rejected."""
    expected = None if config.expected_version_column is None else command.get(config.expected_version_column)
    if expected is not None and expected != version:
        return None

    def state() -> Any:
        stored = states.get(key)
        return aggregate.initial() if stored is None else msgspec.msgpack.decode(stored)

    payload = {name: value for name, value in command.items() if not name.startswith("_")}
    try:
        decided = aggregate.decide(state(), payload, command["_timestamp"])
        if isinstance(decided, Rejected) or not isinstance(decided, list | tuple):
            return None  # the stage takes a list (or tuple) of events, or Rejected
        stored: list[tuple[str, Any]] = []
        current = state()
        for event in decided:
            if not isinstance(event, dict) or not isinstance(event.get("event_type"), str) or not event["event_type"]:
                return None
            data = msgspec.json.decode(msgspec.json.encode({k: v for k, v in event.items() if k != "event_type"}))
            stored.append((event["event_type"], data))
            current = aggregate.evolve(current, {"event_type": event["event_type"], **data})
            current = msgspec.msgpack.decode(msgspec.msgpack.encode(current))  # as stored after each event
        return msgspec.msgpack.encode(current), stored
    except Exception:  # noqa: BLE001 - the stage rejects a command whose user code fails; so does the reference
        return None


def check_event_store(
    expected_events: list[StoredEvent],
    expected_replies: list[CommandReply],
    events: list[StoredEvent],
    replies: list[CommandReply],
    max_examples: int = 5,
    *,
    ordered: bool = True,
    snapshots: list[StoredEvent] | None = None,
    states_after: dict[tuple[Any, int], Any] | None = None,
) -> EventStoreReport:
    """Compare ``events`` and ``replies`` with the reference; counts are kept, so an event lost and another
    written twice do not cancel out. ``ordered``: ``events`` are as read from their partitions (a Kafka topic),
    so each aggregate's first occurrences must come in version order (files are not read in write order, so
    leave it False for them). ``snapshots`` (rows whose ``data`` is the state, as decoded JSON) are checked
    against ``states_after`` (from :func:`recompute_event_store`): a snapshot that holds another state is wrong
    (one that is missing is not: a compacted topic keeps only the newest)."""
    expected = {(event.aggregate_id, event.version): event for event in expected_events}
    written = Counter((event.aggregate_id, event.version) for event in events)
    lost = [expected[place].name for place in expected if place not in written]
    duplicated = [f"{key}@v{version}" for (key, version), count in written.items() if count > 1]
    wrong = [event.name for event in events if expected.get((event.aggregate_id, event.version)) != event]
    read_versions: dict[Any, list[int]] = defaultdict(list)
    for event in events:
        read_versions[event.aggregate_id].append(event.version)
    gaps = [str(key) for key, seen in read_versions.items() if sorted(set(seen)) != list(range(1, max(seen) + 1))]
    firsts = {key: list(dict.fromkeys(seen)) for key, seen in read_versions.items()}
    out_of_order = [str(key) for key, seen in firsts.items() if ordered and seen != sorted(seen)]
    wrong_snapshots = [
        snapshot.name
        for snapshot in snapshots or []
        if states_after is not None
        and (snapshot.aggregate_id, snapshot.version) in states_after
        and states_after[(snapshot.aggregate_id, snapshot.version)] != snapshot.data
    ]
    replies_lost, replies_duplicated, replies_wrong = _compare_replies(expected_replies, replies)
    return EventStoreReport(
        aggregates=len({event.aggregate_id for event in expected_events}),
        expected_events=len(expected_events),
        events=len(events),
        expected_replies=len(expected_replies),
        replies=len(replies),
        lost=Finding.of(lost, max_examples),
        duplicated=Finding.of(duplicated, max_examples),
        wrong=Finding.of(wrong, max_examples),
        gaps=Finding.of(gaps, max_examples),
        out_of_order=Finding.of(out_of_order, max_examples),
        replies_lost=Finding.of(replies_lost, max_examples),
        replies_duplicated=Finding.of(replies_duplicated, max_examples),
        replies_wrong=Finding.of(replies_wrong, max_examples),
        snapshots_wrong=Finding.of(wrong_snapshots, max_examples),
    )


def _compare_replies(
    expected: list[CommandReply], replies: list[CommandReply]
) -> tuple[list[str], list[str], list[str]]:
    """The commands whose replies were lost, written more than once, or other than the reference's."""
    wanted: dict[str, Counter[CommandReply]] = defaultdict(Counter)
    got: dict[str, Counter[CommandReply]] = defaultdict(Counter)
    for reply in expected:
        wanted[reply.name][reply] += 1
    for reply in replies:
        got[reply.name][reply] += 1
    lost, duplicated, wrong = [], [], []
    for name in wanted.keys() | got.keys():
        if wanted[name] == got[name]:
            continue
        if got[name] <= wanted[name]:  # none, or fewer (a duplicate's reply lost): lost
            lost.append(name)
        elif wanted[name] <= got[name] and set(got[name] - wanted[name]) <= set(wanted[name]):  # re-written
            duplicated.append(name)
        else:
            wrong.append(name)
    return lost, duplicated, wrong
