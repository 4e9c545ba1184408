"""The choreography monitor: flags a correlation id whose expected event has not arrived in event time.

A choreography has no orchestrator to notice that a step never happened. :class:`ChoreographyMonitor` watches
the events of every participant, keyed by a correlation id (``SagaMonitorConfig.key``, e.g. ``order_id``), and
checks each :class:`~pipelines.config.saga.Expectation`: after an event of type ``after`` (``OrderPlaced``), one
of ``then`` (``PaymentProcessed``, ``PaymentFailed``) must follow for the same id within ``within_ms`` of event
time. It is a :class:`~pipelines.state.process_function.ProcessFunction`, run by ``KeyedProcess(config.key,
ChoreographyMonitor(config))``.

**In**: rows with the key column, the type column (``type_column``), ``_timestamp`` (event time, int64 ms) and,
optionally, ``_traceparent``. A row whose key or type is null is ignored.

**Waits.** An ``after`` row with event time ``t`` opens a *wait* per expectation it starts, due at the deadline
``t + within_ms``, an event-time timer: the monitor decides when the watermark passes the deadline, so a replay or
a backfill flags the same ids as live processing did. A wait is not opened when

- the row's ``_timestamp`` is null (no deadline can be set);
- a wait of the expectation for the same event time is open (or reported stuck): a redelivered ``after`` is the
  same wait. ``after`` rows of one id at different event times open one wait each;
- the ``after`` is already answered (below);
- its deadline is at or behind the watermark when it arrives: it is too late to judge (a ``then`` that answered
  it may already be forgotten), so it is dropped rather than reported stuck on no evidence.

**Answers.** A row of a type in ``then`` ends every wait listing that type, open or stuck, whatever its event
time (clock skew between producers must not raise false alarms), and whatever its ``_timestamp`` (a null one
too). Out of order: a ``then`` that arrives *before* its ``after`` answers it when its event time is at or after
the ``after``'s: the monitor remembers, per expectation, the latest event time answered (the ``then``'s own, or
that of an ``after`` whose wait it ended, so a redelivered ``after`` does not reopen its wait). That memory is
kept until the watermark passes it by ``within_ms``; an ``after`` it could still answer has its deadline ahead of
the watermark, so it never misses one. Two rules keep self-expectations (``Heartbeat`` then ``Heartbeat``)
sound: a row never answers a wait it opens, and a row of the ``after``'s type and event time is a copy of that
``after``, not its answer.

**Out** (:func:`~pipelines.sagas.contract.saga_output_schema` of ``key``; ``kind`` ``event``, ``topic``
``events_topic``, ``saga`` ``name``, the key as text, ``step`` the awaited types joined by ``|``,
``deadline_ms`` the wait's deadline, ``_traceparent`` that of the ``after`` row, the other saga columns null):

- ``SagaStuck`` (status ``stuck``), once per wait, when the watermark passes its deadline with no answer:
  ``_timestamp`` is the deadline, ``time_ms`` the watermark it fired at (:data:`END_OF_TIME_MS
  <pipelines.eventtime.watermarks.END_OF_TIME_MS>` when the end of input fires it);
- ``SagaRecovered`` (status ``running``) when a ``then`` ends a wait already reported stuck, so an operator
  sees the alarm cleared: ``reason`` names the type that arrived late, ``_timestamp`` is its event time but never
  before the deadline (so the row sorts after its ``SagaStuck``), ``time_ms`` the watermark when it arrived. A
  stuck wait is watched for this until the watermark passes its deadline by another ``within_ms``; then it is
  forgotten, and a later ``then`` is just remembered.

``sequence`` counts a key's rows, 1, 2, ...; in a key's state, so it restarts at 1 once the key's state is
cleared (order a key's rows by ``_timestamp``, then ``sequence``).

**State** per key, bounded: the open and stuck waits and the answer memory, each dropped by an event-time timer
once the watermark makes it useless; a key with none of them holds no value and no timer. Every wait carries what
it awaits, so a wait opened under an expectation later removed from the config still fires after a restore. The
value is plain MessagePack maps with a ``version``; a value of another version, or malformed, raises
:class:`~pipelines.state.keyed_operator.StateFormatError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import pyarrow as pa

from pipelines.config.saga import Expectation, SagaMonitorConfig
from pipelines.sagas.contract import EVENT, RUNNING, SAGA_RECOVERED, SAGA_STUCK, STATUS_STUCK, saga_output_schema
from pipelines.state.keyed_operator import StateFormatError
from pipelines.state.process_function import Key, ProcessContext, TimeDomain

__all__ = ["STATE_VERSION", "ChoreographyMonitor"]

STATE_VERSION = 1  # of a key's value: bump when _KeyState changes meaning


class _Wait(msgspec.Struct, kw_only=True):
    """An ``after`` seen at ``after_ms`` waiting for one of ``then``: open, or reported ``stuck``."""

    after: str
    then: list[str]
    within_ms: int
    after_ms: int
    traceparent: str | None = None
    stuck: bool = False

    @property
    def expectation(self) -> str:
        return _expectation_id(self.after, self.then, self.within_ms)

    @property
    def deadline_ms(self) -> int:
        return self.after_ms + self.within_ms

    @property
    def timer_ms(self) -> int:
        """When it is next looked at: its deadline while open; when it is forgotten once stuck."""
        return self.deadline_ms + self.within_ms if self.stuck else self.deadline_ms


class _Answered(msgspec.Struct, kw_only=True):
    """An expectation's ``after`` at or before ``up_to_ms`` is answered; forgotten at ``forget_ms``."""

    up_to_ms: int
    forget_ms: int


class _KeyState(msgspec.Struct, kw_only=True):
    version: int = STATE_VERSION
    sequence: int = 0  # rows emitted for the key so far
    waits: list[_Wait] = msgspec.field(default_factory=list)
    answered: dict[str, _Answered] = msgspec.field(default_factory=dict)  # by expectation id


class ChoreographyMonitor:
    """Emits ``SagaStuck`` when an expected event is late, ``SagaRecovered`` when it comes after all (see the
    module docstring for the contract)."""

    def __init__(self, config: SagaMonitorConfig) -> None:
        self._config = config
        self.output_schema: pa.Schema = saga_output_schema(config.key)
        self._by_after: dict[str, list[Expectation]] = {}
        self._by_then: dict[str, list[Expectation]] = {}
        for expectation in config.expect:
            self._by_after.setdefault(expectation.after, []).append(expectation)
            for kind in dict.fromkeys(expectation.then):
                self._by_then.setdefault(kind, []).append(expectation)

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> list[dict[str, Any]] | None:
        """Answer waits with the ``then`` rows and open waits for the ``after`` rows, in arrival order."""
        if key is None:
            return None
        kinds = rows.column(self._config.type_column).to_pylist()
        times = rows.column("_timestamp").to_pylist()
        traces = _optional_column(rows, "_traceparent")
        state = _load(ctx.state.get())
        before = _timer_times(state)
        out: list[dict[str, Any]] = []
        for kind, time_ms, trace in zip(kinds, times, traces, strict=True):
            if kind is None:
                continue
            answered_before = dict(state.answered)  # a row's own answer must not answer the wait it opens
            out += self._answer(key, state, str(kind), time_ms, ctx.watermark_ms)
            self._open(state, str(kind), time_ms, trace, answered_before, ctx.watermark_ms)
        _save(ctx, state, before)
        return out or None

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> list[dict[str, Any]] | None:
        """Report the open waits due at ``timer_ms`` stuck; forget stuck waits and answers past their time."""
        raw = ctx.state.get()
        if domain != "event" or raw is None:
            return None
        state = _load(raw)
        before = _timer_times(state)
        due = sorted((w for w in state.waits if not w.stuck and w.deadline_ms <= timer_ms), key=_deadline)
        out = []
        for wait in due:
            wait.stuck = True
            out.append(self._stuck_row(key, state, wait, ctx.watermark_ms))
        state.waits = [w for w in state.waits if not (w.stuck and w.timer_ms <= timer_ms)]
        state.answered = {name: a for name, a in state.answered.items() if a.forget_ms > timer_ms}
        _save(ctx, state, before)
        return out or None

    def _answer(
        self, key: Key, state: _KeyState, kind: str, time_ms: int | None, watermark_ms: int
    ) -> list[dict[str, Any]]:
        """End the waits a ``kind`` row answers (``SagaRecovered`` for stuck ones) and remember the answer."""
        out = []
        kept = []
        for wait in state.waits:
            if kind not in wait.then or (kind == wait.after and time_ms == wait.after_ms):
                kept.append(wait)
                continue
            if wait.stuck:
                out.append(self._recovered_row(key, state, wait, kind, time_ms, watermark_ms))
            _remember(state, wait.expectation, wait.after_ms, wait.within_ms, watermark_ms)
        state.waits = kept
        if time_ms is not None:
            for expectation in self._by_then.get(kind, []):
                _remember(state, _id_of(expectation), time_ms, expectation.within_ms, watermark_ms)
        return out

    def _open(
        self,
        state: _KeyState,
        kind: str,
        time_ms: int | None,
        trace: str | None,
        answered: dict[str, _Answered],
        watermark_ms: int,
    ) -> None:
        """Open a wait per expectation a ``kind`` row at ``time_ms`` starts, unless it is a copy, answered or late."""
        if time_ms is None:
            return
        for expectation in self._by_after.get(kind, []):
            name = _id_of(expectation)
            known = answered.get(name)
            if (
                time_ms + expectation.within_ms <= watermark_ms
                or (known is not None and known.up_to_ms >= time_ms)
                or any(w.after_ms == time_ms and w.expectation == name for w in state.waits)
            ):
                continue
            then = list(expectation.then)
            wait = _Wait(after=kind, then=then, within_ms=expectation.within_ms, after_ms=time_ms, traceparent=trace)
            state.waits.append(wait)

    def _stuck_row(self, key: Key, state: _KeyState, wait: _Wait, watermark_ms: int) -> dict[str, Any]:
        reason = (
            f"expected {' or '.join(wait.then)} within {wait.within_ms} ms of {wait.after} at {wait.after_ms}; "
            f"none had arrived when the watermark passed {wait.deadline_ms}"
        )
        return self._row(key, state, wait, SAGA_STUCK, STATUS_STUCK, reason, watermark_ms, wait.deadline_ms)

    def _recovered_row(
        self, key: Key, state: _KeyState, wait: _Wait, kind: str, time_ms: int | None, watermark_ms: int
    ) -> dict[str, Any]:
        at = "with no event time" if time_ms is None else f"at {time_ms}"
        reason = (
            f"{kind} arrived late ({at}) for {wait.after} at {wait.after_ms}, after the wait was reported stuck at "
            f"its deadline {wait.deadline_ms}; the wait is over"
        )
        timestamp_ms = wait.deadline_ms if time_ms is None else max(time_ms, wait.deadline_ms)
        return self._row(key, state, wait, SAGA_RECOVERED, RUNNING, reason, watermark_ms, timestamp_ms)

    def _row(
        self,
        key: Key,
        state: _KeyState,
        wait: _Wait,
        message_type: str,
        status: str,
        reason: str,
        time_ms: int,
        timestamp_ms: int,
    ) -> dict[str, Any]:
        state.sequence += 1
        return {
            "topic": self._config.events_topic,
            "kind": EVENT,
            self._config.key: _key_text(key),
            "saga": self._config.name,
            "message_type": message_type,
            "step": "|".join(wait.then),
            "status": status,
            "reason": reason,
            "deadline_ms": wait.deadline_ms,
            "sequence": state.sequence,
            "time_ms": time_ms,
            "_traceparent": wait.traceparent,
            "_timestamp": timestamp_ms,
        }


def _expectation_id(after: str, then: Iterable[str], within_ms: int) -> str:
    return f"{after} -> {'|'.join(then)} within {within_ms} ms"


def _id_of(expectation: Expectation) -> str:
    return _expectation_id(expectation.after, expectation.then, expectation.within_ms)


def _deadline(wait: _Wait) -> int:
    return wait.deadline_ms


def _remember(state: _KeyState, name: str, up_to_ms: int, within_ms: int, watermark_ms: int) -> None:
    """Answer expectation ``name``'s ``after`` rows up to ``up_to_ms`` while one could still open a wait."""
    forget_ms = up_to_ms + within_ms
    known = state.answered.get(name)
    if forget_ms > watermark_ms and (known is None or known.up_to_ms < up_to_ms):
        state.answered[name] = _Answered(up_to_ms=up_to_ms, forget_ms=forget_ms)


def _timer_times(state: _KeyState) -> set[int]:
    return {wait.timer_ms for wait in state.waits} | {answered.forget_ms for answered in state.answered.values()}


def _save(ctx: ProcessContext, state: _KeyState, before: set[int]) -> None:
    """Store ``state`` (clear it when it holds nothing) and move the key's timers from ``before`` to what it needs."""
    after = _timer_times(state)
    for timer_ms in sorted(before - after):
        ctx.timers.delete_event_time_timer(timer_ms)
    for timer_ms in sorted(after - before):
        ctx.timers.register_event_time_timer(timer_ms)
    if state.waits or state.answered:
        ctx.state.set(msgspec.to_builtins(state))
    else:
        ctx.state.clear()


def _load(raw: Any) -> _KeyState:
    if raw is None:
        return _KeyState()
    version = raw.get("version") if isinstance(raw, dict) else None
    if version != STATE_VERSION:
        raise StateFormatError(
            f"choreography monitor state of version {version!r}, this monitor reads version {STATE_VERSION}. "
            "Operator action: restore with the eventray version that wrote it, or from another checkpoint"
        )
    try:
        return msgspec.convert(raw, _KeyState)
    except msgspec.ValidationError as error:
        raise StateFormatError(
            f"choreography monitor state is malformed ({error}). Operator action: restore from another checkpoint"
        ) from None


def _optional_column(rows: pa.Table, name: str) -> Sequence[Any]:
    return rows.column(name).to_pylist() if name in rows.column_names else [None] * rows.num_rows


def _key_text(key: Key) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    return str(key)
