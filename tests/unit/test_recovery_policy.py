"""The Supervisor's recovery policy, failure by failure, without Ray or a clock (cluster/control/recovery_policy.py)."""

from __future__ import annotations

from cluster.control.recovery_policy import Failure, RecoveryPolicy, Verdict


def died(epochs_completed: int) -> Failure:
    return Failure(recoverable=True, transient_kafka=False, actor_died=True, epochs_completed=epochs_completed)


def broker_down(epochs_completed: int) -> Failure:
    return Failure(recoverable=True, transient_kafka=True, actor_died=False, epochs_completed=epochs_completed)


def test_failures_in_a_row_back_off_doubling_and_a_completed_epoch_starts_over() -> None:
    policy = RecoveryPolicy(max_recoveries=20)

    waits = [policy.after(broker_down(epochs_completed=3)).wait_s for _ in range(9)]

    assert waits == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.after(died(epochs_completed=4)) == Verdict(True, 0.0), "an epoch completed since: at once"
    assert policy.after(died(epochs_completed=4)).wait_s == 0.5


def test_the_run_ends_after_max_recoveries_and_says_so() -> None:
    policy = RecoveryPolicy(max_recoveries=2)

    verdicts = [policy.after(died(epochs_completed=epoch)) for epoch in (1, 2, 3)]

    assert [verdict.restore for verdict in verdicts] == [True, True, False]
    assert verdicts[-1].exhausted and policy.tried == 2


def test_a_kafka_error_before_the_pipeline_ever_ran_ends_it_at_once() -> None:
    assert RecoveryPolicy(max_recoveries=5).after(broker_down(epochs_completed=0)) == Verdict(False)
    assert RecoveryPolicy(max_recoveries=5, resumed=True).after(broker_down(epochs_completed=0)).restore, (
        "a resumed run has run before: the broker may be restarting"
    )
    assert RecoveryPolicy(max_recoveries=5).after(died(epochs_completed=0)).restore, "an actor death is restored"
    assert RecoveryPolicy(max_recoveries=5).after(broker_down(epochs_completed=1)).restore


def test_a_failure_no_restore_gets_past_ends_the_run_without_counting_a_recovery() -> None:
    policy = RecoveryPolicy(max_recoveries=5)
    fatal = Failure(recoverable=False, transient_kafka=False, actor_died=False, epochs_completed=7)

    assert policy.after(fatal) == Verdict(False)
    assert policy.tried == 0 and policy.failed_in_a_row == 0


def test_max_recoveries_is_a_rate_within_the_window_so_a_long_run_survives_failures_spread_over_its_life() -> None:
    policy = RecoveryPolicy(max_recoveries=20, window_s=600)
    a_kill_a_minute = [policy.after(died(epochs_completed=minute), now_s=60.0 * minute) for minute in range(60)]

    assert all(verdict.restore for verdict in a_kill_a_minute), "at most 10 in any 600 s: 20 is never reached"
    assert policy.tried == 60

    bursting = [policy.after(died(epochs_completed=100 + i), now_s=4_000.0 + i) for i in range(18)]

    assert [verdict.restore for verdict in bursting] == [True] * 17 + [False], (
        "the kills of 3,420, 3,480 and 3,540 s are within 600 s of 4,000 s: 17 more fit"
    )
    assert bursting[-1].exhausted and policy.counted == 20


def test_without_a_window_max_recoveries_counts_the_whole_run() -> None:
    policy = RecoveryPolicy(max_recoveries=2, window_s=None)

    verdicts = [policy.after(died(epochs_completed=i), now_s=10_000.0 * i) for i in (1, 2, 3)]

    assert [verdict.restore for verdict in verdicts] == [True, True, False]


def test_a_failure_that_never_lets_an_epoch_complete_ends_the_run_however_slow_each_attempt() -> None:
    """A broker out of reach: each attempt takes its request timeout and more, so the window alone (20 in 600 s)
    would never fill; 20 in a row without a completed epoch end the run."""
    policy = RecoveryPolicy(max_recoveries=20, window_s=600)
    now_s, verdicts = 0.0, []
    for _ in range(21):
        verdicts.append(policy.after(broker_down(epochs_completed=7), now_s=now_s))
        now_s += verdicts[-1].wait_s + 60.0  # a minute per failed attempt

    assert [verdict.restore for verdict in verdicts] == [True] * 20 + [False]
    assert verdicts[-1].exhausted and policy.counted == 20
