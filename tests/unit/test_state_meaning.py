"""A snapshot records what its state means (key column, window, the partial aggregates it holds, function), and a
restore under another meaning is refused with the difference named, while changes that keep the meaning (the
aggregations reordered, some removed, tracing turned on) restore and continue as an uninterrupted run would."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config.pipeline import AggregateConfig, AggregationConfig, TumblingWindowConfig
from pipelines.config.state import DedupConfig, UpsertConfig
from pipelines.state.dedup import Dedup
from pipelines.state.keyed_operator import (
    STATE_FORMAT_KEY,
    STATE_MEANING_KEY,
    StateFormatError,
    StateMeaning,
    tag_state,
)
from pipelines.state.process_function import KeyedProcess
from pipelines.state.upsert_table import UpsertTable
from pipelines.windows.plan import TRACEPARENT
from pipelines.windows.tumbling import open_windows
from tests.unit.test_process_function import RunningBalance
from tests.unit.test_windows_reference import (
    AGGREGATIONS,
    MODES,
    WINDOWS,
    batch_of,
    config_for,
    run,
    schedule,
    steps_strategy,
)
from tests.unit.test_windows_reference import rows_strategy as window_rows

ROWS = [("a", 1, 1), ("b", 2, 3), ("a", 5, 4), (None, 7, 2), ("b", None, 12)]


def with_aggregations(config: AggregateConfig, names: list[str]) -> AggregateConfig:
    return config.model_copy(update={"aggregations": {name: AGGREGATIONS[name] for name in names}})


def snapshot_of(config: AggregateConfig, carry_trace: bool = False) -> tuple[pa.Table, int]:
    windows = open_windows(config, carry_trace)
    windows.add(batch_of(ROWS))
    windows.advance(2)
    return windows.snapshot(), windows.watermark_ms


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", sorted(WINDOWS))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    rows=window_rows,
    steps=steps_strategy,
    cut=st.integers(0, 12),
    kept=st.permutations(sorted(AGGREGATIONS)).flatmap(lambda names: st.integers(1, len(names)).map(
        lambda count: names[:count])),
)  # fmt: skip
def test_reordered_or_fewer_aggregations_restore_and_continue_as_an_uninterrupted_run(
    kind: str, mode: str, rows: list[tuple[str | None, int | None, int]], steps: list[tuple[int, int | None]],
    cut: int, kept: list[str],
) -> None:  # fmt: skip
    written_under = config_for(kind, mode)
    restored_under = with_aggregations(written_under, kept)
    planned = schedule(rows, steps)
    cut = min(cut, len(planned))
    expected = run(open_windows(restored_under), planned)

    first = open_windows(written_under)
    head = run(first, planned[:cut], flush=False)
    second = open_windows(restored_under)
    second.restore(first.snapshot(), first.watermark_ms)
    assert run(second, planned[cut:]) == expected[len(head) :]


def test_partials_are_named_by_meaning_so_the_order_of_aggregations_does_not_matter() -> None:
    config = config_for("tumbling")
    state, _ = snapshot_of(config)
    assert {"count(*)", "sum(v)", "count(v)", "min(v)", "max(v)"} <= set(state.column_names)
    reordered = with_aggregations(config, sorted(AGGREGATIONS, reverse=True))
    assert state.schema.metadata[STATE_MEANING_KEY] == snapshot_of(reordered)[0].schema.metadata[STATE_MEANING_KEY]


@pytest.mark.parametrize("kind", sorted(set(WINDOWS) - {"sliding"}))  # sliding state holds rows, not partials
def test_an_added_aggregation_needing_a_partial_the_state_lacks_is_refused_naming_it(kind: str) -> None:
    config = with_aggregations(config_for(kind), ["n", "total"])
    state, watermark = snapshot_of(config)
    grown = config.model_copy(update={"aggregations": {**config.aggregations, "avg": AGGREGATIONS["avg"],
                                                       "hi": AGGREGATIONS["hi"]}})  # fmt: skip
    with pytest.raises(StateFormatError) as refused:
        open_windows(grown).restore(state, watermark)
    message = str(refused.value)
    assert "count(v), which aggregation 'avg' needs" in message
    assert "max(v), which aggregation 'hi' needs" in message
    assert "Operator action:" in message


def test_sliding_state_holds_event_columns_so_a_new_aggregation_over_a_held_column_restores() -> None:
    config = with_aggregations(config_for("sliding"), ["n"])
    state, watermark = snapshot_of(with_aggregations(config_for("sliding"), ["total"]))
    grown = with_aggregations(config, ["total", "hi"])
    open_windows(grown).restore(state, watermark)  # max(v) reads v, which the rows hold
    with pytest.raises(StateFormatError, match="it holds no v, which"):
        open_windows(grown).restore(snapshot_of(config)[0], watermark)  # count(*) alone kept no column


@pytest.mark.parametrize(
    ("kind", "changed", "fact"),
    [
        ("tumbling", TumblingWindowConfig(size_ms=20), "window was 'tumbling size_ms=10' where this pipeline has "
                                                       "'tumbling size_ms=20'"),
        ("hopping", WINDOWS["hopping"].model_copy(update={"hop_ms": 6}), "hop_ms=4"),
        ("session", WINDOWS["session"].model_copy(update={"gap_ms": 7}), "'session gap_ms=6' where"),
        ("sliding", WINDOWS["sliding"].model_copy(update={"size_ms": 11}), "'sliding size_ms=10' where"),
    ],
)  # fmt: skip
def test_another_window_is_refused_naming_both(kind: str, changed: object, fact: str) -> None:
    state, watermark = snapshot_of(config_for(kind))
    with pytest.raises(StateFormatError, match=fact.replace("(", r"\(")):
        open_windows(config_for(kind).model_copy(update={"window": changed})).restore(state, watermark)


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_another_key_column_is_refused(kind: str) -> None:
    state, watermark = snapshot_of(config_for(kind))
    with pytest.raises(StateFormatError, match="key was 'k' where this pipeline has 'id'"):
        open_windows(config_for(kind).model_copy(update={"key": "id"})).restore(state, watermark)


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_tracing_turned_on_since_restores_and_results_carry_trace_context_where_it_is_known(kind: str) -> None:
    state, watermark = snapshot_of(config_for(kind), carry_trace=False)
    traced = open_windows(config_for(kind), carry_trace=True)
    traced.restore(state, watermark)
    later = batch_of([("a", 3, 5)]).append_column(TRACEPARENT, pa.array(["00-" + "1" * 32 + "-" + "2" * 16 + "-01"]))
    traced.add(later)
    results = traced.flush()
    assert results is not None and TRACEPARENT in results.column_names
    untraced = open_windows(config_for(kind))
    untraced.restore(state, watermark)
    untraced.add(batch_of([("a", 3, 5)]))
    assert results.drop_columns([TRACEPARENT]).to_pylist() == untraced.flush().to_pylist()  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_window_state_of_the_first_format_is_refused_with_the_action(kind: str) -> None:
    """Format 1 named partials by position (``__p0``): which aggregation they belonged to is unknown."""
    state, watermark = snapshot_of(config_for(kind))
    old = tag_state(state.replace_schema_metadata(None), f"{kind}/1")
    with pytest.raises(StateFormatError, match=rf"written as '{kind}/1', this operator reads '{kind}/2'"):
        open_windows(config_for(kind)).restore(old, watermark)


def test_dedup_upsert_and_process_state_names_its_key_and_refuses_another() -> None:
    dedup = Dedup(DedupConfig(id_column="event_id", ttl_ms=10)).snapshot()
    with pytest.raises(StateFormatError, match="id_column was 'event_id' where this pipeline has 'order_id'"):
        Dedup(DedupConfig(id_column="order_id", ttl_ms=10)).restore(dedup, 0)
    upsert = UpsertTable(UpsertConfig(key="sku", delete_column="gone")).snapshot()
    with pytest.raises(StateFormatError, match="delete_column was 'gone' where this pipeline has '\\(none\\)'"):
        UpsertTable(UpsertConfig(key="sku")).restore(upsert, 0)
    process = KeyedProcess("customer", RunningBalance()).snapshot()
    with pytest.raises(StateFormatError, match="key was 'customer' where this pipeline has 'account'"):
        KeyedProcess("account", RunningBalance()).restore(process, 0)


class OtherBalance(RunningBalance):
    """Another class: its pickled state may mean something else."""


def test_process_state_of_another_function_class_is_refused_naming_both() -> None:
    state = KeyedProcess("customer", RunningBalance()).snapshot()
    with pytest.raises(StateFormatError) as refused:
        KeyedProcess("customer", OtherBalance()).restore(state, 0)
    assert "test_process_function:RunningBalance' where this pipeline has" in str(refused.value)
    assert "test_state_meaning:OtherBalance'" in str(refused.value)


def test_a_snapshot_without_a_recorded_meaning_is_checked_by_format_only() -> None:
    """Dedup, upsert and process snapshots written before meanings were recorded keep their layout: they still
    restore (their columns are checked as before)."""
    meaning = StateMeaning("dedup/1", {"id_column": "event_id"})
    legacy = tag_state(pa.table({"event_id": ["a"]}), "dedup/1")
    meaning.check(legacy)
    assert legacy.schema.metadata == {STATE_FORMAT_KEY: b"dedup/1"}
    with pytest.raises(StateFormatError, match="id_column was 'order_id' where this pipeline has 'event_id'"):
        meaning.check(StateMeaning("dedup/1", {"id_column": "order_id"}).tag(legacy))


def test_the_meaning_survives_being_split_by_key_group_and_concatenated() -> None:
    config = with_aggregations(config_for("tumbling"), ["n", "avg"])
    state, watermark = snapshot_of(config)
    is_a = pa.compute.equal(state.column("k"), "a").fill_null(False)
    pieces = pa.concat_tables([state.filter(pa.compute.invert(is_a)), state.filter(is_a)])
    assert pieces.schema.metadata == state.schema.metadata
    grown = config.model_copy(update={"aggregations": {"n": AggregationConfig(fn="count"),
                                                       "lo": AggregationConfig(fn="min", column="v")}})  # fmt: skip
    with pytest.raises(StateFormatError, match="min\\(v\\), which aggregation 'lo' needs"):
        open_windows(grown).restore(pieces, watermark)
