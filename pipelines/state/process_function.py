"""The keyed process function: user code with per-key value state and timers.

This is the primitive that event-sourced aggregates, projections and sagas are built on. The operator groups
each batch by key column-wise and calls :meth:`ProcessFunction.process` once per key with that key's rows (in
arrival order; keys in order of first appearance); user code reads and writes the key's value and registers
timers through a :class:`ProcessContext`. Event-time timers fire when :meth:`KeyedProcess.advance` moves the
watermark to or past them; processing-time timers fire when the caller's clock, passed to
:meth:`KeyedProcess.advance_processing_time`, reaches them. Timers fire in (time, key) order, and a timer
registered by a timer callback fires in the same call if it is already due (so a callback that keeps
registering due timers never returns: that is a bug in the function).

A value is stored msgspec-encoded (MessagePack) the moment it is set, so what user code reads back is exactly
what it would read after a restore (tuples come back as lists), a value that cannot be encoded fails at
:meth:`ValueState.set`, and later mutation of the object set does not change state behind the operator's back.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.state import KeyedProcessConfig
from pipelines.eventtime.watermarks import END_OF_TIME_MS, NO_WATERMARK
from pipelines.state.keyed_operator import Added, StateFormatError, StateMeaning
from pipelines.state.process_output import Output, ProcessOutput, declared_output_schema
from pipelines.state.queryable import KeyedValues
from pipelines.state.user_code import load_user_object

__all__ = [
    "STATE_FORMAT",
    "Key",
    "KeyedProcess",
    "Output",
    "ProcessContext",
    "ProcessFunction",
    "TimeDomain",
    "TimerService",
    "ValueState",
    "load_process_function",
]

STATE_FORMAT = "process/1"

Key: TypeAlias = Any  # a value of the key column as Python: str, int, bytes ... or None
TimeDomain = Literal["event", "processing"]
_KIND_OF_DOMAIN: dict[TimeDomain, str] = {"event": "event_timer", "processing": "processing_timer"}
_DOMAIN_OF_KIND: dict[str, TimeDomain] = {kind: domain for domain, kind in _KIND_OF_DOMAIN.items()}


class ProcessFunction(Protocol):
    """User code run per key. Both methods return rows to emit: a list of dicts, a table, a record batch, or None.

    ``process`` gets the key's rows of one batch (every column). ``on_timer`` gets a timer of the key that
    fired, with its time and domain. Exceptions raised propagate out of the operator call unchanged.

    ``output_schema`` (optional, a class attribute): the ``pyarrow.Schema`` of every row the function emits.
    Declared, it lets another keyed stage follow the function (the plan checks that stage against it before
    anything runs), and the rows are conformed to it: dicts are built with it (a column of nulls keeps its
    type), tables are cast and selected to it. A row that cannot be made to fit raises
    :class:`~pipelines.state.process_output.ProcessOutputError`, which stops the pipeline: the function's bug,
    not the data's. Left out, the rows are what the function returns, known only as it runs, and the function
    must be the last stage. A value that is not a ``pyarrow.Schema`` is a :class:`ConfigError` when the
    operator is built (at compile time).
    """

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> Output: ...

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output: ...


class _Timer(NamedTuple):
    """Ordered as fired: by time, then key (null keys last), so ties fire the same way after a restore."""

    timer_ms: int
    null_key: bool
    key: Key


class ValueState:
    """The value of one key: any msgspec-encodable value, or absent."""

    def __init__(self, values: dict[Key, bytes], key: Key) -> None:
        self._values = values
        self._key = key

    def get(self, default: Any = None) -> Any:
        """The value set last, decoded afresh (mutating it changes nothing until :meth:`set`), or ``default``."""
        encoded = self._values.get(self._key)
        return default if encoded is None else msgspec.msgpack.decode(encoded)

    def set(self, value: Any) -> None:
        """Store ``value``; raise ``TypeError`` if msgspec cannot encode it."""
        self._values[self._key] = msgspec.msgpack.encode(value)

    def clear(self) -> None:
        self._values.pop(self._key, None)


class TimerService:
    """Timers of one key. Registering a timer twice keeps one; deleting an absent timer does nothing."""

    def __init__(self, timers: _Timers, key: Key) -> None:
        self._timers = timers
        self._key = key

    def register_event_time_timer(self, timer_ms: int) -> None:
        """Fire ``on_timer`` once the watermark reaches ``timer_ms`` (at the next advance if already due)."""
        self._timers.register("event", _timer(timer_ms, self._key))

    def delete_event_time_timer(self, timer_ms: int) -> None:
        self._timers.delete("event", _timer(timer_ms, self._key))

    def register_processing_time_timer(self, timer_ms: int) -> None:
        """Fire ``on_timer`` once the caller's clock reaches ``timer_ms``."""
        self._timers.register("processing", _timer(timer_ms, self._key))

    def delete_processing_time_timer(self, timer_ms: int) -> None:
        self._timers.delete("processing", _timer(timer_ms, self._key))


class ProcessContext:
    """What user code sees of one key: its value state, its timers, and the two clocks."""

    def __init__(
        self, key: Key, state: ValueState, timers: TimerService, watermark_ms: int, processing_time_ms: int | None
    ) -> None:
        self.key: Key = key
        self.state = state
        self.timers = timers
        self.watermark_ms = watermark_ms
        self.processing_time_ms = processing_time_ms


class _Timers:
    """Timers of every key and domain: a set for membership and a heap per domain for firing order.

    Deleting leaves the heap entry behind; it is skipped when popped, and the heap is rebuilt when such
    entries outnumber live timers.
    """

    def __init__(self) -> None:
        self.live: dict[TimeDomain, set[_Timer]] = {"event": set(), "processing": set()}
        self._heaps: dict[TimeDomain, list[_Timer]] = {"event": [], "processing": []}

    def __len__(self) -> int:
        return sum(len(timers) for timers in self.live.values())

    def register(self, domain: TimeDomain, timer: _Timer) -> None:
        if timer not in self.live[domain]:
            self.live[domain].add(timer)
            heapq.heappush(self._heaps[domain], timer)

    def delete(self, domain: TimeDomain, timer: _Timer) -> None:
        self.live[domain].discard(timer)
        heap = self._heaps[domain]
        if len(heap) > 2 * len(self.live[domain]) + 64:
            self._heaps[domain] = sorted(self.live[domain])

    def pop_due(self, domain: TimeDomain, until_ms: int) -> _Timer | None:
        """Remove and return the earliest live timer at or before ``until_ms``, if any."""
        heap = self._heaps[domain]
        while heap and heap[0].timer_ms <= until_ms:
            timer = heapq.heappop(heap)
            if timer in self.live[domain]:
                self.live[domain].discard(timer)
                return timer
        return None


class KeyedProcess:
    """Runs a :class:`ProcessFunction` per key; implements :class:`KeyedOperator`.

    Contract: :meth:`add` calls ``process`` once per key of the batch and returns what it emitted as one table
    in ``Added.output`` (rows with a null ``_timestamp`` or behind the watermark are passed to user code too:
    deciding about them is the function's business); :meth:`advance` fires due event-time timers;
    :meth:`advance_processing_time` fires due processing-time timers; :meth:`flush` fires every event-time
    timer (end of input), not processing-time ones. Watermark and processing time only move forward. What the
    function emits is conformed to its ``output_schema`` when it declares one (:mod:`pipelines.state.process_output`:
    rows that cannot fit raise ``ProcessOutputError``); building the operator raises :class:`ConfigError` when
    that attribute is not a ``pyarrow.Schema``.
    """

    def __init__(self, key: str, function: ProcessFunction, facts: dict[str, str] | None = None) -> None:
        """``facts``: what else the function's state means (a saga's definition path), checked at restore."""
        self._key = key
        self._function = function
        kind = type(function)  # its state is what this class pickled: another class would read it otherwise
        name = f"{kind.__module__}:{kind.__qualname__}"
        self._meaning = StateMeaning(STATE_FORMAT, {"key": key, "function": name, **(facts or {})})
        self._output = ProcessOutput(name, declared_output_schema(function, name))
        self._values: dict[Key, bytes] = {}
        self._timers = _Timers()
        self._key_type: pa.DataType = pa.null()
        self._watermark_ms = NO_WATERMARK
        self._processing_time_ms: int | None = None

    @classmethod
    def from_config(cls, config: KeyedProcessConfig) -> KeyedProcess:
        return cls(config.key, load_process_function(config.function, config.options))

    @property
    def key(self) -> str:
        return self._key

    @property
    def output_schema(self) -> pa.Schema | None:
        """The schema of every row the function emits (its ``output_schema``); None when it declares none."""
        return self._output.schema

    @property
    def watermark_ms(self) -> int:
        return self._watermark_ms

    @property
    def processing_time_ms(self) -> int | None:
        """The latest time passed to :meth:`advance_processing_time`; None before the first call."""
        return self._processing_time_ms

    @property
    def state_rows(self) -> int:
        """Values plus timers."""
        return len(self._values) + len(self._timers)

    def add(self, batch: pa.RecordBatch) -> Added:
        """Call ``process`` once per key of ``batch``; return its rows in ``output``."""
        if batch.num_rows == 0:
            return Added()
        if self._key_type == pa.null():
            self._key_type = batch.schema.field(self._key).type
        outputs = [
            self._function.process(key, rows, self._context(key))
            for key, rows in _rows_per_key(pa.Table.from_batches([batch]), self._key)
        ]
        return Added(output=self._output.collect(outputs))

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark forward (never back) and fire every event-time timer at or before it."""
        self._watermark_ms = max(self._watermark_ms, watermark_ms)
        return self._fire("event", self._watermark_ms)

    def advance_processing_time(self, now_ms: int) -> pa.Table | None:
        """Move processing time forward to the caller's ``now_ms`` and fire the processing-time timers due."""
        self._processing_time_ms = now_ms if self._processing_time_ms is None else max(self._processing_time_ms, now_ms)
        return self._fire("processing", self._processing_time_ms)

    def flush(self) -> pa.Table | None:
        """Fire every event-time timer, as if the watermark reached the end of time."""
        return self.advance(END_OF_TIME_MS)

    def view(self, frozen: bool) -> KeyedValues:
        """A reader of the values (``frozen``: of a copy, which later batches do not change)."""
        return KeyedValues(dict(self._values) if frozen else self._values, self._key_type)

    def snapshot(self) -> pa.Table:
        """Values and timers as rows of (key, kind, value, timer_ms), tagged ``process/1``.

        ``kind`` is ``"value"`` (``value`` holds the MessagePack bytes, ``timer_ms`` null), ``"event_timer"``
        or ``"processing_timer"`` (``timer_ms`` set, ``value`` null).
        """
        keys: list[Key] = list(self._values)
        kinds = ["value"] * len(keys)
        values: list[bytes | None] = list(self._values.values())
        times: list[int | None] = [None] * len(keys)
        for domain, timers in self._timers.live.items():
            for timer in sorted(timers):
                keys.append(timer.key)
                kinds.append(_KIND_OF_DOMAIN[domain])
                values.append(None)
                times.append(timer.timer_ms)
        state = pa.table(
            {
                self._key: pa.array(keys, self._key_type),
                "kind": pa.array(kinds, pa.string()),
                "value": pa.array(values, pa.binary()),
                "timer_ms": pa.array(times, pa.int64()),
            }
        )
        return self._meaning.tag(state)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace values and timers with (some of the rows of) process snapshots; due timers stay pending."""
        self._meaning.check(state)
        missing = {self._key, "kind", "value", "timer_ms"} - set(state.column_names)
        if missing:
            raise StateFormatError(
                f"process state lacks column(s) {sorted(missing)}: it was written with another key column. "
                "Operator action: restore with the config that wrote it"
            )
        values: dict[Key, bytes] = {}  # replaced whole at the end: a query reading meanwhile sees the old values
        self._timers = _Timers()
        self._key_type = state.schema.field(self._key).type
        self._watermark_ms = watermark_ms
        for row in state.select([self._key, "kind", "value", "timer_ms"]).to_pylist():
            self._restore_row(values, row[self._key], row["kind"], row["value"], row["timer_ms"])
        self._values = values

    def _restore_row(
        self, values: dict[Key, bytes], key: Key, kind: str, value: bytes | None, timer_ms: int | None
    ) -> None:
        if kind == "value" and value is not None:
            values[key] = value
        elif kind in _DOMAIN_OF_KIND and timer_ms is not None:
            self._timers.register(_DOMAIN_OF_KIND[kind], _timer(timer_ms, key))
        else:
            raise StateFormatError(
                f"process state row of kind {kind!r} is malformed (value or timer_ms missing). Operator action: "
                "restore from another checkpoint, or delete it to rebuild state from input"
            )

    def _context(self, key: Key) -> ProcessContext:
        return ProcessContext(
            key,
            ValueState(self._values, key),
            TimerService(self._timers, key),
            self._watermark_ms,
            self._processing_time_ms,
        )

    def _fire(self, domain: TimeDomain, until_ms: int) -> pa.Table | None:
        outputs: list[Output] = []
        timer = self._timers.pop_due(domain, until_ms)
        while timer is not None:
            ctx = self._context(timer.key)
            outputs.append(self._function.on_timer(timer.key, timer.timer_ms, domain, ctx))
            timer = self._timers.pop_due(domain, until_ms)
        return self._output.collect(outputs)


def load_process_function(path: str, options: dict[str, Any] | None = None) -> ProcessFunction:
    """Import ``module:attr`` and call it with ``options`` as keyword arguments to get a fresh
    :class:`ProcessFunction`.

    Raises :class:`ConfigError` naming the path when the module, the attribute or the methods are missing.
    """
    function: ProcessFunction = load_user_object(path, "process function", ("process", "on_timer"), options)
    return function


def _timer(timer_ms: int, key: Key) -> _Timer:
    return _Timer(int(timer_ms), key is None, key)


def _rows_per_key(rows: pa.Table, key: str) -> Iterator[tuple[Key, pa.Table]]:
    """Each distinct key (null included) with its rows in arrival order; keys in order of first appearance."""
    encoded = pc.dictionary_encode(rows.column(key).combine_chunks(), null_encoding="encode")
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    grouped = rows.take(pa.array(order, pa.int64()))
    starts = np.flatnonzero(np.diff(codes[order], prepend=-1))
    ends = [*starts[1:].tolist(), rows.num_rows]
    distinct = encoded.dictionary.to_pylist()
    for start, end in zip(starts.tolist(), ends, strict=True):
        yield distinct[codes[order[start]]], grouped.slice(start, end - start)
