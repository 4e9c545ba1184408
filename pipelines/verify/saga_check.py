"""The saga checker: what an orchestrated saga stage and its participants did, against a sequential
recomputation of what they should have done.

:func:`simulate_saga` replays one saga step by step in plain Python: the definition (:mod:`pipelines.sagas.definition`),
the participants' decision per command id (``decide``, pure: e.g. :func:`pipelines.examples.order_saga.order_decider`)
and a model of an idempotent participant written here, sharing nothing with :mod:`pipelines.sagas.machine`. It is
the reference whatever the partition counts, kills and replays were. Its rules:

- attempt ``n`` of a step sends ``saga_id:step:n``; the participant decides it (:data:`Decision`): ``success``
  applies and replies, ``failure`` replies a failure, ``silent_applied`` applies and does not reply,
  ``silent_not_applied`` does nothing. A step already applied is answered with success and applies nothing; a
  step already compensated refuses (failure). A compensation (``saga_id:step.compensate:n``) of a step never
  applied is a no-op answered as done; of an applied step it applies once; a later one answers done again.
- an attempt whose command id is in ``timed_out`` (observed: the machine's ``StepFailed`` with a ``timeout``
  reason) is a timeout whatever the participant decided (a slow participant under kills), though the
  participant's effect still happens; a silent attempt is a timeout too.
- before the pivot a failure reply is not retried: the steps completed are compensated, newest first. A timeout
  is retried until ``step.retry.attempts``; then the step itself is compensated first (it may have happened),
  then the completed ones. The pivot failing by reply compensates the steps before it; the pivot timing out on
  its last attempt parks the saga (``stuck``). After the pivot failures and timeouts are retried; the last
  attempt failing parks the saga. A compensation is retried by ``saga.compensation_retry`` on failure or
  timeout; the last failing parks the saga. A step without ``timeout_ms`` whose reply never comes leaves the
  saga running.
- a success from any attempt of the current step counts, a failure only from the current attempt. So one race
  cannot be timed from the outside: an earlier attempt timed out, yet its success reply (late) may complete the
  step while a later, silent attempt waits. The reference settles it by what was observed (a ``StepCompleted``,
  or a ``Compensated``, for that step), and only when such a late success exists.

:func:`check_sagas` reads the lifecycle events (rows of the events topic, :mod:`pipelines.sagas.contract`:
``message_type``, ``step``, ``attempt``, ``status``, ``sequence``, ``reason``, ``deadline_ms``, ``time_ms``,
``command_id`` when set) and the participants' effect ledger (rows with ``saga_id``, ``step``, ``effect``:
:data:`EFFECT_APPLIED`, :data:`EFFECT_COMPENSATED` or :data:`EFFECT_REJECTED`, ``command_id``). Events are
taken once per distinct row (a redelivered row is the same row) in ``sequence`` order. Each finding of
:class:`SagaReport` counts sagas (up to ``max_examples`` examples, ``saga_id: detail``):

- **never_started**: expected (``expected_sagas``), or with events, but no ``SagaStarted``;
  **duplicate_instances**: more than one distinct ``SagaStarted``; **not_terminal**: the last status is not
  ``completed``, ``aborted`` nor ``stuck``.
- **mixed**: ``completed`` with a step not applied or some step compensated; ``aborted`` with an applied step
  not compensated, or ``Compensated`` events not in reverse step order.
- **duplicate_effects**: more than one ``applied``, or more than one ``compensated``, effect of a (saga, step).
- **status_mismatches** / **effect_mismatches**: the terminal status (and step parked at), or the applied and
  compensated steps and the ``Compensated`` events, differ from :func:`simulate_saga`'s (terminal sagas only).
- **rejected_commands**, **effects_without_saga**: ledger rows of commands a participant refused, and of sagas
  never started.
- allowed, reported: **noop_compensations** (a ``Compensated`` step with no applied effect), **stuck** (with
  the reason), and the **lateness** of timeout timers (``time_ms - deadline_ms``: max, p50, p99, and those
  over ``lateness_bound_ms``, a failure when a bound is given).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pipelines.sagas.contract import (
    COMPENSATED,
    COMPENSATING,
    DEAD_LETTER,
    LIFECYCLE_EVENTS,
    RUNNING,
    SAGA_STARTED,
    SAGA_STUCK,
    STATUS_ABORTED,
    STATUS_COMPLETED,
    STATUS_STUCK,
    STEP_COMPLETED,
    STEP_FAILED,
    TERMINAL_STATUSES,
    command_id,
    parse_command_id,
)
from pipelines.sagas.definition import Retry, Saga, Step
from pipelines.verify.delivery_check import Finding

__all__ = [
    "EFFECT_APPLIED",
    "EFFECT_COMPENSATED",
    "EFFECT_REJECTED",
    "FAILURE",
    "SILENT_APPLIED",
    "SILENT_NOT_APPLIED",
    "SUCCESS",
    "TIMEOUT_REASON",
    "Decide",
    "Decision",
    "ExpectedSaga",
    "SagaReport",
    "TimerLateness",
    "check_sagas",
    "is_timeout",
    "observed_timeouts",
    "percentile",
    "simulate_saga",
]

#: what a participant decides for one command id
Decision = Literal["success", "failure", "silent_applied", "silent_not_applied"]
SUCCESS: Final = "success"
FAILURE: Final = "failure"
SILENT_APPLIED: Final = "silent_applied"
SILENT_NOT_APPLIED: Final = "silent_not_applied"
#: the participant's decision for a command id of a step (its compensation's too)
Decide = Callable[[Step, str], Decision]

#: the ``effect`` of a ledger row
EFFECT_APPLIED: Final = "applied"
EFFECT_COMPENSATED: Final = "compensated"
EFFECT_REJECTED: Final = "rejected"
#: how the ``reason`` of a ``StepFailed`` that is a timeout starts
TIMEOUT_REASON: Final = "timeout"

_DONE = "done"
_FAILED = "failed"
_TIMED_OUT = "timed_out"
_WAITING = "waiting"  # no reply, and no timeout to end the wait
_LAST = 2**63 - 1


@dataclass(frozen=True)
class ExpectedSaga:
    """What :func:`simulate_saga` says one saga ends as: its ``status``, the steps the participants applied and
    compensated (effects), the ``Compensated`` events in order (no-ops included), and the step it is parked at."""

    status: str
    applied: tuple[str, ...] = ()
    compensated: tuple[str, ...] = ()
    compensations: tuple[str, ...] = ()
    stuck_step: str | None = None


@dataclass
class _Participants:
    """The participants' state for one saga, as the reference models an idempotent participant."""

    applied: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)  # compensations that undid an effect
    closed: set[str] = field(default_factory=set)  # compensated steps, no-ops included

    def answer(self, step: str, compensation: bool, decision: Decision) -> str | None:
        """``_DONE``, ``_FAILED``, or None when no reply is sent; the effect, if any, recorded."""
        acts = decision in (SUCCESS, SILENT_APPLIED)
        if compensation:
            if acts and step not in self.closed:
                self.closed.add(step)
                if step in self.applied:
                    self.compensated.append(step)
            answer = _DONE if step in self.closed else _FAILED
        else:
            if acts and step not in self.closed and step not in self.applied:
                self.applied.append(step)
            answer = _DONE if step in self.applied and step not in self.closed else _FAILED
        return None if decision in (SILENT_APPLIED, SILENT_NOT_APPLIED) else answer


@dataclass
class _Run:
    """One saga's simulation: its id, what decides and what was observed timing out."""

    saga_id: str
    decide: Decide
    timed_out: Collection[str]
    participants: _Participants = field(default_factory=_Participants)

    def attempts(self, step: Step, retry: Retry, compensation: bool, retry_failures: bool, seen_done: bool) -> str:
        """How the attempts of a step's command (or compensation) end: ``_DONE``, ``_FAILED``, ``_TIMED_OUT``
        (as the last attempt did), or ``_WAITING``. ``seen_done``: the machine was observed finishing it."""
        late_success = False  # an earlier attempt timed out, yet its participant answered success
        ended = _TIMED_OUT
        for attempt in range(1, retry.attempts + 1):
            sent = command_id(self.saga_id, step.name, attempt, compensation)
            reply = self.participants.answer(step.name, compensation, self.decide(step, sent))
            if sent in self.timed_out:
                late_success = late_success or reply == _DONE
                ended = _TIMED_OUT
            elif reply is None:
                if late_success and seen_done:
                    return _DONE
                if step.timeout_ms is None:
                    return _WAITING
                ended = _TIMED_OUT
            elif reply == _DONE:
                return _DONE
            else:
                ended = _FAILED
                if not retry_failures:
                    return _FAILED
        return ended

    def expected(self, status: str, compensations: Iterable[str] = (), stuck_step: str | None = None) -> ExpectedSaga:
        return ExpectedSaga(status, tuple(self.participants.applied), tuple(self.participants.compensated),
                            tuple(compensations), stuck_step)  # fmt: skip


def simulate_saga(
    saga: Saga,
    saga_id: str,
    decide: Decide,
    timed_out: Collection[str] = frozenset(),
    completed: Collection[str] = frozenset(),
    compensated: Collection[str] = frozenset(),
) -> ExpectedSaga:
    """How saga ``saga_id`` of ``saga`` ends (see the module docstring). ``timed_out``: command ids observed timing
    out. ``completed`` / ``compensated``: steps observed with ``StepCompleted`` / ``Compensated``, used only to
    settle a late success of an earlier attempt."""
    run = _Run(saga_id, decide, timed_out)
    done: list[Step] = []
    for index, step in enumerate(saga.steps):
        ended = run.attempts(step, step.retry, False, index > saga.pivot_index, step.name in completed)
        if ended == _DONE:
            done.append(step)
            continue
        if ended == _WAITING:
            return run.expected(RUNNING)
        if index > saga.pivot_index or (index == saga.pivot_index and ended == _TIMED_OUT):
            return run.expected(STATUS_STUCK, stuck_step=step.name)
        undo = [step, *reversed(done)] if ended == _TIMED_OUT else list(reversed(done))
        finished: list[str] = []
        for undone in undo:
            if run.attempts(undone, saga.compensation_retry, True, True, undone.name in compensated) != _DONE:
                return run.expected(STATUS_STUCK, finished, undone.name)
            finished.append(undone.name)
        return run.expected(STATUS_ABORTED, finished)
    return run.expected(STATUS_COMPLETED)


def is_timeout(event: Mapping[str, Any]) -> bool:
    """A ``StepFailed`` whose reason starts with ``timeout`` and that names the deadline it fired for."""
    reason = event.get("reason")
    return (event.get("message_type") == STEP_FAILED and isinstance(reason, str)
            and reason.startswith(TIMEOUT_REASON) and event.get("deadline_ms") is not None)  # fmt: skip


def observed_timeouts(events: Iterable[Mapping[str, Any]], key: str = "saga_id") -> set[str]:
    """The command ids of the attempts the machine saw time out: each timeout event's ``command_id`` when it
    holds one; else built from its ``step`` and ``attempt``, a compensation's when a ``Compensating`` event came
    before it."""
    timed_out: set[str] = set()
    for saga_id, history in _histories(events, key).items():
        compensating = False
        for event in history:
            compensating = compensating or event["message_type"] == COMPENSATING
            if not is_timeout(event):
                continue
            raw = event.get("command_id")
            if isinstance(raw, str) and parse_command_id(raw) is not None:
                timed_out.add(raw)
            elif event.get("step") is not None and event.get("attempt") is not None:
                timed_out.add(command_id(saga_id, event["step"], int(event["attempt"]), compensating))
    return timed_out


@dataclass(frozen=True)
class TimerLateness:
    """How late timeout timers fired (``time_ms - deadline_ms``); ``late``: those over ``bound_ms``."""

    timeouts: int = 0
    max_ms: int | None = None
    p50_ms: int | None = None
    p99_ms: int | None = None
    bound_ms: int | None = None
    late: Finding = field(default_factory=Finding)


@dataclass(frozen=True)
class SagaReport:
    """What :func:`check_sagas` found (see the module docstring); :meth:`failures` empty means the run is right."""

    sagas: int
    by_status: dict[str, int]
    never_started: Finding = field(default_factory=Finding)
    duplicate_instances: Finding = field(default_factory=Finding)
    not_terminal: Finding = field(default_factory=Finding)
    mixed: Finding = field(default_factory=Finding)
    duplicate_effects: Finding = field(default_factory=Finding)
    status_mismatches: Finding = field(default_factory=Finding)
    effect_mismatches: Finding = field(default_factory=Finding)
    rejected_commands: Finding = field(default_factory=Finding)
    effects_without_saga: Finding = field(default_factory=Finding)
    noop_compensations: Finding = field(default_factory=Finding)
    stuck: Finding = field(default_factory=Finding)
    stuck_by_step: dict[str, int] = field(default_factory=dict)
    lateness: TimerLateness = field(default_factory=TimerLateness)
    wrong_deadlines: Finding = field(default_factory=Finding)

    def failures(self) -> list[str]:
        """One line per kind of fault found; stuck sagas and no-op compensations are not faults."""
        findings = {
            "saga(s) never started": self.never_started,
            "saga(s) started more than once": self.duplicate_instances,
            "saga(s) not terminal": self.not_terminal,
            "saga(s) in a mixed terminal state": self.mixed,
            "saga(s) with a side effect applied or compensated more than once": self.duplicate_effects,
            "saga(s) ending in another status than the simulation": self.status_mismatches,
            "saga(s) with other effects or compensations than the simulation": self.effect_mismatches,
            "saga(s) with a command a participant rejected": self.rejected_commands,
            "saga(s) with effects but never started": self.effects_without_saga,
            f"timeout timer(s) later than {self.lateness.bound_ms} ms": self.lateness.late,
            "timeout(s) early, of a command never sent, or not at its send time + timeout_ms": self.wrong_deadlines,
        }
        return [f"{finding.count} {what}, e.g. {', '.join(finding.examples)}"
                for what, finding in findings.items() if finding.count]  # fmt: skip

    @property
    def ok(self) -> bool:
        return not self.failures()


@dataclass
class _Ledger:
    """The effect ledger: how many times each (saga, step, effect) happened, and the rejected commands."""

    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    rejected: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, rows: Iterable[Mapping[str, Any]], key: str) -> _Ledger:
        ledger = cls()
        for row in rows:
            if row.get("kind", "effect") != "effect":
                continue
            saga_id, effect = str(row[key]), row.get("effect")
            if effect == EFFECT_REJECTED:
                ledger.rejected[saga_id].append(f"{row.get('command_id')} ({row.get('reason')})")
            elif effect in (EFFECT_APPLIED, EFFECT_COMPENSATED) and row.get("step") is not None:
                ledger.counts[(saga_id, str(row["step"]), str(effect))] += 1
        return ledger

    def sagas(self) -> set[str]:
        return {saga_id for saga_id, _, _ in self.counts} | set(self.rejected)

    def steps(self, saga_id: str, effect: str, saga: Saga) -> tuple[str, ...]:
        """The steps of ``saga_id`` with ``effect`` at least once, in the definition's order."""
        return tuple(s.name for s in saga.steps if self.counts[(saga_id, s.name, effect)] > 0)


def check_sagas(
    saga: Saga,
    decide: Decide,
    events: Iterable[Mapping[str, Any]],
    effects: Iterable[Mapping[str, Any]],
    timed_out: Collection[str] | None = None,
    *,
    key: str = "saga_id",
    expected_sagas: Collection[str] = (),
    lateness_bound_ms: int | None = None,
    max_examples: int = 5,
    commands: Iterable[Mapping[str, Any]] | None = None,
) -> SagaReport:
    """Judge a run (see the module docstring). ``timed_out`` defaults to :func:`observed_timeouts` of ``events``.

    ``commands`` (the rows the saga sent to participants, with ``command_id`` and ``time_ms``), when given, check
    every timeout: its command was sent, its ``deadline_ms`` is the send time plus the step's ``timeout_ms``, and
    it fired at or after it (``wrong_deadlines``): a machine that timed out a step early, or for nothing, fails
    here even when the simulation, fed its timeouts, agrees."""
    events = list(events)
    stories = {saga_id: _Story.of(history) for saga_id, history in _histories(events, key).items()}
    ledger = _Ledger.of(effects, key)
    timeouts = observed_timeouts(events, key) if timed_out is None else timed_out
    found: dict[str, list[str]] = defaultdict(list)
    for saga_id, story in stories.items():
        for name, detail in _judge(saga, saga_id, story, ledger, decide, timeouts).items():
            found[name].append(f"{saga_id}: {detail}")
    started = {saga_id for saga_id, story in stories.items() if story.starts}
    found["never_started"] += [f"{s}: no SagaStarted" for s in sorted(set(expected_sagas) - set(stories))]
    found["effects_without_saga"] += [f"{s}: effects, no SagaStarted" for s in sorted(ledger.sagas() - started)]
    found["rejected_commands"] += [f"{s}: {', '.join(why)}" for s, why in sorted(ledger.rejected.items())]

    def finding(name: str) -> Finding:
        return Finding.of(found[name], max_examples)

    stuck = Counter(story.stuck_step for story in stories.values() if story.status == STATUS_STUCK)
    return SagaReport(
        sagas=len(started),
        by_status=dict(sorted(Counter(story.status or "unknown" for story in stories.values()).items())),
        never_started=finding("never_started"),
        duplicate_instances=finding("duplicate_instances"),
        not_terminal=finding("not_terminal"),
        mixed=finding("mixed"),
        duplicate_effects=finding("duplicate_effects"),
        status_mismatches=finding("status_mismatches"),
        effect_mismatches=finding("effect_mismatches"),
        rejected_commands=finding("rejected_commands"),
        effects_without_saga=finding("effects_without_saga"),
        noop_compensations=finding("noop_compensations"),
        stuck=finding("stuck"),
        stuck_by_step={str(step): count for step, count in sorted(stuck.items(), key=lambda item: str(item[0]))},
        lateness=_lateness(events, key, lateness_bound_ms, max_examples),
        wrong_deadlines=Finding.of(_wrong_deadlines(saga, events, commands), max_examples)
        if commands is not None
        else Finding(),
    )


def _wrong_deadlines(
    saga: Saga, events: Iterable[Mapping[str, Any]], commands: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Each timeout whose command was not sent, whose deadline is not its send time plus the step's timeout, or
    that fired before its deadline."""
    sent = {row["command_id"]: int(row["time_ms"]) for row in commands if row.get("command_id") is not None}
    timeouts = {step.name: step.timeout_ms for step in saga.steps}
    wrong = []
    for event in events:
        if event.get("message_type") != STEP_FAILED or event.get("deadline_ms") is None:
            continue  # only a timeout (of a step or of a compensation) names a deadline
        if event.get("command_id") is None:
            wrong.append(f"{event.get('saga_id')}: a timeout of {event.get('step')} names no command")
            continue
        command, deadline = str(event["command_id"]), int(event["deadline_ms"])
        timeout = timeouts.get(str(event.get("step")))
        if command not in sent:
            wrong.append(f"{command}: timed out, never sent")
        elif timeout is None or deadline != sent[command] + timeout:
            wrong.append(f"{command}: deadline {deadline}, sent at {sent[command]} with timeout_ms {timeout}")
        elif int(event["time_ms"]) < deadline:
            wrong.append(f"{command}: fired at {event['time_ms']}, before its deadline {deadline}")
    return sorted(set(wrong))


@dataclass(frozen=True)
class _Story:
    """One saga's observed events, folded."""

    starts: int
    status: str | None
    completed: frozenset[str]
    compensations: tuple[str, ...]
    stuck_step: str | None
    stuck_reason: str | None

    @classmethod
    def of(cls, history: list[dict[str, Any]]) -> _Story:
        stuck = [event for event in history if event["message_type"] == SAGA_STUCK]
        return cls(
            starts=sum(event["message_type"] == SAGA_STARTED for event in history),
            status=history[-1].get("status") if history else None,
            completed=frozenset(e["step"] for e in history if e["message_type"] == STEP_COMPLETED),
            compensations=tuple(e["step"] for e in history if e["message_type"] == COMPENSATED),
            stuck_step=stuck[-1].get("step") if stuck else None,
            stuck_reason=stuck[-1].get("reason") if stuck else None,
        )


def _judge(
    saga: Saga, saga_id: str, story: _Story, ledger: _Ledger, decide: Decide, timed_out: Collection[str]
) -> dict[str, str]:
    """Finding name -> what is wrong (or of note) with one saga."""
    found: dict[str, str] = {}
    if story.starts != 1:
        found["never_started" if story.starts == 0 else "duplicate_instances"] = f"{story.starts} SagaStarted"
    twice = [f"{step} {effect} x{count}" for (s, step, effect), count in sorted(ledger.counts.items())
             if s == saga_id and count > 1]  # fmt: skip
    if twice:
        found["duplicate_effects"] = ", ".join(twice)
    applied = ledger.steps(saga_id, EFFECT_APPLIED, saga)
    noops = sorted(set(story.compensations) - set(applied))
    if noops:
        found["noop_compensations"] = f"{noops} compensated, never applied"
    if story.status not in TERMINAL_STATUSES:
        found["not_terminal"] = f"last status {story.status}"
        return found
    if story.status == STATUS_STUCK:
        found["stuck"] = f"at {story.stuck_step}: {story.stuck_reason}"
    mixed = _mixed(saga, story, applied, ledger.steps(saga_id, EFFECT_COMPENSATED, saga))
    if mixed:
        found["mixed"] = mixed
    expected = simulate_saga(saga, saga_id, decide, timed_out, story.completed, story.compensations)
    found.update(_mismatches(saga, saga_id, story, ledger, expected))
    return found


def _mixed(saga: Saga, story: _Story, applied: tuple[str, ...], compensated: tuple[str, ...]) -> str | None:
    """What makes a terminal saga's state mixed, or None."""
    if story.status == STATUS_COMPLETED:
        missing = [s.name for s in saga.steps if s.name not in applied]
        if missing or compensated or story.compensations:
            return f"completed, not applied {missing}, compensated {sorted({*compensated, *story.compensations})}"
    if story.status == STATUS_ABORTED:
        left = [step for step in applied if step not in compensated]
        index = {step.name: position for position, step in enumerate(saga.steps)}
        order = [index.get(step, -1) for step in story.compensations]
        backwards = all(later < earlier for earlier, later in itertools.pairwise(order))
        if left or not backwards:
            return f"aborted, applied and not compensated {left}, Compensated events {list(story.compensations)}"
    return None


def _mismatches(saga: Saga, saga_id: str, story: _Story, ledger: _Ledger, expected: ExpectedSaga) -> dict[str, str]:
    found: dict[str, str] = {}
    observed_stuck = story.stuck_step if story.status == STATUS_STUCK else None
    if (story.status, observed_stuck) != (expected.status, expected.stuck_step):
        found["status_mismatches"] = (f"{story.status} (parked at {observed_stuck}), simulated {expected.status} "
                                      f"(parked at {expected.stuck_step})")  # fmt: skip
    observed = (ledger.steps(saga_id, EFFECT_APPLIED, saga), ledger.steps(saga_id, EFFECT_COMPENSATED, saga),
                story.compensations)  # fmt: skip
    in_order = [step.name for step in saga.steps]
    simulated = (tuple(s for s in in_order if s in expected.applied),
                 tuple(s for s in in_order if s in expected.compensated), expected.compensations)  # fmt: skip
    if observed != simulated:
        found["effect_mismatches"] = (f"applied {list(observed[0])}, compensated {list(observed[1])}, Compensated "
                                      f"events {list(observed[2])}; simulated {list(simulated[0])}, "
                                      f"{list(simulated[1])}, {list(simulated[2])}")  # fmt: skip
    return found


def _lateness(events: Iterable[Mapping[str, Any]], key: str, bound_ms: int | None, max_examples: int) -> TimerLateness:
    histories = _histories(events, key)
    late = sorted(
        (int(event["time_ms"]) - int(event["deadline_ms"]), f"{saga_id}:{event.get('step')}#{event.get('attempt')}")
        for saga_id, history in histories.items()
        for event in history
        if is_timeout(event) and event.get("time_ms") is not None
    )
    if not late:
        return TimerLateness(bound_ms=bound_ms)
    values = [ms for ms, _ in late]
    over = [f"{name} +{ms} ms" for ms, name in late if bound_ms is not None and ms > bound_ms]
    return TimerLateness(len(values), values[-1], percentile(values, 0.5), percentile(values, 0.99), bound_ms,
                         Finding.of(over, max_examples))  # fmt: skip


def percentile(ordered: list[int], fraction: float) -> int:
    """The nearest-rank ``fraction`` percentile of ``ordered`` (sorted, not empty)."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _histories(events: Iterable[Mapping[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    """Each saga's lifecycle events, each distinct row once, in ``sequence`` order."""
    seen: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = defaultdict(dict)
    for event in events:
        if event.get("message_type") not in LIFECYCLE_EVENTS or event.get("kind") == DEAD_LETTER:
            continue
        identity = tuple(event.get(name) for name in ("sequence", "message_type", "step", "attempt", "status",
                                                      "time_ms"))  # fmt: skip
        seen[str(event[key])].setdefault(identity, dict(event))
    return {saga_id: sorted(rows.values(), key=_event_order) for saga_id, rows in sorted(seen.items())}


def _event_order(event: Mapping[str, Any]) -> tuple[int, int]:
    """By ``sequence`` (an event without one last), then ``time_ms``."""
    sequence, time_ms = event.get("sequence"), event.get("time_ms")
    return (_LAST if sequence is None else int(sequence), 0 if time_ms is None else int(time_ms))
