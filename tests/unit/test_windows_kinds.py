"""Hopping, sliding and session windows, lateness, early updates and state formats: worked examples."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipelines.config.pipeline import AggregateConfig, AggregationConfig, HoppingWindowConfig, SessionWindowConfig
from pipelines.state.keyed_operator import StateFormatError, tag_state
from pipelines.windows.tumbling import IS_FINAL, WINDOW_END, WINDOW_START, open_windows
from tests.unit.test_windows_reference import MODES, WINDOWS, batch_of, by_window, config_for

COLUMNS = ["k", WINDOW_START, WINDOW_END, "n", "total", "avg", "lo", "hi"]


def test_session_row_bridging_two_sessions_merges_them() -> None:
    windows = open_windows(config_for("session"))  # gap 6
    windows.add(batch_of([("a", 1, 0), ("a", 2, 2), ("a", 3, 10), ("b", 4, 5)]))
    assert windows.state_rows == 3  # a: [0, 8) and [10, 16); b: [5, 11)
    windows.add(batch_of([("a", 10, 6)]))  # 6 - 2 < 6 and 10 - 6 < 6: one session [0, 16)
    assert windows.state_rows == 2
    result = by_window(windows.flush())
    assert result[("a", 0)] == {
        "k": "a",
        WINDOW_START: 0,
        WINDOW_END: 16,
        "n": 4,
        "total": 16,
        "avg": 4.0,
        "lo": 1,
        "hi": 10,
    }
    assert result[("b", 5)][WINDOW_END] == 11


def test_session_gap_of_exactly_gap_ms_splits() -> None:
    windows = open_windows(config_for("session"))
    windows.add(batch_of([("a", 1, 0), ("a", 1, 6)]))
    assert set(by_window(windows.flush())) == {("a", 0), ("a", 6)}


def test_sliding_window_per_distinct_event_time() -> None:
    windows = open_windows(config_for("sliding"))  # size 10: (t - 10, t]
    windows.add(batch_of([("a", 1, 0), ("a", 2, 5), ("a", 4, 10), ("a", 8, 10)]))
    assert by_window(windows.advance(6)) == {
        ("a", -9): {"k": "a", WINDOW_START: -9, WINDOW_END: 1, "n": 1, "total": 1, "avg": 1.0, "lo": 1, "hi": 1},
        ("a", -4): {"k": "a", WINDOW_START: -4, WINDOW_END: 6, "n": 2, "total": 3, "avg": 1.5, "lo": 1, "hi": 2},
    }
    last = by_window(windows.flush())
    assert last[("a", 1)]["n"] == 3  # times 5, 10, 10: 0 is not in (0, 10]
    assert windows.state_rows == 0


def test_hopping_row_counts_in_every_window_of_it() -> None:
    windows = open_windows(config_for("hopping"))  # size 12, hop 4
    windows.add(batch_of([("a", 1, 5)]))
    assert sorted(by_window(windows.flush())) == [("a", -4), ("a", 0), ("a", 4)]


def test_hopping_row_partly_expired_counts_in_open_windows_only() -> None:
    windows = open_windows(config_for("hopping"))
    windows.add(batch_of([("a", 1, 20)]))
    windows.advance(10)  # closes [-4, 8)
    added = windows.add(batch_of([("a", 7, 5)]))  # windows [-4, 8), [0, 12), [4, 16): the first has closed
    assert added.late is None
    result = by_window(windows.flush())
    assert (("a", -4) in result, result[("a", 0)]["total"], result[("a", 4)]["total"]) == (False, 7, 7)


def test_allowed_lateness_updates_then_finalises() -> None:
    windows = open_windows(config_for("tumbling", "lateness"))  # size 10, lateness 15
    windows.add(batch_of([("a", 1, 3)]))
    on_time = by_window(windows.advance(10))
    assert on_time[("a", 0)][IS_FINAL] is False
    update = by_window(windows.add(batch_of([("a", 5, 4)])).output)
    assert (update[("a", 0)]["n"], update[("a", 0)][IS_FINAL]) == (2, False)
    final = by_window(windows.advance(25))
    assert (final[("a", 0)]["n"], final[("a", 0)][IS_FINAL]) == (2, True)
    late = windows.add(batch_of([("a", 5, 4)])).late
    assert late is not None
    assert late.num_rows == 1


def test_early_updates_fire_at_multiples_of_early_update_ms() -> None:
    windows = open_windows(config_for("tumbling", "early"))  # size 10, early every 7
    windows.add(batch_of([("a", 1, 12), ("b", 2, 30)]))
    assert set(by_window(windows.advance(1))) == {("a", 10), ("b", 30)}  # the first watermark is a crossing
    assert windows.advance(6) is None
    early = by_window(windows.advance(7))
    assert {key: row[IS_FINAL] for key, row in early.items()} == {("a", 10): False, ("b", 30): False}
    assert windows.advance(13) is None  # 13 // 7 == 7 // 7
    closing = by_window(windows.advance(20))  # closes [10, 20), crosses 14: early update of b only
    assert {key: row[IS_FINAL] for key, row in closing.items()} == {("a", 10): True, ("b", 30): False}


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_output_schema_is_unchanged_without_updates_and_has_is_final_with_them(kind: str) -> None:
    for mode, expected in (("plain", COLUMNS), ("lateness", [*COLUMNS, IS_FINAL])):
        windows = open_windows(config_for(kind, mode))
        windows.add(batch_of([("a", 1, 1)]))
        result = windows.flush()
        assert result is not None
        assert result.schema.names == expected
        assert (result.schema.field("n").type, result.schema.field("avg").type) == (pa.int64(), pa.float64())


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_trace_context_of_the_first_contributing_event(kind: str) -> None:
    windows = open_windows(config_for(kind, "both"), carry_trace=True)
    batch = batch_of([("a", 1, 2), ("a", 2, 1)]).append_column("_traceparent", pa.array(["late-arrival", "earliest"]))
    windows.add(batch)
    result = windows.flush()
    assert result is not None
    assert result.schema.names[-2:] == [IS_FINAL, "_traceparent"]
    traces = result.column("_traceparent").to_pylist()
    assert set(traces) <= {"late-arrival", "earliest"}
    if kind in ("sliding", "session"):  # defined as the earliest event time
        assert traces[0] == "earliest"


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_rows_without_event_time_are_returned_whole(kind: str) -> None:
    windows = open_windows(config_for(kind))
    batch = pa.record_batch(
        {"k": ["a", "a"], "v": pa.array([1, 2], pa.int64()), "_timestamp": pa.array([None, 5], pa.int64())}
    )
    added = windows.add(batch)
    assert added.no_event_time is not None
    assert added.no_event_time.to_pylist() == [{"k": "a", "v": 1, "_timestamp": None}]
    assert sum(int(str(row["n"])) for row in by_window(windows.flush()).values()) >= 1


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_watermark_only_moves_forward(kind: str) -> None:
    windows = open_windows(config_for(kind))
    windows.add(batch_of([("a", 1, 50)]))
    assert windows.advance(40) is None
    assert windows.advance(5) is None
    assert windows.watermark_ms == 40


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_restoring_another_operators_state_raises(kind: str) -> None:
    windows = open_windows(config_for(kind))
    windows.add(batch_of([("a", 1, 1)]))
    other = "session" if kind != "session" else "tumbling"
    for state in (open_windows(config_for(other)).snapshot(), tag_state(windows.snapshot(), f"{kind}/0")):
        with pytest.raises(StateFormatError) as caught:
            open_windows(config_for(kind)).restore(state, 0)
        assert "Operator action:" in str(caught.value)
        assert isinstance(pickle.loads(pickle.dumps(caught.value)), StateFormatError)
    with pytest.raises(StateFormatError):
        open_windows(config_for(kind)).restore(windows.snapshot().replace_schema_metadata(None), 0)


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_a_snapshot_is_immutable_and_keeps_the_key_column(kind: str) -> None:
    windows = open_windows(config_for(kind, "lateness"))
    windows.add(batch_of([("a", 1, 1), ("b", 2, 3)]))
    snapshot = windows.snapshot()
    before = snapshot.to_pylist()
    windows.add(batch_of([("a", 5, 2)]))
    windows.flush()
    assert snapshot.to_pylist() == before
    assert set(snapshot.column("k").to_pylist()) == {"a", "b"}


def test_modes_cover_lateness_and_early_updates() -> None:
    assert {config_for("tumbling", mode).emits_updates for mode in MODES} == {False, True}


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"type": "hopping", "size_ms": 10, "hop_ms": 20}, "hop_ms (20) exceeds size_ms (10)"),
        ({"type": "hopping", "size_ms": 10, "hop_ms": 4}, "choose a hop_ms that divides size_ms (e.g. 2)"),
        ({"type": "session", "gap_ms": 0}, "greater than 0"),
    ],
)
def test_window_config_errors_name_the_field_and_the_fix(window: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AggregateConfig(key="k", window=window, aggregations={"n": AggregationConfig(fn="count")})  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_window_types_parse_and_untyped_window_is_tumbling() -> None:
    def window_of(data: dict[str, object]) -> object:
        return AggregateConfig.model_validate(
            {"key": "k", "window": data, "aggregations": {"n": {"fn": "count"}}}
        ).window

    assert window_of({"size_ms": 5}).type == "tumbling"  # type: ignore[attr-defined]
    assert window_of({"type": "hopping", "size_ms": 10, "hop_ms": 5}) == HoppingWindowConfig(
        type="hopping", size_ms=10, hop_ms=5
    )
    assert window_of({"type": "session", "gap_ms": 3}) == SessionWindowConfig(type="session", gap_ms=3)


def test_is_final_is_a_reserved_name_when_updates_are_on() -> None:
    data = {"key": "k", "window": {"size_ms": 5}, "aggregations": {"is_final": {"fn": "count"}}}
    AggregateConfig.model_validate(data)  # without updates there is no is_final column
    with pytest.raises(ValidationError, match=r"aggregations\.is_final"):
        AggregateConfig.model_validate({**data, "allowed_lateness_ms": 1})
