"""What a saga is made of: ordered steps, each a command to a participant with the replies it waits for, a
compensation, a timeout and a retry policy; a pivot after which only forward recovery applies.

A definition is checked when it is made (:class:`Saga`): a step before the pivot without a compensation or a
timeout, two steps of one name, a reply type two steps share, all raise :class:`~pipelines.errors.ConfigError`
naming the step and the fix. Loaded from a config by import path (:func:`load_saga`).

Recovery, as :mod:`pipelines.sagas.machine` carries it out:

- a step before the pivot that fails (a failure reply, or no reply after its last attempt) compensates every
  step that may have happened, newest first: the completed ones, and the failed one too when it timed out
  (its command may have been applied with the reply lost, so its compensation must be a no-op when nothing
  was applied);
- the pivot failing with a reply compensates the steps before it; the pivot timing out after its last attempt,
  or a step after the pivot failing after its last attempt, parks the saga (``SagaStuck``): past the pivot
  nothing is undone;
- a compensation that fails is retried by ``Saga.compensation_retry``; after its last attempt the saga is
  parked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import ConfigError
from pipelines.state.user_code import import_user_attribute

__all__ = ["Command", "Retry", "Saga", "Step", "load_saga"]


@dataclass(frozen=True)
class Retry:
    """``attempts`` in all (1: no retry); the n-th retry waits ``backoff_ms * multiplier**(n-1)``, at most
    ``max_backoff_ms``."""

    attempts: int = 3
    backoff_ms: int = 1_000
    multiplier: float = 2.0
    max_backoff_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"Retry.attempts is {self.attempts}: at least 1 (1 tries once, no retry)")
        if self.backoff_ms < 0 or self.max_backoff_ms < self.backoff_ms:
            raise ConfigError(
                f"Retry.backoff_ms {self.backoff_ms} / max_backoff_ms {self.max_backoff_ms}: need "
                "0 <= backoff_ms <= max_backoff_ms"
            )
        if self.multiplier < 1.0:
            raise ConfigError(f"Retry.multiplier is {self.multiplier}: at least 1.0 (1.0 waits the same each time)")

    def backoff_before(self, attempt: int) -> int:
        """How long to wait before ``attempt`` (2, 3, ...)."""
        return int(min(self.max_backoff_ms, self.backoff_ms * self.multiplier ** max(0, attempt - 2)))


@dataclass(frozen=True)
class Command:
    """A command of type ``type`` to the participant that reads ``topic``."""

    topic: str
    type: str

    def __post_init__(self) -> None:
        if not self.topic or not self.type:
            raise ConfigError(f"Command({self.topic!r}, {self.type!r}): name the topic and the command type")


@dataclass(frozen=True)
class Step:
    """One local transaction of a participant.

    ``success`` / ``failure``: the reply types that answer ``command`` (a failure means it was not applied).
    ``compensation`` undoes it; ``compensated`` is the reply type that says it did. ``timeout_ms``: how long an
    attempt waits for its reply (None: for ever; only after the pivot). ``pivot``: the point of no return.
    """

    name: str
    command: Command
    success: str
    failure: str
    compensation: Command | None = None
    compensated: str | None = None
    timeout_ms: int | None = None
    retry: Retry = field(default_factory=Retry)
    pivot: bool = False

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name or "." in self.name:
            raise ConfigError(f"step name {self.name!r}: a non-empty name without ':' or '.' (it is in command ids)")
        if (self.compensation is None) != (self.compensated is None):
            raise ConfigError(
                f"step {self.name!r}: give compensation and compensated together (the command that undoes the "
                "step, and the reply type that says it did)"
            )
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise ConfigError(f"step {self.name!r}: timeout_ms is {self.timeout_ms}; a positive time, or None")
        if self.success == self.failure:
            raise ConfigError(f"step {self.name!r}: success and failure are both {self.success!r}")
        if self.compensation is not None and self.compensation.topic != self.command.topic:
            raise ConfigError(
                f"step {self.name!r}: its compensation goes to {self.compensation.topic!r}, its command to "
                f"{self.command.topic!r}; send both to one topic, so that a compensation never overtakes the "
                "command it undoes"
            )


@dataclass(frozen=True)
class Saga:
    """A saga definition: ``start`` is the message type that starts one; ``steps`` run in order.

    At most one step is the ``pivot``; without one, every step is compensable. ``retention_ms``: how long a
    finished saga's state is kept (a start of the same saga id meanwhile is a duplicate and ignored).
    """

    name: str
    start: str
    steps: tuple[Step, ...]
    compensation_retry: Retry = field(default_factory=lambda: Retry(attempts=5))
    retention_ms: int = 86_400_000

    def __post_init__(self) -> None:
        if self.retention_ms <= 0:
            raise ConfigError(
                f"saga {self.name!r}: retention_ms is {self.retention_ms}; a positive time a finished saga is "
                "remembered (a start of the same id meanwhile is a duplicate)"
            )
        if not self.steps:
            raise ConfigError(f"saga {self.name!r} has no steps")
        names = [step.name for step in self.steps]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigError(f"saga {self.name!r}: step name(s) {twice} used twice; each step needs its own")
        pivots = [step.name for step in self.steps if step.pivot]
        if len(pivots) > 1:
            raise ConfigError(f"saga {self.name!r}: steps {pivots} are all pivots; mark at most one")
        replies = [r for step in self.steps for r in (step.success, step.failure, step.compensated) if r]
        shared = sorted({r for r in replies if replies.count(r) > 1} | ({self.start} & set(replies)))
        if shared:
            raise ConfigError(f"saga {self.name!r}: reply type(s) {shared} are used twice; each names one outcome")
        for step in self.steps[: self.pivot_index]:
            if step.compensation is None or step.timeout_ms is None:
                raise ConfigError(
                    f"saga {self.name!r}: step {step.name!r} comes before the pivot, so it needs a compensation "
                    "and a timeout_ms (a failure later must be able to undo it, and a lost reply must end)"
                )

    @property
    def pivot_index(self) -> int:
        """The pivot's index; ``len(steps)`` when there is none (every step is compensable)."""
        return next((i for i, step in enumerate(self.steps) if step.pivot), len(self.steps))


def load_saga(path: str, options: dict[str, Any] | None = None) -> Saga:
    """Import ``module:attr``: a :class:`Saga`, or a callable that returns one when called with ``options`` as
    keyword arguments. Raises :class:`ConfigError` naming the path when it cannot be imported, cannot be made,
    or is something else."""
    target = import_user_attribute(path, "saga")
    if isinstance(target, Saga) and options:
        raise ConfigError(f"saga {path!r} is a Saga, which takes no options; name a factory, or remove options")
    if not isinstance(target, Saga) and callable(target):
        try:
            target = target(**(options or {}))
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - user code: say whose call failed and how
            raise ConfigError(
                f"saga {path!r} could not be made with options {options or {}}: {type(error).__name__}: {error}"
            ) from None
    if not isinstance(target, Saga):
        raise ConfigError(f"saga {path!r} is a {type(target).__name__}, not a Saga (or a factory returning one)")
    return target
