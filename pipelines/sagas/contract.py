"""The rows a saga stage reads and emits: the contract between an orchestrator, its participants and its readers.

**In** (the stage's inputs, unified; the key column is the config's ``key``, ``saga_id`` by default):

- a **start**: a row whose ``message_type`` is the saga's start type (``OrderPlaced``) and whose ``command_id`` is
  null; its other non-null columns that do not start with ``_`` become the saga's data;
- a **reply** from a participant: ``message_type`` is one of the step's reply types (success, failure, or the
  compensation's done type; any other type answering a compensation means it failed), ``command_id`` is the
  command it answers, ``reason`` may say why it failed; the config's ``reply_columns`` are merged into the saga's
  data (a payment id a refund needs later).

**Out** (one schema, :func:`saga_output_schema`): every row has a ``topic`` (a Kafka sink routes by it with
``topic_column: topic``) and a ``kind``:

- ``command``: to a participant's commands topic, with ``command_id`` (:func:`command_id`), ``idempotency_key``
  (``saga_id:step``, or ``saga_id:step.compensate``: the same for every attempt; a participant applies a key
  once and answers a repeat with its first reply: deduplicating by ``command_id`` would apply a retry of a step
  whose reply was lost a second time), ``message_type`` (the command's type), ``payload`` (the saga's data as
  JSON) and ``reply_to`` (the topic the participant replies on);
- ``event``: a lifecycle event (:data:`LIFECYCLE_EVENTS`) to the saga events topic, with the saga's ``status``
  after it, the ``step``, ``attempt`` and ``command_id`` it concerns (the command answered, failed or retried),
  the ``reason`` and, for a timeout, the ``deadline_ms`` it fired for;
- ``dead_letter``: a parked saga (``SagaStuck``) once more, to the stuck topic, so an operator's dead-letter
  tooling sees it.

Every row carries the saga's ``sequence`` (1, 2, 3 ... per saga, over all its rows: the order they were
decided), ``time_ms`` (the processing time it was decided at) and the saga's trace context (``_traceparent``, the
start row's), so a whole saga is one trace across participants and Kafka hops.
"""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

__all__ = [
    "COMMAND",
    "COMPENSATE_SUFFIX",
    "DEAD_LETTER",
    "EVENT",
    "LIFECYCLE_EVENTS",
    "STATUSES",
    "TERMINAL_STATUSES",
    "CommandId",
    "command_id",
    "idempotency_key",
    "parse_command_id",
    "saga_output_schema",
]

COMMAND = "command"
EVENT = "event"
DEAD_LETTER = "dead_letter"

SAGA_STARTED = "SagaStarted"
STEP_COMPLETED = "StepCompleted"
STEP_FAILED = "StepFailed"  # a failure reply or a timeout; a retry or the compensation follows
STEP_RETRIED = "StepRetried"
COMPENSATING = "Compensating"
COMPENSATED = "Compensated"  # one step's compensation done
COMPLETED = "Completed"
ABORTED = "Aborted"  # every step that may have happened is compensated, in reverse order
SAGA_STUCK = "SagaStuck"  # parked: an operator decides
SAGA_RECOVERED = "SagaRecovered"  # a choreography monitor's: what it reported stuck arrived after all
LIFECYCLE_EVENTS = (
    SAGA_STARTED, STEP_COMPLETED, STEP_FAILED, STEP_RETRIED, COMPENSATING, COMPENSATED, COMPLETED, ABORTED, SAGA_STUCK,
    SAGA_RECOVERED,
)  # fmt: skip

RUNNING = "running"
COMPENSATING_STATUS = "compensating"
STATUS_COMPLETED = "completed"
STATUS_ABORTED = "aborted"
STATUS_STUCK = "stuck"
STATUSES = (RUNNING, COMPENSATING_STATUS, STATUS_COMPLETED, STATUS_ABORTED, STATUS_STUCK)
TERMINAL_STATUSES = frozenset({STATUS_COMPLETED, STATUS_ABORTED, STATUS_STUCK})

COMPENSATE_SUFFIX = ".compensate"


class CommandId(NamedTuple):
    saga_id: str
    step: str
    compensation: bool
    attempt: int


def command_id(saga_id: str, step: str, attempt: int, compensation: bool = False) -> str:
    """``saga_id:step:attempt`` (``saga_id:step.compensate:attempt`` for a compensation): a participant that has
    applied ``saga_id:step`` once answers every later attempt with the reply it gave, and applies nothing."""
    return f"{saga_id}:{step}{COMPENSATE_SUFFIX if compensation else ''}:{attempt}"


def parse_command_id(value: str) -> CommandId | None:
    """The parts of a :func:`command_id` (a saga id may hold ``:``); None when ``value`` is not one."""
    parts = value.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].isdigit():
        return None
    saga_id, step, attempt = parts
    compensation = step.endswith(COMPENSATE_SUFFIX)
    if compensation:
        step = step[: -len(COMPENSATE_SUFFIX)]
    return CommandId(saga_id, step, compensation, int(attempt)) if step else None


def idempotency_key(saga_id: str, step: str, compensation: bool = False) -> str:
    """What a participant applies once: ``saga_id:step`` (``saga_id:step.compensate``), whatever the attempt."""
    return f"{saga_id}:{step}{COMPENSATE_SUFFIX if compensation else ''}"


OUTPUT_COLUMNS = (
    "topic", "kind", "saga", "message_type", "command_id", "step", "attempt", "status", "reason", "idempotency_key",
    "payload",
    "reply_to", "deadline_ms", "sequence", "time_ms", "_traceparent", "_timestamp",
)  # fmt: skip


def saga_output_schema(key: str) -> pa.Schema:
    """The schema of every row a saga stage keyed by ``key`` emits."""
    return pa.schema(
        [
            ("topic", pa.string()),
            ("kind", pa.string()),
            (key, pa.string()),
            ("saga", pa.string()),
            ("message_type", pa.string()),
            ("command_id", pa.string()),
            ("step", pa.string()),
            ("attempt", pa.int32()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("idempotency_key", pa.string()),
            ("payload", pa.string()),
            ("reply_to", pa.string()),
            ("deadline_ms", pa.int64()),
            ("sequence", pa.int64()),
            ("time_ms", pa.int64()),
            ("_traceparent", pa.string()),
            ("_timestamp", pa.int64()),
        ]
    )
