"""Joins in process: the temporal and interval join of generator orders (8 partitions) with generator inventory
updates (3 partitions) equal a plain-Python reference (tests/join_reference.py) whatever the senders, owners,
batch sizes and how far the table side runs ahead or behind; then the operators' contracts one by one."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from cluster.control.supervisor import Supervisor
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, load_config, parse_config
from pipelines.config.secrets import resolve_secrets
from pipelines.config.state import JoinConfig
from pipelines.errors import ConfigError
from pipelines.eventtime.clock import ManualClock
from pipelines.io.records import RawBatch
from pipelines.stages.keyed_runner import KeyedStageRunner
from pipelines.stages.plan import compile_pipeline
from pipelines.stages.source_stage import SourceStage
from pipelines.stages.topology import partition_ids, partition_limits, pipeline_partition
from pipelines.state.interval_join import IntervalJoin
from pipelines.state.joins import LEFT, RIGHT, SIDE, JoinColumns
from pipelines.state.keyed_operator import StateFormatError
from pipelines.state.temporal_join import TemporalJoin
from pipelines.state.version_index import VersionIndex
from pipelines.testing import CollectingSink, InProcessOwners, run_stages
from pipelines.verify.join_check import wrong_joins
from tests.join_reference import as_of_join, generated_rows, identities, interval_join, window_join
from tests.reference import read_jsonl_dir
from tests.unit.test_supervisor_in_process import InProcessActors

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "orders_enriched.yaml"
START_MS = 1_700_000_000_000
MINUTE_MS = 60_000


def enriched(
    tmp_path: Path,
    max_events: int = 30_000,
    inventory_shift_ms: int = 0,
    rate_per_s: float = 10_000,
    inventory_operators: list[dict[str, Any]] | None = None,
    **keyed: Any,
) -> PipelineConfig:
    """configs/orders_enriched.yaml, bounded, its inventory starting ``inventory_shift_ms`` after the orders, both
    spaced in event time by ``rate_per_s``; ``keyed``: settings of the join."""
    overrides: dict[str, Any] = {
        "runtime.max_events": max_events,
        "inputs.orders.source.rate_per_s": rate_per_s,
        "inputs.inventory.source.rate_per_s": rate_per_s,
        "inputs.orders.source.start_time_ms": START_MS,
        "inputs.inventory.source.start_time_ms": START_MS + inventory_shift_ms,
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
        "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dlq")},
    }
    overrides.update({f"keyed.{name}": value for name, value in keyed.items()})
    if inventory_operators is not None:
        overrides["inputs.inventory.operators"] = inventory_operators
    return load_config(EXAMPLE, overrides)


def reference_inputs(config: PipelineConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    specs = config.all_inputs
    counts = [spec.source.partitions for spec in specs]  # type: ignore[union-attr]
    limits = partition_limits(partition_ids(counts), config.runtime.max_events)
    sides: list[list[dict[str, Any]]] = []
    for spec, event_type in zip(specs, ("OrderCreated", "InventoryUpdated"), strict=True):
        source = spec.source
        assert isinstance(source, GeneratorSourceConfig) and source.start_time_ms is not None
        own = {p: limits[pipeline_partition(spec.index, p)] or 0 for p in range(source.partitions)}
        sides.append(generated_rows(source, event_type, own, pipeline_partition(spec.index, 0), source.start_time_ms))
    return sides[0], sides[1]


def joined_rows(config: PipelineConfig, senders: int, owners: int, batch_size: int) -> list[dict[str, Any]]:
    run = run_stages(config, senders=senders, owners=owners, batch_size=batch_size)
    assert run.late.num_rows == 0, "no row is late: the generator's disorder is within max_out_of_order_ms"
    table = run.results.table()
    assert table is not None
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


@pytest.mark.parametrize(
    ("senders", "owners", "batch_size", "shift_ms", "rate_per_s"),
    [
        (1, 1, 500, 0, 10_000),
        (2, 3, 128, 0, 10_000),
        # event time 100 ms apart: orders span 36 minutes, inventory 14, starting 10 minutes after or before them
        (2, 2, 700, 10 * MINUTE_MS, 10),
        (3, 2, 256, -10 * MINUTE_MS, 10),
    ],
)
def test_the_temporal_join_equals_the_as_of_reference_for_any_layout_and_a_table_ahead_or_behind(
    tmp_path: Path, senders: int, owners: int, batch_size: int, shift_ms: int, rate_per_s: float
) -> None:
    config = enriched(tmp_path, inventory_shift_ms=shift_ms, rate_per_s=rate_per_s)
    orders, inventory = reference_inputs(config)
    expected = as_of_join(orders, inventory)
    observed = joined_rows(config, senders, owners, batch_size)
    columns = ("_partition", "_offset", "sku", "amount_cents", "in_stock")
    assert identities(observed, *columns) == identities(expected, *columns)
    matched = sum(row["in_stock"] is not None for row in expected)
    assert matched > len(expected) // 2, "most orders meet a version: the case tests matching, not nulls"


INVENTORY_WITH_ITS_ID: list[dict[str, Any]] = [
    {"op": "filter", "expr": 'event_type == "InventoryUpdated"'},
    {"op": "derive", "column": "stock_event", "expr": "event_id"},
    {"op": "select", "columns": ["sku", "quantity", "stock_event", "_partition", "_offset", "_timestamp", "_event_id"],
     "rename": {"quantity": "in_stock"}},
]  # fmt: skip


@pytest.mark.parametrize(
    ("how", "lower_ms", "upper_ms", "senders", "owners"),
    [
        ("inner", 0, 2_000, 1, 1),
        ("left", -500, 1_500, 2, 3),
        ("left", 1_000, 3_000, 3, 2),
        ("left", -3_000, -500, 2, 2),
    ],
)
def test_the_interval_join_equals_a_nested_loop_reference(
    tmp_path: Path, how: str, lower_ms: int, upper_ms: int, senders: int, owners: int
) -> None:
    config = enriched(tmp_path, max_events=20_000, rate_per_s=2_000, inventory_operators=INVENTORY_WITH_ITS_ID,
                      mode="interval", how=how, lower_ms=lower_ms, upper_ms=upper_ms)  # fmt: skip
    orders, inventory = reference_inputs(config)
    expected = interval_join(orders, inventory, lower_ms, upper_ms, how)
    observed = joined_rows(config, senders, owners, batch_size=300)
    columns = ("_partition", "_offset", "sku", "in_stock", "stock_event")
    assert identities(observed, *columns) == identities(expected, *columns)
    assert sum(row["stock_event"] is not None for row in expected) > 1_000, "the case has pairs to find"


@pytest.mark.parametrize(("how", "size_ms", "senders", "owners"), [("inner", 1_000, 1, 2), ("left", 2_500, 3, 2)])
def test_the_window_join_equals_a_reference_by_window(
    tmp_path: Path, how: str, size_ms: int, senders: int, owners: int
) -> None:
    config = enriched(tmp_path, max_events=20_000, rate_per_s=2_000, inventory_operators=INVENTORY_WITH_ITS_ID,
                      mode="window", how=how, size_ms=size_ms)  # fmt: skip
    orders, inventory = reference_inputs(config)
    expected = window_join(orders, inventory, size_ms, how)
    observed = joined_rows(config, senders, owners, batch_size=300)
    columns = ("_partition", "_offset", "window_start_ms", "window_end_ms", "in_stock", "stock_event")
    assert identities(observed, *columns) == identities(expected, *columns)
    assert sum(row["stock_event"] is not None for row in expected) > 1_000, "the case has pairs to find"


# --- the operators' contracts, row by row -----------------------------------------------------------------------

SCHEMA = pa.schema([("sku", pa.string()), ("amount", pa.int64()), ("_partition", pa.int32()), ("_offset", pa.int64()),
                    ("_timestamp", pa.int64()), ("in_stock", pa.int64()), (SIDE, pa.int8())])  # fmt: skip
COLUMNS = JoinColumns(("sku", "amount", "_partition", "_offset", "_timestamp"), ("in_stock",))


def order(sku: str | None, time_ms: int | None, offset: int, amount: int = 1) -> dict[str, Any]:
    return {"sku": sku, "amount": amount, "_partition": 0, "_offset": offset, "_timestamp": time_ms, SIDE: LEFT}


def stock(sku: str, time_ms: int, quantity: int, partition: int = 65_536, offset: int = 0) -> dict[str, Any]:
    return {"sku": sku, "_partition": partition, "_offset": offset, "_timestamp": time_ms, "in_stock": quantity,
            SIDE: RIGHT}  # fmt: skip


def batch(*rows: dict[str, Any]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(list(rows), schema=SCHEMA)


def temporal(**settings: Any) -> TemporalJoin:
    return TemporalJoin(JoinConfig(key="sku", left="orders", right="inventory", **settings), COLUMNS)


def rows_of(table: pa.Table | None) -> list[tuple[Any, ...]]:
    if table is None:
        return []
    return [(row["sku"], row["_offset"], row["in_stock"]) for row in table.to_pylist()]


def test_a_left_row_waits_for_the_watermark_and_meets_the_version_valid_at_its_time() -> None:
    join = temporal()
    added = join.add(batch(stock("a", 100, 5), order("a", 150, 1), stock("a", 200, 7), order("a", 250, 2),
                           order("b", 120, 3), order(None, 130, 4)))  # fmt: skip
    assert added.output is None and added.late is None, "nothing is decided before the watermark"
    assert rows_of(join.advance(199)) == [("b", 3, None), (None, 4, None), ("a", 1, 5)]
    assert rows_of(join.advance(250)) == [("a", 2, 7)]
    assert join.flush() is None


def test_inner_leaves_out_the_rows_that_meet_nothing_and_a_null_key_meets_nothing() -> None:
    join = temporal(how="inner")
    join.add(batch(stock("a", 10, 5), order("a", 20, 1), order("b", 20, 2), order(None, 20, 3)))
    assert rows_of(join.flush()) == [("a", 1, 5)]


def test_versions_at_one_time_are_ordered_by_partition_and_offset_not_arrival() -> None:
    for arrival in ([stock("a", 10, 1, 65_537, 0), stock("a", 10, 2, 65_536, 9)],
                    [stock("a", 10, 2, 65_536, 9), stock("a", 10, 1, 65_537, 0)]):  # fmt: skip
        join = temporal()
        for row in arrival:
            join.add(batch(row))
        join.add(batch(order("a", 10, 1)))
        assert rows_of(join.flush()) == [("a", 1, 1)], "partition 65537 is after 65536, whichever arrived first"


def test_rows_at_or_before_the_watermark_are_late_with_the_joins_reason_and_never_stored() -> None:
    join = temporal()
    join.add(batch(stock("a", 10, 5)))
    join.advance(100)
    added = join.add(batch(order("a", 100, 1), stock("a", 50, 9), order("a", 101, 2), order("a", None, 3)))
    assert added.late is not None and added.late.column("_offset").to_pylist() == [1, 0]
    assert "join's watermark" in added.late_reason
    assert added.no_event_time is not None and added.no_event_time.num_rows == 1
    assert rows_of(join.flush()) == [("a", 2, 5)], "the late version (at 50) was not applied"


def test_eager_emits_at_arrival_with_the_newest_version_known() -> None:
    join = temporal(emit="eager")
    join.add(batch(stock("a", 100, 5), stock("a", 300, 7), stock("b", 5, 1)))
    added = join.add(batch(order("a", 150, 1), order("c", 150, 2)))
    assert rows_of(added.output) == [("a", 1, 7), ("c", 2, None)], "eager meets the newest version, not the valid one"
    join.add(batch(stock("a", 200, 9)))
    assert rows_of(join.add(batch(order("a", 400, 3))).output) == [("a", 3, 7)], "300 is still the newest"
    assert join.flush() is None


def test_kept_versions_stay_bounded_however_many_arrive() -> None:
    """100 keys, a version of each every step, the watermark 10 steps behind: the versions the watermark passed
    are dropped when the index is rebuilt (each time its unsorted part outgrows 8,192 rows or a quarter of the
    sorted part), but the newest of each key; 100,000 versions come, far fewer are ever kept."""
    join = temporal()
    emitted: list[tuple[Any, ...]] = []
    most = 0
    for step in range(1_000):
        stocks = (stock(f"k{key}", step * 10, step, offset=step) for key in range(100))
        join.add(batch(*stocks, order("k0", step * 10, step)))
        emitted += rows_of(join.advance(step * 10 - 100))
        most = max(most, join.state_rows)
    # the sorted part: 11 versions of each key at most; the unsorted part: under 8,192 + 100 (one step) rows
    assert most <= 100 * 11 + 8_192 + 100 + 11
    emitted += rows_of(join.flush())
    assert [row[2] for row in emitted] == list(range(1_000)), "each order met its own step's version"


def test_the_version_index_answers_as_a_scan_of_every_version_whatever_its_rebuilds() -> None:
    """Random versions (ties included) and lookups against a brute-force answer, the index rebuilt between."""
    rng = random.Random(7)
    index = VersionIndex("sku")
    kept: list[dict[str, Any]] = []
    for round_ in range(30):
        rows = [{"sku": f"k{rng.randrange(20)}", "_timestamp": rng.randrange(100), "_partition": rng.randrange(3),
                 "_offset": round_ * 1_000 + position, "in_stock": rng.randrange(1_000)}
                for position in range(rng.randrange(1, 60))]  # fmt: skip
        index.add(pa.Table.from_pylist(rows))
        kept += rows
        if round_ % 7 == 6:
            index.maintain(-1, force=True)  # a rebuild that drops nothing: every version stays a candidate
        keys = [f"k{rng.randrange(22)}" for _ in range(50)]
        times = [rng.randrange(-5, 110) for _ in range(50)]
        found = index.lookup(pa.chunked_array([pa.array(keys)]), np.array(times, dtype=np.int64))
        table = index.table()
        assert table is not None
        for key, time_ms, position in zip(keys, times, found.tolist(), strict=True):
            candidates = [row for row in kept if row["sku"] == key and row["_timestamp"] <= time_ms]
            best = max(candidates, key=lambda row: (row["_timestamp"], row["_partition"], row["_offset"]), default=None)
            answer = None if position < 0 else table.slice(position, 1).to_pylist()[0]
            assert answer == best
    index.maintain(50, force=True)  # drops the versions at or before 50 but the newest of each key
    assert index.rows < len(kept)
    times = list(range(51, 111))
    for key in (f"k{number}" for number in range(22)):
        found = index.lookup(pa.chunked_array([pa.array([key] * len(times))]), np.array(times, dtype=np.int64))
        table = index.table()
        assert table is not None
        for time_ms, position in zip(times, found.tolist(), strict=True):
            candidates = [row for row in kept if row["sku"] == key and row["_timestamp"] <= time_ms]
            best = max(candidates, key=lambda row: (row["_timestamp"], row["_partition"], row["_offset"]), default=None)
            assert (None if position < 0 else table.slice(position, 1).to_pylist()[0]) == best, "after the drop"


def test_a_snapshot_split_by_key_and_restored_in_two_joins_continues_as_one_join() -> None:
    first = [stock("a", 10, 1), stock("b", 20, 2), order("a", 30, 1), order("b", 15, 2), stock("a", 40, 3)]
    then = [order("a", 45, 3), order("b", 50, 4), stock("b", 48, 5)]
    whole = temporal()
    whole.add(batch(*first))
    uninterrupted = rows_of(whole.advance(20))
    whole.add(batch(*then))
    uninterrupted += rows_of(whole.flush())
    assert sorted(uninterrupted, key=str) == sorted([("b", 2, None), ("a", 1, 1), ("a", 3, 3), ("b", 4, 5)], key=str)
    one = temporal()
    one.add(batch(*first))
    interrupted = rows_of(one.advance(20))
    snapshot = one.snapshot()
    for sku in ("a", "b"):
        part = temporal()
        part.restore(snapshot.filter(pc.equal(snapshot.column("sku"), sku)), 20)
        part.add(batch(*(row for row in then if row["sku"] == sku)))
        interrupted += rows_of(part.flush())
    assert sorted(interrupted, key=str) == sorted(uninterrupted, key=str)


def test_a_snapshot_is_refused_by_a_join_of_another_meaning() -> None:
    join = temporal()
    join.add(batch(stock("a", 10, 1)))
    other = TemporalJoin(JoinConfig(key="sku", left="orders", right="prices"), COLUMNS)
    with pytest.raises(StateFormatError, match="right was 'inventory' where this pipeline has 'prices'"):
        other.restore(join.snapshot(), 0)
    with pytest.raises(StateFormatError, match="temporal-join/1"):
        IntervalJoin(JoinConfig(key="sku", left="orders", right="inventory", mode="interval", lower_ms=0,
                                upper_ms=5), COLUMNS).restore(join.snapshot(), 0)  # fmt: skip


def test_the_interval_join_keeps_right_rows_only_while_a_left_row_can_meet_them() -> None:
    join = IntervalJoin(JoinConfig(key="sku", left="orders", right="inventory", mode="interval", lower_ms=-50,
                                   upper_ms=100), COLUMNS)  # fmt: skip
    pairs: list[tuple[Any, ...]] = []
    for step in range(300):
        join.add(batch(stock("a", step * 10, step, offset=step), order("a", step * 10, step)))
        pairs += rows_of(join.advance(step * 10 - 20))
        # right rows newer than watermark - 150 (15 steps, and 2 more not yet passed), orders waiting 12 steps
        assert join.state_rows <= 18 + 13
    pairs += rows_of(join.flush())
    assert len(pairs) == sum(len([s for s in range(300) if -5 <= s - t <= 10]) for t in range(300))


# --- configs: what a join takes, and the chain it sits in --------------------------------------------------------


def example_data(**keyed: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    data["keyed"].update(keyed)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"right": "prices"}, "keyed.right: 'prices' is not what the join takes; it takes ['orders', 'inventory']"),
        ({"mode": "interval"}, "mode interval needs lower_ms and upper_ms"),
        ({"mode": "interval", "lower_ms": 5, "upper_ms": 1}, "lower_ms (5) exceeds upper_ms (1)"),
        ({"emit": "eager", "mode": "interval", "lower_ms": 0, "upper_ms": 1}, "emit: eager is for mode temporal"),
        ({"emit": "eager", "mode": "window", "size_ms": 5}, "a join of mode window emits on the watermark"),
        ({"lower_ms": 0}, "lower_ms and upper_ms are for mode interval"),
        ({"mode": "window"}, "mode window needs size_ms"),
        ({"size_ms": 1_000}, "size_ms is for mode window"),
        ({"right": "orders"}, "left and right are both 'orders'"),
    ],
)
def test_a_join_that_cannot_run_fails_at_load_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(example_data(**change), "example")


def test_an_interval_join_before_another_stage_or_a_side_without_the_key_fails_naming_the_fix() -> None:
    data = example_data(mode="interval", lower_ms=0, upper_ms=1_000)
    data["stages"] = [
        {"name": "enriched", "inputs": ["orders", "inventory"], "keyed": data.pop("keyed")},
        {"aggregate": {"key": "sku", "window": {"type": "tumbling", "size_ms": 1_000},
                       "aggregations": {"orders": {"fn": "count"}}}},
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="would be late for the next stage; keep it the last stage"):
        compile_pipeline(parse_config(data, "example"))
    data = example_data()
    data["stages"] = [  # the right side: windows per event id, whose results have no sku
        {"name": "stock", "inputs": ["inventory"],
         "aggregate": {"key": "_event_id", "window": {"type": "tumbling", "size_ms": 1_000},
                       "aggregations": {"in_stock": {"fn": "max", "column": "in_stock"}}}},
        {"name": "enriched", "inputs": ["orders", "stock"], "keyed": {**data.pop("keyed"), "right": "stock"}},
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="the rows of 'stock' \\(the right side\\) have no column 'sku'"):
        compile_pipeline(parse_config(data, "example"))


def test_verify_tells_a_lost_pair_and_a_duplicated_one_of_one_left_row_from_a_right_result() -> None:
    columns = JoinColumns(("_event_id",), ("in_stock",))
    expected = pa.table({"_event_id": ["o1", "o1", "o2"], "in_stock": [5, 6, 7]})
    swapped = pa.table({"_event_id": ["o1", "o1", "o2"], "in_stock": [5, 5, 7]})  # (o1, 6) lost, (o1, 5) twice
    assert wrong_joins(expected, swapped, "_event_id", columns) == ["o1"]
    replayed = pa.table({"_event_id": ["o1", "o1", "o1", "o2"], "in_stock": [5, 6, 5, 7]})  # at least once
    assert wrong_joins(expected, replayed, "_event_id", columns) == [], "a duplicate is counted apart, not wrong"


def test_a_join_of_three_inputs_or_with_a_side_column_fails_naming_the_fix() -> None:
    data = example_data()
    data["inputs"]["returns"] = {
        **data["inputs"]["orders"],
        "source": {**data["inputs"]["orders"]["source"], "event_id_prefix": "r"},
    }
    with pytest.raises(ConfigError, match=re.escape("inputs: a join takes two inputs or stages, its left and right")):
        parse_config(data, "example")
    data = example_data()
    data["inputs"]["inventory"]["operators"].append({"op": "derive", "column": "_side", "expr": "1"})
    with pytest.raises(ConfigError, match="rows of 'inventory' have a column '_side'"):
        compile_pipeline(parse_config(data, "example"))


def test_a_join_takes_an_earlier_stage_as_a_side_and_feeds_windows_after_it(tmp_path: Path) -> None:
    """inventory -> dedup (stage 'stock') -> right side of the join, whose rows then go to windows per SKU: the
    sides are told apart across a stage link, and the join's results carry an event time to the windows."""
    config = enriched(tmp_path)
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    join = data.pop("keyed")
    data["stages"] = [
        {"name": "stock", "inputs": ["inventory"],
         "keyed": {"type": "dedup", "id_column": "_event_id", "ttl_ms": 60_000, "max_out_of_order_ms": 1_000}},
        {"name": "enriched", "inputs": ["orders", "stock"], "keyed": {**join, "right": "stock",
                                                                      "max_out_of_order_ms": 1_000}},
        {"name": "per_sku", "aggregate": {"key": "sku", "window": {"type": "tumbling", "size_ms": 1_000},
                                          "aggregations": {"stock_seen": {"fn": "sum", "column": "in_stock"},
                                                           "orders": {"fn": "count"}}}},
    ]  # fmt: skip
    staged = parse_config(data, "staged")
    orders, inventory = reference_inputs(config)
    expected: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for row in as_of_join(orders, inventory):
        entry = expected[(row["sku"], row["_timestamp"] // 1_000 * 1_000)]
        entry[0] += row["in_stock"] or 0
        entry[1] += 1
    results = run_stages(staged, senders=2, owners=2, batch_size=400).results.table()
    assert results is not None
    observed = {
        (row["sku"], row["window_start_ms"]): [row["stock_seen"] or 0, row["orders"]] for row in results.to_pylist()
    }
    assert observed == dict(expected)


def test_the_window_join_drops_a_window_once_the_watermark_reaches_its_end() -> None:
    join = IntervalJoin(JoinConfig(key="sku", left="orders", right="inventory", mode="window", size_ms=100),
                        JoinColumns(COLUMNS.left, COLUMNS.right, windowed=True))  # fmt: skip
    results: list[dict[str, Any]] = []
    for step in range(100):
        join.add(batch(stock("a", step * 10, step, offset=step), order("a", step * 10 + 5, step)))
        emitted = join.advance(step * 10)
        results += [] if emitted is None else emitted.to_pylist()
        # the rows of the window the watermark is in (10 steps at most, each side), and of the next one
        assert join.state_rows <= 2 * 11
    flushed = join.flush()
    results += [] if flushed is None else flushed.to_pylist()
    assert len(results) == 100 * 10, "each order meets the 10 stock rows of its window"
    assert {(row["window_start_ms"], row["window_end_ms"]) for row in results} == {
        (w, w + 100) for w in range(0, 1000, 100)
    }


# --- a table side that goes quiet --------------------------------------------------------------------------------


def raw(partition: int, *events: dict[str, Any]) -> RawBatch:
    return RawBatch(
        topic="t",
        partition=partition,
        offsets=pa.array(range(len(events)), pa.int64()),
        payloads=pa.array([json.dumps(event).encode() for event in events], pa.binary()),
        keys=pa.nulls(len(events), pa.binary()),
        timestamps=pa.nulls(len(events), pa.int64()),
        traceparents=pa.nulls(len(events), pa.string()),
    )


def generated(kind: str, time_ms: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"{kind}-{time_ms}", "event_type": kind, "event_time_ms": time_ms, "sku": "sku-1", **fields}


@pytest.mark.parametrize("table_backlog", [0, 3], ids=["nothing-left-to-read", "a-backlog"])
def test_a_quiet_table_side_holds_orders_back_until_it_is_idle_and_never_while_it_has_a_backlog(
    tmp_path: Path, table_backlog: int
) -> None:
    config = resolve_secrets(enriched(tmp_path, idle_timeout_ms=2_000), os.environ)
    compiled = compile_pipeline(config)
    clock = ManualClock()
    inventory = pipeline_partition(1, 0)
    backlogs = {0: 5, inventory: table_backlog}  # orders keep coming: their partition is never idle
    results = CollectingSink()
    runner = KeyedStageRunner(config, 1, sinks=[results], late_output=CollectingSink(), carry_trace=True,
                              clock=clock, join_columns=compiled.stages[0].join_columns)  # fmt: skip
    stage = SourceStage(compiled, dead_letter=CollectingSink(), backlogs=lambda: backlogs, clock=clock)
    stage.route_to(InProcessOwners([runner]), {0: [0] * config.runtime.max_key_groups})
    stage.watermarks.opened(0)
    stage.watermarks.opened(inventory)
    asyncio.run(stage.handle(raw(inventory, generated("InventoryUpdated", 1_000, quantity=7))))
    asyncio.run(
        stage.handle(raw(0, *(generated("OrderCreated", t, quantity=1, amount_cents=5) for t in (5_000, 9_000))))
    )
    assert results.num_rows == 0, "the orders wait for the table side: no null is given"

    clock.advance(2.5)
    asyncio.run(stage.route_watermark())
    emitted = results.table()
    if table_backlog:
        assert emitted is None, "a side with a backlog is never idle: the orders still wait"
        return
    assert emitted is not None and emitted.to_pylist()[0]["in_stock"] == 7 and emitted.num_rows == 1, (
        "the table side went idle: the order at 5 s (watermark 8 s) met the version of 1 s"
    )


# --- on the Supervisor, in process: a kill at a barrier, a rescale ------------------------------------------------


@pytest.mark.parametrize("fault", ["kill", "rescale"])
def test_a_join_on_the_supervisor_killed_or_rescaled_equals_the_reference_exactly_once(
    tmp_path: Path, fault: str
) -> None:
    config = enriched(tmp_path, max_events=16_000, rate_per_s=20_000)
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data.update(delivery="exactly_once", checkpoint={"interval_ms": 100, "uri": str(tmp_path / "checkpoints")},
                tracing={"enabled": False})  # fmt: skip
    data["runtime"].update(aggregate_actors=2, batch_size=256, duration_s=None)
    if fault == "rescale":
        data["runtime"]["autoscale"] = {"min_source_actors": 2, "max_source_actors": 2, "min_aggregate_actors": 3,
                                        "max_aggregate_actors": 3, "interval_s": 0.05}  # fmt: skip
    config = resolve_secrets(parse_config(data), os.environ)
    actors = InProcessActors(die_at_checkpoint=4 if fault == "kill" else None)

    summary = asyncio.run(Supervisor(config, f"join-{fault}", actors).run())

    if fault == "kill":
        assert len(summary.recoveries_s) == 1 and actors.killed
    else:
        assert [(rescale.aggregates, rescale.sources) for rescale in summary.rescales] == [((2, 3), (2, 2))]
    orders, inventory = reference_inputs(config)
    columns = ("_partition", "_offset", "sku", "in_stock")
    observed = read_jsonl_dir(tmp_path / "out")
    assert identities(observed, *columns) == identities(as_of_join(orders, inventory), *columns)


def test_an_interval_wholly_before_the_left_row_keeps_the_right_rows_a_later_left_row_meets() -> None:
    """lower_ms -100, upper_ms -50: a left row after the watermark (1000) still meets right rows before it."""
    join = IntervalJoin(JoinConfig(key="sku", left="orders", right="inventory", mode="interval", lower_ms=-100,
                                   upper_ms=-50), COLUMNS)  # fmt: skip
    join.add(batch(*(stock("a", time_ms, time_ms, offset=time_ms) for time_ms in range(890, 960, 10))))
    assert join.advance(1_000) is None
    join.add(batch(order("a", 1_001, 1)))
    assert sorted(row[2] for row in rows_of(join.flush())) == [910, 920, 930, 940, 950], "s in [901, 951]"
