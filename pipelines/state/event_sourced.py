"""Event-sourced aggregates: commands decided by the one owner of their aggregate, events and replies emitted.

Kafka has no conditional append (KAFKA-2260), so an event store on it usually needs a lock or a database. Here
exactly one actor owns each key group, so the expected-version check is done by the owner, in memory, and the
events and the reply it decides commit in the same exactly-once epoch as the state that checked them.

Each command row is decided in arrival order (the order of its partition: commands are keyed by aggregate id):

1. a row without an aggregate id or a command id is rejected (a reply says why; nothing is decided);
2. a command id seen within ``command_ttl_ms`` (of event time, after its newest sighting) gets the reply it
   got the first time, marked ``duplicate``, and no events (idempotent commands: a producer's retry, a
   gateway's resend);
3. a set expected version that differs from the aggregate's version is rejected with the version it has;
4. ``decide(state, command, time_ms)`` returns events (dicts with an ``event_type``) or :class:`Rejected`;
   each event is encoded to JSON, decoded again and passed to ``evolve``: so the state after a command is
   exactly the state a replay of the stored events rebuilds. An exception in ``decide`` or ``evolve``, or an
   event that is not a JSON object with an ``event_type``, rejects the command with the error as the reason and
   keeps the state as it was: the data's fault never halts the pipeline, and no half-applied command exists.

The state of an aggregate is stored MessagePack-encoded (as a process function's), so ``decide`` always sees what
it would see after a restore. ``decide`` must be deterministic: it is given the command's event time instead of
reading a clock, so a replay after a crash decides the same.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError
from pipelines.eventtime.watermarks import NO_WATERMARK
from pipelines.state.keyed_operator import Added, StateFormatError, StateMeaning
from pipelines.state.queryable import KeyedValues
from pipelines.state.upcasting import check_upcasters, upcast_state
from pipelines.state.user_code import load_user_object

__all__ = [
    "ACCEPTED",
    "REJECTED",
    "STATE_FORMAT",
    "Aggregate",
    "EventSourced",
    "Rejected",
    "Reply",
    "apply_events",
    "load_aggregate",
    "result_schema",
]

STATE_FORMAT = "event_sourced/1"
ACCEPTED = "accepted"
REJECTED = "rejected"
TIMESTAMP = "_timestamp"
TRACEPARENT = "_traceparent"
_RESULT_FIELDS = (
    pa.field("topic", pa.string()),
    pa.field("command_id", pa.string()),
    pa.field("version", pa.int64()),
    pa.field("event_type", pa.string()),
    pa.field("schema_version", pa.int64()),
    pa.field("data", pa.string()),
    pa.field("status", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("first_version", pa.int64()),
    pa.field("duplicate", pa.bool_()),
)


@dataclass(frozen=True)
class Rejected:
    """What ``decide`` returns to refuse a command (a withdrawal beyond the balance): ``reason`` goes in the reply."""

    reason: str


class Aggregate(Protocol):
    """User code: the state of one aggregate, how commands are decided and how events change the state.

    The state is any MessagePack-encodable value (tuples come back as lists; JSON-encodable for snapshots).
    ``decide`` must not mutate the state it is given and must not read a clock or anything else outside its
    arguments. Optional class attributes name schema versions and upcasters (:mod:`pipelines.state.upcasting`).
    """

    def initial(self) -> Any: ...

    def decide(self, state: Any, command: dict[str, Any], time_ms: int) -> list[dict[str, Any]] | Rejected: ...

    def evolve(self, state: Any, event: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Reply:
    """The outcome of a command, kept while its id is remembered so that a duplicate gets the same.

    ``version``: the aggregate's version after the command (accepted) or the one it has (rejected);
    ``first_version``: the version of the command's first event (None when it emitted none or was rejected).
    """

    status: str
    version: int
    first_version: int | None = None
    reason: str | None = None


class _CommandFailed(Exception):
    """``decide`` or ``evolve`` raised, or an event was malformed: the command is rejected with this reason."""


def result_schema(commands: pa.Schema, key: str) -> pa.Schema:
    """The schema of an event-sourced stage's results: the key column as the commands have it, the envelope of
    events and replies, the command's ``_timestamp``, and its ``_traceparent`` when commands carry one."""
    fields = [commands.field(key), *_RESULT_FIELDS, pa.field(TIMESTAMP, pa.int64())]
    if TRACEPARENT in commands.names:
        fields.append(pa.field(TRACEPARENT, pa.string()))
    return pa.schema(fields)


def apply_events(aggregate: Aggregate, state: Any, events: list[dict[str, Any]]) -> Any:
    """``state`` after ``events`` (as stored: JSON objects with an ``event_type``), the way replay does it: each
    ``evolve`` sees the state as stored (MessagePack-encoded and decoded) after the event before."""
    for event in events:
        state = msgspec.msgpack.decode(msgspec.msgpack.encode(aggregate.evolve(state, event)))
    return state


class EventSourced:
    """Event-sourced aggregates keyed by ``config.key``; implements :class:`KeyedOperator`.

    Contract: :meth:`add` decides every command of the batch in order and returns, per command, its events then
    its reply, in ``Added.output``; rows with a null ``_timestamp`` are returned as ``no_event_time`` (their id
    could not expire). :meth:`advance` forgets command ids whose time + ``command_ttl_ms`` the watermark passed,
    and returns None; :meth:`flush` returns None.
    """

    def __init__(self, config: EventSourcedConfig, aggregate: Aggregate) -> None:
        self._config = config
        self._aggregate = aggregate
        # the path the config names: a redeployed class under the same path reads its checkpoints (its
        # state_version says whether they need upcasting), another class does not
        self._meaning = StateMeaning(
            STATE_FORMAT,
            {"key": config.key, "aggregate": config.aggregate, "command_id_column": config.command_id_column},
        )
        self._schema_versions: dict[str, int] = dict(getattr(aggregate, "schema_versions", {}))
        self._state_version: int = getattr(aggregate, "state_version", 1)
        self._versions: dict[Any, int] = {}
        self._states: dict[Any, bytes] = {}
        self._replies: dict[tuple[Any, str], tuple[int, Reply]] = {}  # (key, command id) -> (time, reply)
        self._expiry: list[tuple[int, Any, str]] = []  # heap of (time, key, command id)
        self._key_type: pa.DataType = pa.null()
        self._watermark_ms = NO_WATERMARK

    @classmethod
    def from_config(cls, config: EventSourcedConfig) -> EventSourced:
        return cls(config, load_aggregate(config.aggregate))

    @property
    def key(self) -> str:
        return self._config.key

    @property
    def watermark_ms(self) -> int:
        return self._watermark_ms

    @property
    def state_rows(self) -> int:
        """Aggregates plus remembered command ids."""
        return len(self._versions) + len(self._replies)

    def version_of(self, key: Any) -> int:
        """The aggregate's version: the number of events it has (0: none yet)."""
        return self._versions.get(key, 0)

    def state_of(self, key: Any) -> Any:
        """The aggregate's state, decoded afresh (``initial()`` when it has no events)."""
        stored = self._states.get(key)
        return self._aggregate.initial() if stored is None else msgspec.msgpack.decode(stored)

    def view(self, frozen: bool) -> KeyedValues:
        """A reader of each aggregate's version and state (``frozen``: of copies later commands do not change)."""
        if frozen:
            return KeyedValues(dict(self._states), self._key_type, dict(self._versions))
        return KeyedValues(self._states, self._key_type, self._versions)

    def add(self, batch: pa.RecordBatch) -> Added:
        if batch.num_rows == 0:
            return Added()
        if self._key_type == pa.null():
            self._key_type = batch.schema.field(self._config.key).type
        has_time = pc.is_valid(batch.column(TIMESTAMP))
        no_event_time = batch.filter(pc.invert(has_time)) if batch.column(TIMESTAMP).null_count else None
        rows = batch.filter(has_time) if no_event_time is not None else batch
        results = _Results(self._config, TRACEPARENT in batch.schema.names)
        for command in rows.to_pylist():
            self._decide(command, results)
        return Added(output=results.table(result_schema(batch.schema, self._config.key)), no_event_time=no_event_time)

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark forward (never back) and forget the command ids it has expired."""
        self._watermark_ms = max(self._watermark_ms, watermark_ms)
        ttl = self._config.command_ttl_ms
        while self._expiry and self._expiry[0][0] + ttl < self._watermark_ms:
            time_ms, key, command_id = heapq.heappop(self._expiry)
            remembered = self._replies.get((key, command_id))
            if remembered is not None and remembered[0] == time_ms:
                del self._replies[(key, command_id)]
        return None

    def flush(self) -> pa.Table | None:
        return None

    def snapshot(self) -> pa.Table:
        """Aggregates and remembered commands as rows of (key, kind, version, value, command_id, time_ms,
        state_version).

        ``kind`` ``"aggregate"``: ``version``, ``value`` (the state, MessagePack) and the class's
        ``state_version`` it was written at (a restore upcasts an older one); ``"command"``: the ``command_id``,
        its ``time_ms`` and ``value`` (its reply, MessagePack)."""
        keys: list[Any] = list(self._versions)
        kinds = ["aggregate"] * len(keys)
        versions: list[int | None] = list(self._versions.values())
        values: list[bytes | None] = [self._states.get(key) for key in keys]
        command_ids: list[str | None] = [None] * len(keys)
        times: list[int | None] = [None] * len(keys)
        state_versions: list[int | None] = [self._state_version] * len(keys)
        for (key, command_id), (time_ms, reply) in self._replies.items():
            keys.append(key)
            kinds.append("command")
            versions.append(None)
            values.append(msgspec.msgpack.encode(reply))
            command_ids.append(command_id)
            times.append(time_ms)
            state_versions.append(None)
        state = pa.table(
            {
                self._config.key: pa.array(keys, self._key_type),
                "kind": pa.array(kinds, pa.string()),
                "version": pa.array(versions, pa.int64()),
                "value": pa.array(values, pa.binary()),
                "command_id": pa.array(command_ids, pa.string()),
                "time_ms": pa.array(times, pa.int64()),
                "state_version": pa.array(state_versions, pa.int64()),
            }
        )
        return self._meaning.tag(state)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace aggregates and remembered commands with (some of the rows of) event-sourced snapshots."""
        self._meaning.check(state)
        columns = [self._config.key, "kind", "version", "value", "command_id", "time_ms"]
        missing = set(columns) - set(state.column_names)
        if missing:
            raise StateFormatError(
                f"event-sourced state lacks column(s) {sorted(missing)}: it was written with another key column. "
                "Operator action: restore with the config that wrote it"
            )
        # versions and states replaced whole at the end: a query reading meanwhile sees the old ones
        versions: dict[Any, int] = {}
        states: dict[Any, bytes] = {}
        self._replies, self._expiry = {}, []
        self._key_type = state.schema.field(self._config.key).type
        self._watermark_ms = watermark_ms
        written_versions = "state_version" in state.column_names
        for row in state.select([*columns, *(["state_version"] if written_versions else [])]).to_pylist():
            key = row[self._config.key]
            if row["kind"] == "aggregate" and row["version"] is not None:
                versions[key] = row["version"]
                if row["value"] is not None:
                    states[key] = self._current_state(row["value"], row.get("state_version") or 1)
            elif row["kind"] == "command" and row["command_id"] is not None and row["time_ms"] is not None:
                reply = msgspec.msgpack.decode(row["value"], type=Reply)
                self._remember(key, row["command_id"], row["time_ms"], reply)
            else:
                raise StateFormatError(
                    f"event-sourced state row of kind {row['kind']!r} is malformed. Operator action: restore from "
                    "another checkpoint, or delete it to rebuild state from input"
                )
        self._versions, self._states = versions, states

    def _current_state(self, stored: bytes, state_version: int) -> bytes:
        """A checkpointed state, brought to the aggregate's ``state_version`` by its state upcasters (a state
        written by a newer class than this one is refused)."""
        if state_version == self._state_version:
            return stored
        try:
            upcast = upcast_state(self._aggregate, msgspec.msgpack.decode(stored), state_version)
        except ConfigError as error:
            raise StateFormatError(f"checkpointed aggregate state: {error}") from None
        return msgspec.msgpack.encode(upcast)

    def _decide(self, command: dict[str, Any], results: _Results) -> None:
        key = command[self._config.key]
        command_id = command.get(self._config.command_id_column)
        time_ms: int = command[TIMESTAMP]
        if key is None or command_id is None:
            missing = self._config.key if key is None else self._config.command_id_column
            reply = Reply(REJECTED, 0 if key is None else self.version_of(key), reason=f"the command has no {missing}")
            results.reply(command, reply, duplicate=False)
            return
        command_id = str(command_id)
        remembered = self._replies.get((key, command_id))
        if remembered is not None:  # remembered for command_ttl_ms after its newest sighting, as dedup does
            results.reply(command, remembered[1], duplicate=True)
            if time_ms > remembered[0]:
                self._remember(key, command_id, time_ms, remembered[1])
            return
        reply = self._try(key, command, time_ms, results)
        self._remember(key, command_id, time_ms, reply)
        results.reply(command, reply, duplicate=False)

    def _try(self, key: Any, command: dict[str, Any], time_ms: int, results: _Results) -> Reply:
        version = self.version_of(key)
        column = self._config.expected_version_column
        expected = None if column is None else command.get(column)
        if expected is not None and expected != version:
            return Reply(REJECTED, version, reason=f"expected version {expected}, but the aggregate is at {version}")
        payload = {name: value for name, value in command.items() if not name.startswith("_")}
        try:
            decided = _call(self._aggregate.decide, "decide", self.state_of(key), payload, time_ms)
            if isinstance(decided, Rejected):
                return Reply(REJECTED, version, reason=decided.reason)
            events = [_stored(event) for event in _as_list(decided)]
            state = _call(apply_events, "evolve", self._aggregate, self.state_of(key), [e for e, _ in events])
            encoded = _call(msgspec.msgpack.encode, "encoding the state", state)
        except _CommandFailed as failure:
            return Reply(REJECTED, version, reason=str(failure))
        if not events:
            return Reply(ACCEPTED, version)
        self._states[key] = encoded
        self._versions[key] = version + len(events)
        for offset, (event, data) in enumerate(events, start=1):
            event_type = event["event_type"]
            results.event(command, version + offset, event_type, self._schema_versions.get(event_type, 1), data)
        every = self._config.snapshot_every
        if every is not None and (version + len(events)) // every > version // every:
            self._snapshot_row(command, version + len(events), state, results)
        return Reply(ACCEPTED, version + len(events), first_version=version + 1)

    def _snapshot_row(self, command: dict[str, Any], version: int, state: Any, results: _Results) -> None:
        """A snapshot of ``state`` as JSON, if JSON holds it exactly: a state JSON would change (integer keys
        become text, bytes base64, NaN null) gets none, and replays start from an earlier one or the first event."""
        try:
            text = msgspec.json.encode(state).decode()
        except (TypeError, msgspec.EncodeError):
            return
        if msgspec.json.decode(text) == state:
            results.snapshot(command, version, self._state_version, text)

    def _remember(self, key: Any, command_id: str, time_ms: int, reply: Reply) -> None:
        self._replies[(key, command_id)] = (time_ms, reply)
        heapq.heappush(self._expiry, (time_ms, key, command_id))


class _Results:
    """The rows an :meth:`EventSourced.add` emits, gathered column by column."""

    def __init__(self, config: EventSourcedConfig, carry_trace: bool) -> None:
        self._config = config
        self._carry_trace = carry_trace
        self._columns: dict[str, list[Any]] = {name: [] for name in self._names()}

    def _names(self) -> list[str]:
        names = [self._config.key, *(field.name for field in _RESULT_FIELDS), TIMESTAMP]
        return [*names, TRACEPARENT] if self._carry_trace else names

    def event(self, command: dict[str, Any], version: int, event_type: str, schema_version: int, data: str) -> None:
        self._row(command, self._config.events_topic, version, event_type, schema_version, data, None, None, None, None)

    def snapshot(self, command: dict[str, Any], version: int, state_version: int, data: str) -> None:
        topic = self._config.snapshots_topic
        self._row(command, topic, version, None, state_version, data, None, None, None, None)

    def reply(self, command: dict[str, Any], reply: Reply, duplicate: bool) -> None:
        self._row(
            command, self._config.replies_topic, reply.version, None, None, None,
            reply.status, reply.reason, reply.first_version, duplicate,
        )  # fmt: skip

    def _row(self, command: dict[str, Any], topic: str, *envelope: Any) -> None:
        command_id = command.get(self._config.command_id_column)
        values = [command[self._config.key], topic, None if command_id is None else str(command_id), *envelope]
        values.append(command[TIMESTAMP])
        if self._carry_trace:
            values.append(command.get(TRACEPARENT))
        for column, value in zip(self._columns.values(), values, strict=True):
            column.append(value)

    def table(self, schema: pa.Schema) -> pa.Table | None:
        if not self._columns[TIMESTAMP]:
            return None
        return pa.table({name: pa.array(values, schema.field(name).type) for name, values in self._columns.items()})


def _stored(event: Any) -> tuple[dict[str, Any], str]:
    """An event as it is stored and as ``evolve`` and a replay see it: its JSON object decoded again, and the
    JSON text of its data (every field but ``event_type``)."""
    if not isinstance(event, dict) or not isinstance(event.get("event_type"), str) or not event["event_type"]:
        raise _CommandFailed(f"decide returned an event that is not a dict with a text event_type: {event!r:.200}")
    data = {name: value for name, value in event.items() if name != "event_type"}
    try:
        text = msgspec.json.encode(data).decode()
    except (TypeError, msgspec.EncodeError) as error:
        raise _CommandFailed(f"event {event['event_type']} cannot be stored as JSON: {error}") from None
    return {"event_type": event["event_type"], **msgspec.json.decode(text)}, text


def _as_list(decided: Any) -> list[Any]:
    if isinstance(decided, list | tuple):
        return list(decided)
    raise _CommandFailed(f"decide returned {type(decided).__name__}: return a list of events or Rejected(reason)")


def _call(function: Callable[..., Any], what: str, *arguments: Any) -> Any:
    try:
        return function(*arguments)
    except _CommandFailed:
        raise
    except Exception as error:  # noqa: BLE001 - user code: the command is refused, the pipeline goes on
        raise _CommandFailed(f"{what} raised {type(error).__name__}: {error}") from None


def load_aggregate(path: str) -> Aggregate:
    """Import ``module:attr`` and call it with no arguments to get a fresh :class:`Aggregate`.

    Raises :class:`ConfigError` naming the path when the module, the attribute or the methods are missing.
    """
    aggregate: Aggregate = load_user_object(path, "aggregate", ("initial", "decide", "evolve"))
    check_upcasters(aggregate)
    return aggregate
