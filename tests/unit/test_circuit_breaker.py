"""The dead-letter circuit breaker: an invalid ratio over a sliding window of recent events, and runs of invalid
events across batch boundaries; what it raises reaches the operator, across actor boundaries."""

from __future__ import annotations

import pickle
from typing import cast

import numpy as np
import pytest

from pipelines.config.kafka import CircuitBreakerConfig
from pipelines.errors import EventrayError, FatalError, PipelineHalted
from pipelines.stages.circuit_breaker import CircuitBreaker

WHERE = "source-actor-3/orders[5]"
NEVER = 1_000_000  # a limit that no test reaches


def breaker(
    max_invalid_ratio: float = 1.0,
    window_events: int = NEVER,
    min_events: int = 1,
    max_consecutive_invalid: int = NEVER,
) -> CircuitBreaker:
    config = CircuitBreakerConfig(
        max_invalid_ratio=max_invalid_ratio,
        window_events=window_events,
        min_events=min_events,
        max_consecutive_invalid=max_consecutive_invalid,
    )
    return CircuitBreaker(config, WHERE)


def mask(pattern: str) -> np.ndarray:
    """``"x..x"``: ``x`` an invalid event, ``.`` a valid one."""
    return np.array([char == "x" for char in pattern], dtype=bool)


def alternating(events: int, invalid_every: int) -> np.ndarray:
    return cast(np.ndarray, np.arange(events) % invalid_every == 0)


# --- the invalid ratio ----------------------------------------------------------------------------------------


def test_ratio_gives_no_verdict_before_min_events() -> None:
    cb = breaker(max_invalid_ratio=0.5, min_events=10)
    cb.observe(mask("x" * 9))  # 100 % invalid, but only 9 events
    with pytest.raises(PipelineHalted, match=r"90% of the last 10 events were invalid \(limit 50%\)"):
        cb.observe(mask("."))


def test_ratio_trips_strictly_above_the_limit_not_at_it() -> None:
    cb = breaker(max_invalid_ratio=0.5, min_events=10)
    cb.observe(mask("x." * 5))  # exactly 50 %
    cb.observe(mask("x." * 50))  # still exactly 50 %
    with pytest.raises(PipelineHalted, match="circuit breaker tripped"):
        cb.observe(mask("x"))  # 56 of 111


def test_ratio_below_the_limit_never_trips() -> None:
    cb = breaker(max_invalid_ratio=0.25, window_events=100, min_events=10)
    for _ in range(100):
        cb.observe(alternating(50, invalid_every=5))  # 20 %


def test_old_good_batches_age_out_of_the_window() -> None:
    cb = breaker(max_invalid_ratio=0.5, window_events=100, min_events=10)
    for _ in range(10):
        cb.observe(mask("." * 10))
    for _ in range(8):
        cb.observe(mask("x" * 6 + "." * 4))  # the last 100 events: 48 invalid
    # Over every event seen this is 54 of 190; over the last 100 it is 54 %.
    with pytest.raises(PipelineHalted, match=r"54% of the last 100 events were invalid"):
        cb.observe(mask("x" * 6 + "." * 4))


def test_the_window_keeps_at_least_window_events() -> None:
    # One big batch cannot be split: it stays in the window until newer batches alone cover window_events.
    cb = breaker(max_invalid_ratio=0.5, window_events=100, min_events=10)
    cb.observe(mask("." * 1_000))
    for _ in range(9):
        cb.observe(mask("x" * 10))  # 90 invalid after 1,000 valid: 8 %
    with pytest.raises(PipelineHalted, match=r"100% of the last 100 events"):
        cb.observe(mask("x" * 10))  # now the last 100 events are all invalid


def test_empty_batches_are_ignored() -> None:
    cb = breaker(max_invalid_ratio=0.5, min_events=2, max_consecutive_invalid=3)
    cb.observe(mask(""))
    cb.observe(mask("x."))
    cb.observe(mask(""))
    cb.observe(mask("x."))


# --- runs of invalid events -----------------------------------------------------------------------------------


def test_a_run_within_one_batch_trips_at_the_limit() -> None:
    cb = breaker(max_consecutive_invalid=5)
    cb.observe(mask(".xxxx.xxxx."))
    with pytest.raises(PipelineHalted, match=r"5 invalid events in a row \(limit 5\)"):
        cb.observe(mask("..xxxxx.."))


def test_a_run_spans_the_trailing_run_of_one_batch_and_the_leading_run_of_the_next() -> None:
    cb = breaker(max_consecutive_invalid=5)
    cb.observe(mask("x.xxx"))
    with pytest.raises(PipelineHalted, match="5 invalid events in a row"):
        cb.observe(mask("xx."))


def test_a_run_spans_an_all_invalid_batch() -> None:
    cb = breaker(max_consecutive_invalid=6)
    cb.observe(mask(".xx"))
    cb.observe(mask("xx"))
    with pytest.raises(PipelineHalted, match="6 invalid events in a row"):
        cb.observe(mask("xx..."))


def test_an_empty_batch_does_not_break_a_run() -> None:
    cb = breaker(max_consecutive_invalid=5)
    cb.observe(mask("xxx"))
    cb.observe(mask(""))
    with pytest.raises(PipelineHalted, match="5 invalid events in a row"):
        cb.observe(mask("xx"))


def test_a_run_one_short_of_the_limit_does_not_trip() -> None:
    cb = breaker(max_consecutive_invalid=5)
    cb.observe(mask("..xx"))
    cb.observe(mask("xx.xxxx"))
    cb.observe(mask(".xxxx."))


def test_a_valid_event_resets_the_run() -> None:
    cb = breaker(max_consecutive_invalid=5)
    cb.observe(mask("xxxx"))
    cb.observe(mask("."))
    cb.observe(mask("xxxx"))
    cb.observe(mask(".xxxx"))
    cb.observe(mask(".xxxx"))


def test_a_valid_event_at_the_end_of_a_batch_resets_the_run() -> None:
    cb = breaker(max_consecutive_invalid=5)
    cb.observe(mask("xxxx."))
    cb.observe(mask("xxxx"))


# --- what reaches the operator --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cb", "batch"),
    [
        (breaker(max_invalid_ratio=0.5, min_events=4), mask("xxx.")),
        (breaker(max_consecutive_invalid=3), mask("xxx")),
    ],
    ids=["ratio", "consecutive"],
)
def test_halt_message_says_what_tripped_where_and_what_to_do(cb: CircuitBreaker, batch: np.ndarray) -> None:
    with pytest.raises(PipelineHalted) as caught:
        cb.observe(batch)
    message = str(caught.value)
    assert message.startswith(f"dead-letter circuit breaker tripped at {WHERE}: ")
    assert "Operator action: check the producer's latest deploy and the schema" in message
    assert "input resumes from the committed offsets" in message


def test_halt_message_formats_large_counts_with_separators() -> None:
    cb = breaker(max_consecutive_invalid=12_345)
    with pytest.raises(PipelineHalted, match=r"12,345 invalid events in a row \(limit 12,345\)"):
        cb.observe(np.ones(12_345, dtype=bool))


def test_pipeline_halted_survives_a_pickle_round_trip() -> None:
    with pytest.raises(PipelineHalted) as caught:
        breaker(max_consecutive_invalid=2).observe(mask("xx"))
    copied = pickle.loads(pickle.dumps(caught.value))
    assert type(copied) is PipelineHalted
    assert str(copied) == str(caught.value)
    assert copied.args == caught.value.args


def test_pipeline_halted_is_fatal() -> None:
    assert issubclass(PipelineHalted, FatalError)
    assert issubclass(PipelineHalted, EventrayError)
