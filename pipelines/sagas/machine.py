"""What a saga does with each start, reply and deadline: pure, no Arrow, no clock (``now_ms`` is passed in).

One :class:`SagaRun` wraps one saga's state (a msgspec-encodable dict, what the keyed stage stores per saga id)
for one input; its methods change the state and collect the rows to emit (:mod:`pipelines.sagas.contract`) and
the one deadline the saga waits for (a reply's timeout, a retry's backoff, or a finished saga's retention). The
recovery rules are :mod:`pipelines.sagas.definition`'s. Replies that answer nothing the saga waits for (a
duplicate, a reply to an older attempt, to a finished saga) change nothing, except a success to an older
attempt of the step it waits for: the participant applied it, so the step is done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipelines.sagas import contract as c
from pipelines.sagas.definition import Retry, Saga, Step

__all__ = ["Deadline", "SagaRun", "Topics"]

TIMEOUT = "timeout"
RETRY = "retry"
RETENTION = "retention"


@dataclass(frozen=True)
class Topics:
    """Where a saga's rows go: commands to ``commands[topic as the saga names it]`` (itself when not there),
    lifecycle events to ``events``, parked sagas also to ``stuck``; participants reply on ``replies``."""

    events: str
    replies: str
    stuck: str
    commands: dict[str, str] = field(default_factory=dict)

    def of_command(self, named: str) -> str:
        return self.commands.get(named, named)


@dataclass(frozen=True)
class Deadline:
    """The one time a saga waits for: ``kind`` is ``timeout`` (a reply), ``retry`` (a backoff) or ``retention``."""

    time_ms: int
    kind: str


class SagaRun:
    """The saga ``saga_id`` of definition ``saga`` deciding one input at ``now_ms``; ``state`` None: none yet.

    After a call, :attr:`state` is what to store (None: forget the saga), :attr:`rows` what to emit and
    :attr:`deadline` what to wait for (None: nothing), where it waited for :attr:`waited_for` before.
    """

    def __init__(self, saga: Saga, topics: Topics, key: str, saga_id: str, state: dict[str, Any] | None,
                 now_ms: int) -> None:  # fmt: skip
        self._saga = saga
        self._topics = topics
        self._key = key
        self._id = saga_id
        self._now = now_ms
        self.state = state
        self.rows: list[dict[str, Any]] = []
        self.waited_for = self.deadline  # what the saga waited for before this input

    def at(self, now_ms: int) -> SagaRun:
        """Decide what follows at ``now_ms`` (a batch's rows may each come with their own time)."""
        self._now = now_ms
        return self

    @property
    def deadline(self) -> Deadline | None:
        if self.state is None or self.state.get("deadline") is None:
            return None
        return Deadline(self.state["deadline"], self.state["deadline_kind"])

    # ---- inputs -------------------------------------------------------------------------------------------------

    def start(self, data: dict[str, Any], trace: str | None) -> bool:
        """Start the saga with ``data``; False (nothing done) when it exists already: one instance per saga id."""
        if self.state is not None:
            return False
        self.state = {
            "saga": self._saga.name, "status": c.RUNNING, "step": 0, "attempt": 1, "completed": [],
            "compensate": [], "compensated": [], "data": data, "trace": trace, "seq": 0, "deadline": None,
            "deadline_kind": None, "reason": None, "started_ms": self._now,
        }  # fmt: skip
        self._event(c.SAGA_STARTED)
        self._send()
        return True

    def reply(self, reply_type: str, answered: str, reason: str | None, payload: dict[str, Any]) -> bool:
        """A participant's reply of ``reply_type`` to the command ``answered``; True when the saga moved on."""
        state = self.state
        parsed = c.parse_command_id(answered)
        if state is None or parsed is None or parsed.saga_id != self._id or state["status"] in c.TERMINAL_STATUSES:
            return False
        index, step = self._current()
        if parsed.step != step.name or parsed.compensation != (state["status"] == c.COMPENSATING_STATUS):
            return False
        current = parsed.attempt == state["attempt"]
        succeeded = reply_type == (step.compensated if parsed.compensation else step.success)
        if not succeeded and (not current or state["deadline_kind"] == RETRY):
            return False  # a failure of an attempt retried since: the newer attempt's reply decides
        state["data"].update(payload)
        if parsed.compensation:
            self._compensation_answered(index, step, succeeded, reason or reply_type, answered=answered)
        elif succeeded:
            self._step_done(index, answered)
        else:
            if reply_type != step.failure:
                reason = f"unexpected reply {reply_type!r} (the step replies {step.success!r} or {step.failure!r})"
            self._step_failed(index, step, reason or reply_type, timed_out=False)
        return True

    def deadline_reached(self, timer_ms: int) -> bool:
        """The timer at ``timer_ms`` fired; True when it was the saga's deadline (an older one changes nothing)."""
        state = self.state
        if state is None or state["deadline"] != timer_ms:
            return False
        kind = state["deadline_kind"]
        state["deadline"] = state["deadline_kind"] = None
        if kind == RETENTION:
            self.state = None
            return True
        if kind == RETRY:
            self._send(retried=True)
            return True
        index, step = self._current()
        reason = f"timeout: no reply to {self._command()} within {step.timeout_ms} ms"
        if state["status"] == c.COMPENSATING_STATUS:
            self._compensation_answered(index, step, False, reason, deadline_ms=timer_ms)
        else:
            self._step_failed(index, step, reason, timed_out=True, deadline_ms=timer_ms)
        return True

    # ---- transitions --------------------------------------------------------------------------------------------

    def _step_done(self, index: int, answered: str) -> None:
        state = self.state
        assert state is not None
        state["completed"].append(index)
        self._event(c.STEP_COMPLETED, step=self._saga.steps[index].name, command_id=answered)
        if index + 1 < len(self._saga.steps):
            state["step"], state["attempt"] = index + 1, 1
            self._send()
        else:
            self._finish(c.STATUS_COMPLETED, c.COMPLETED, None)

    def _step_failed(self, index: int, step: Step, reason: str, timed_out: bool, deadline_ms: int | None = None,
                     ) -> None:  # fmt: skip
        state = self.state
        assert state is not None
        self._event(c.STEP_FAILED, step=step.name, reason=reason, deadline_ms=deadline_ms, command_id=self._command())
        pivot = self._saga.pivot_index
        retried = timed_out or index > pivot  # a failure reply before or at the pivot means: not applied
        if retried and state["attempt"] < step.retry.attempts:
            self._retry_later(step.retry)
            return
        if index < pivot or (index == pivot and not timed_out):
            may_have_happened = [index] if timed_out else []
            self._compensate([*may_have_happened, *reversed(state["completed"])], reason)
            return
        where = "the pivot" if index == pivot else "a step after the pivot"
        self._park(f"{step.name} ({where}) failed after {state['attempt']} attempt(s): {reason}")

    def _compensate(self, steps: list[int], reason: str) -> None:
        state = self.state
        assert state is not None
        state["reason"] = reason
        if not steps:
            self._finish(c.STATUS_ABORTED, c.ABORTED, reason)
            return
        state["status"] = c.COMPENSATING_STATUS
        state["compensate"] = steps
        state["step"], state["attempt"] = steps[0], 1
        self._event(c.COMPENSATING, reason=reason)
        self._send()

    def _compensation_answered(self, index: int, step: Step, succeeded: bool, reason: str,
                               deadline_ms: int | None = None, answered: str | None = None) -> None:  # fmt: skip
        state = self.state
        assert state is not None
        if succeeded:
            state["compensated"].append(index)
            state["compensate"] = state["compensate"][1:]
            self._event(c.COMPENSATED, step=step.name, command_id=answered)
            if state["compensate"]:
                state["step"], state["attempt"] = state["compensate"][0], 1
                self._send()
            else:
                self._finish(c.STATUS_ABORTED, c.ABORTED, state["reason"])
            return
        self._event(c.STEP_FAILED, step=step.name, reason=f"compensation: {reason}", deadline_ms=deadline_ms,
                    command_id=self._command())  # fmt: skip
        if state["attempt"] < self._saga.compensation_retry.attempts:
            self._retry_later(self._saga.compensation_retry)
        else:
            self._park(f"the compensation of {step.name} failed after {state['attempt']} attempt(s): {reason}")

    def _retry_later(self, retry: Retry) -> None:
        state = self.state
        assert state is not None
        state["attempt"] += 1
        state["deadline"] = self._now + retry.backoff_before(state["attempt"])
        state["deadline_kind"] = RETRY

    def _finish(self, status: str, event: str, reason: str | None) -> None:
        state = self.state
        assert state is not None
        state["status"] = status
        state["deadline"] = self._now + self._saga.retention_ms
        state["deadline_kind"] = RETENTION
        self._event(event, reason=reason)

    def _park(self, reason: str) -> None:
        """``SagaStuck``: an operator decides. Its state stays (no retention), with the reason."""
        state = self.state
        assert state is not None
        state["status"] = c.STATUS_STUCK
        state["reason"] = reason
        state["deadline"] = state["deadline_kind"] = None
        _, step = self._current()
        self._event(c.SAGA_STUCK, step=step.name, reason=reason)
        self.rows.append({**self.rows[-1], "topic": self._topics.stuck, "kind": c.DEAD_LETTER})

    def _send(self, retried: bool = False) -> None:
        """Send the current step's command (its compensation while compensating), and wait for the reply."""
        state = self.state
        assert state is not None
        _, step = self._current()
        compensation = state["status"] == c.COMPENSATING_STATUS
        command = step.compensation if compensation else step.command
        assert command is not None  # a step that can be compensated has a compensation: Saga checked it
        if retried:
            self._event(c.STEP_RETRIED, step=step.name, command_id=self._command())
        self._row(
            topic=self._topics.of_command(command.topic), kind=c.COMMAND, message_type=command.type,
            command_id=self._command(), step=step.name,
            idempotency_key=c.idempotency_key(self._id, step.name, compensation),
            payload=json.dumps(state["data"], sort_keys=True, default=str), reply_to=self._topics.replies,
        )  # fmt: skip
        timeout = step.timeout_ms
        state["deadline"] = None if timeout is None else self._now + timeout
        state["deadline_kind"] = None if timeout is None else TIMEOUT

    # ---- rows ---------------------------------------------------------------------------------------------------

    def _current(self) -> tuple[int, Step]:
        assert self.state is not None
        index: int = self.state["step"]
        return index, self._saga.steps[index]

    def _command(self) -> str:
        """The id of the command the saga sends (or sent) now: the current step's attempt, or its compensation's."""
        state = self.state
        assert state is not None
        _, step = self._current()
        return c.command_id(self._id, step.name, state["attempt"], state["status"] == c.COMPENSATING_STATUS)

    def _event(self, message_type: str, step: str | None = None, reason: str | None = None,
               deadline_ms: int | None = None, command_id: str | None = None) -> None:  # fmt: skip
        """A lifecycle event; ``command_id``: the command it concerns (answered, failed, retried)."""
        self._row(topic=self._topics.events, kind=c.EVENT, message_type=message_type, step=step, reason=reason,
                  deadline_ms=deadline_ms, command_id=command_id)  # fmt: skip

    def _row(self, **columns: Any) -> None:
        state = self.state
        assert state is not None
        state["seq"] += 1
        attempt = state["attempt"] if columns.get("step") is not None else None
        self.rows.append({
            self._key: self._id, "saga": self._saga.name, "command_id": None, "step": None, "attempt": attempt,
            "status": state["status"], "reason": None, "idempotency_key": None, "payload": None, "reply_to": None,
            "deadline_ms": None,
            "sequence": state["seq"], "time_ms": self._now, "_traceparent": state["trace"], "_timestamp": self._now,
            **columns,
        })  # fmt: skip
