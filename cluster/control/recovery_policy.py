"""When the Supervisor restores a failed topology, and how long it waits first: plain state, no actor, no clock.

The Supervisor classifies a failure (:class:`Failure`: recoverable at all, a Kafka error that may pass, an actor
death) and asks :meth:`RecoveryPolicy.after` for the verdict; it does the restoring. The rules:

- a failure that no restore can get past (a config or data error an actor raised, a pipeline without
  checkpoints) ends the run: :class:`Verdict` ``restore`` False, with the reason;
- a transient Kafka error before the pipeline ever ran (no epoch completed, nothing resumed) is most likely a
  wrong address or a broker that is not there: the run ends at once rather than wait out the backoff;
- at most ``max_recoveries`` restorations are begun within any ``window_s``, and at most ``max_recoveries`` in
  a row without an epoch completing between them (one may itself fail while a broker is still down); the next
  failure ends the run, keeping the last checkpoint for a later run to resume from. A rate, not a total, as
  Flink's failure-rate restart strategy: a run of days survives failures spread over its life (a total of 20
  ended a one-hour run with a kill a minute), while a failure that keeps coming back, or a broker that stays
  down (20 restorations with the waits below: at least 7 minutes, however long each attempt takes), ends it;
- the first failure since an epoch completed is restored at once (a dead actor's replacement can start now);
  each further one in a row waits 0.5 s, doubling, at most 30 s (a broker still restarting, an actor that fails
  as it starts).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["Failure", "RecoveryPolicy", "Verdict"]

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Failure:
    """What the Supervisor knows of one failure: whether restoring from a checkpoint may get past it, whether
    it is a transient Kafka error, whether an actor died, and how many epochs had completed by then."""

    recoverable: bool
    transient_kafka: bool
    actor_died: bool
    epochs_completed: int


@dataclass(frozen=True)
class Verdict:
    """Restore after ``wait_s``, or end the run: ``exhausted`` when it ends because ``max_recoveries`` were
    tried within the window (else no restore gets past the failure)."""

    restore: bool
    wait_s: float = 0.0
    exhausted: bool = False


@dataclass
class RecoveryPolicy:
    """The restorations of one run so far (see the module docstring for the rules)."""

    max_recoveries: int
    window_s: float | None = None  # None: max_recoveries over the whole run
    resumed: bool = False  # the run resumed from an earlier run's checkpoint: it has run before
    tried: int = 0  # restorations begun in the whole run
    failed_in_a_row: int = 0  # failures without a completed epoch in between
    completed_at_failure: int = 0  # epochs completed at the last failure
    _begun_at_s: deque[float] = field(default_factory=deque)  # when the restorations within the window began

    def after(self, failure: Failure, now_s: float = 0.0) -> Verdict:
        """The verdict on ``failure`` at ``now_s`` (a monotonic clock's seconds); a restore is counted as begun."""
        ran = failure.epochs_completed > 0 or self.resumed
        if not failure.recoverable or (failure.transient_kafka and not failure.actor_died and not ran):
            return Verdict(False)
        while self._begun_at_s and self.window_s is not None and now_s - self._begun_at_s[0] >= self.window_s:
            self._begun_at_s.popleft()
        if failure.epochs_completed > self.completed_at_failure:
            self.failed_in_a_row = 0
        self.completed_at_failure = failure.epochs_completed
        if max(len(self._begun_at_s), self.failed_in_a_row) >= self.max_recoveries:
            return Verdict(False, exhausted=True)
        self.tried += 1
        self._begun_at_s.append(now_s)
        self.failed_in_a_row += 1
        return Verdict(True, wait_s=self._backoff_s())

    @property
    def counted(self) -> int:
        """The restorations the limit counts now: the larger of those within the window and those in a row."""
        return max(len(self._begun_at_s), self.failed_in_a_row)

    def _backoff_s(self) -> float:
        if self.failed_in_a_row == 1:
            return 0.0
        return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * float(2 ** (self.failed_in_a_row - 2)))
