"""Keyed stages that name what they take (``stages[k].inputs``): the graph's rules, the wiring of senders, links
and source routes, and pipelines whose stages form a tree, in process, on the Supervisor under a kill, and in
verify's recomputation, each against a plain-Python reference.

The pipelines: orders and payments from files that deliver some events twice. ``dag``: payments deduplicated by
event id, then windows per customer over the orders (not deduplicated: their repeats count twice) and the
payments paid once. ``tree``: orders and payments each deduplicated in a stage of their own, both feeding the
windows.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.control.supervisor import Supervisor
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, load_config, parse_config
from pipelines.config.secrets import resolve_secrets
from pipelines.config.stage_graph import StageGraph, stage_graph
from pipelines.errors import ConfigError
from pipelines.io.generator import generate_events
from pipelines.io.records import RawBatch
from pipelines.io.sources import open_reader
from pipelines.stages.plan import compile_pipeline
from pipelines.stages.topology import InputPartitionReader
from pipelines.stages.wiring import StageWiring
from pipelines.testing import run_stages
from pipelines.verify.delivery_check import expected_run, recompute_windows, through_earlier_stages
from tests.reference import read_jsonl_dir
from tests.unit.test_supervisor_in_process import InProcessActors

ROOT = Path(__file__).resolve().parents[2]
START_TIME_MS = 1_700_000_000_000
WINDOW_MS = 10_000
Totals = dict[tuple[str, int], tuple[int, int, int, int]]  # (customer, window) -> orders, cents, payments, cents


# --- the graph -------------------------------------------------------------------------------------------------


def test_without_inputs_the_stages_are_a_chain_from_every_input() -> None:
    graph = stage_graph(["orders", "payments"], ["a", "b", "c"], [None, None, None])

    assert graph == StageGraph(input_stage=(0, 0), next_stage=(1, 2, None))
    assert [graph.takes_one_stage(stage) for stage in range(3)] == [False, True, True]
    assert [graph.senders(stage, 3, [2, 4, 1]) for stage in range(3)] == [3, 2, 4]


def test_a_tree_numbers_each_stages_senders_sources_first_then_its_feeders_in_order() -> None:
    """orders -> a, payments -> b, refunds -> c with a and b: c's senders are the 2 sources, then a's 3 owners,
    then b's 4."""
    graph = stage_graph(
        ["orders", "payments", "refunds"], ["a", "b", "c"], [["orders"], ["payments"], ["refunds", "a", "b"]]
    )

    assert graph.input_stage == (0, 1, 2) and graph.next_stage == (2, 2, None)
    assert graph.input_stages == (0, 1, 2)
    assert not any(graph.takes_one_stage(stage) for stage in range(3)), "each takes an input"
    assert graph.feeders(2) == (0, 1)
    sizes = [3, 4, 2]
    assert graph.senders(2, 2, sizes) == 2 + 3 + 4
    assert (graph.first_sender(2, 0, 2, sizes), graph.first_sender(2, 1, 2, sizes)) == (2, 5)
    with pytest.raises(ValueError, match="stage 0 does not feed stage 1"):
        graph.first_sender(1, 0, 2, sizes)


def test_the_first_stage_takes_by_default_the_inputs_no_other_stage_names() -> None:
    graph = stage_graph(["orders", "payments"], ["a", "b"], [None, ["payments", "a"]])

    assert graph.input_stage == (0, 1) and graph.next_stage == (1, None)


@pytest.mark.parametrize(
    ("stage_inputs", "message"),
    [
        (
            [["orders"], ["refunds"]],
            r"stages\.1\.inputs: .refunds. is neither an input nor a stage",
        ),
        ([["orders", "b"], ["payments"]], r"stages\.0\.inputs: 'b' is stages\.1, not an earlier stage"),
        ([["orders", "payments"], ["payments", "a"]], r"stages\.1\.inputs: input 'payments' already feeds stages\.0"),
        ([["orders"], None, ["a", "b", "payments"]], r"stages\.2\.inputs: stage 'a' already feeds stages\.1"),
        ([["orders"], ["a"]], r"stages: the input\(s\) \['payments'\] feed no stage"),
        ([["orders"], ["payments"]], r"stages\.0: stage 'a' feeds no stage, and only the last stage writes"),
        ([None, ["orders", "payments", "a"]], r"stages\.0\.inputs: the first stage takes no input"),
        ([["orders", "orders", "payments"], None], r"names one thing twice"),
    ],
)
def test_a_graph_that_cannot_run_is_refused_naming_the_field(stage_inputs: list[Any], message: str) -> None:
    names = ["a", "b", "c"][: len(stage_inputs)]
    with pytest.raises(ValueError, match=message):
        stage_graph(["orders", "payments"], names, stage_inputs)


def test_names_that_clash_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\['orders'\] name both an input and a stage"):
        stage_graph(["orders"], ["orders"], [None])
    with pytest.raises(ValueError, match=r"several stages are named \['a'\]"):
        stage_graph(["orders"], ["a", "a"], [None, None])


def test_the_wiring_numbers_source_routes_stage_by_stage_and_links_each_owner_to_its_sender_slot() -> None:
    graph = StageGraph(input_stage=(0, 1, 2), next_stage=(2, 2, None))
    groups = ([[0, 3], [1, 4], [2, 5]], [[0, 2, 4], [1, 3, 5]], [[0, 1, 2], [3, 4, 5]])  # 6 key groups
    wiring = StageWiring(graph, groups, sources=2, max_key_groups=6)

    routes = wiring.source_routes()
    assert routes == {0: [0, 1, 2, 0, 1, 2], 1: [3, 4, 3, 4, 3, 4], 2: [5, 5, 5, 6, 6, 6]}
    assert [wiring.senders(stage) for stage in range(3)] == [2, 2, 2 + 3 + 2]
    link = wiring.next_link(1, 1)
    assert link is not None and (link.stage, link.owner_of_group, link.sender) == (2, [0, 0, 0, 1, 1, 1], 2 + 3 + 1)
    assert wiring.next_link(2, 0) is None


# --- pipelines that form a tree ----------------------------------------------------------------------------------


def events_of(seed: int, partitions: int, count: int) -> list[dict[str, Any]]:
    source = GeneratorSourceConfig(partitions=partitions, seed=seed, invalid_fraction=0.0, start_time_ms=START_TIME_MS)
    return [
        json.loads(payload)
        for partition in range(partitions)
        for payload in generate_events(source, partition, 0, count, START_TIME_MS).payloads.to_pylist()
    ]


def write_files(directory: Path, name: str, events: list[dict[str, Any]]) -> list[str]:
    """Events in two files, and a fifth of them again in a third (another partition): an at-least-once delivery."""
    paths = []
    for suffix, rows in (("a", events[::2]), ("b", events[1::2]), ("again", events[::5])):
        path = directory / f"{name}-{suffix}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        paths.append(str(path))
    return paths


ORDERS = events_of(seed=42, partitions=2, count=2_000)
PAYMENTS = events_of(seed=7, partitions=2, count=2_000)


def staged(tmp_path: Path, shape: str, **runtime: Any) -> PipelineConfig:
    """configs/orders_payments_staged.yaml on files: ``dag`` as written there, ``tree`` with the orders
    deduplicated in a stage of their own too."""
    data = yaml.safe_load((ROOT / "configs/orders_payments_staged.yaml").read_text())
    for name, events in (("orders", ORDERS), ("payments", PAYMENTS)):
        data["inputs"][name]["source"] = {"type": "file", "paths": write_files(tmp_path, name, events)}
    data["stages"][0]["keyed"]["max_out_of_order_ms"] = 3_600_000  # the files' order is no one's lateness
    data["stages"][0]["keyed"]["ttl_ms"] = 3_600_000
    if shape == "tree":
        dedup = {"type": "dedup", "id_column": "_event_id", "ttl_ms": 3_600_000}
        data["stages"].insert(1, {"name": "placed_once", "inputs": ["orders"], "keyed": dedup})
        data["stages"][2]["inputs"] = ["paid_once", "placed_once"]
    data["sinks"] = [{"type": "jsonl", "path": str(tmp_path / "out")}]
    data["dead_letter"] = {"type": "jsonl", "path": str(tmp_path / "dead")}
    data["checkpoint"] = {"uri": str(tmp_path / "checkpoints"), "interval_ms": 100}
    data["tracing"] = {"enabled": False}
    data["runtime"] = {"duration_s": None, "source_actors": 2, "aggregate_actors": 2, **runtime}
    return resolve_secrets(parse_config(data), os.environ)


def reference(shape: str) -> Totals:
    """Orders placed and paid per customer per window, in plain Python: payments once each; orders once each in
    a tree, as delivered (their repeats too) in the dag."""
    totals: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    delivered_orders = ORDERS if shape == "tree" else ORDERS[::2] + ORDERS[1::2] + ORDERS[::5]
    for event in delivered_orders:
        if event["event_type"] == "OrderCreated":
            entry = totals[(event["customer_id"], event["event_time_ms"] - event["event_time_ms"] % WINDOW_MS)]
            entry[0] += 1
            entry[1] += event["amount_cents"] or 0
    for event in PAYMENTS:
        if event["event_type"] == "PaymentProcessed":
            entry = totals[(event["customer_id"], event["event_time_ms"] - event["event_time_ms"] % WINDOW_MS)]
            entry[2] += 1
            entry[3] += event["amount_cents"] or 0
    return {key: (a, b, c, d) for key, (a, b, c, d) in totals.items()}


def totals_of(rows: list[dict[str, Any]]) -> Totals:
    totals: Totals = {}
    for row in rows:
        key = (row["customer_id"], row["window_start_ms"])
        assert key not in totals, f"window {key} written twice"
        values = (row["orders"], row["ordered_cents"], row["payments"], row["paid_cents"])
        totals[key] = tuple(value or 0 for value in values)  # type: ignore[assignment]
    return totals


def test_the_files_deliver_repeats_of_both_inputs() -> None:
    repeated = ORDERS[::5]
    assert any(e["event_type"] == "OrderCreated" for e in repeated)
    assert any(e["event_type"] == "PaymentProcessed" for e in PAYMENTS[::5])
    assert reference("dag") != reference("tree"), "the dag counts repeated orders, the tree does not"


@pytest.mark.parametrize("shape", ["dag", "tree"])
@pytest.mark.parametrize(("senders", "owners"), [(1, 1), (2, 3), (3, 2)])
def test_a_tree_of_stages_in_process_equals_the_reference(
    tmp_path: Path, shape: str, senders: int, owners: int
) -> None:
    config = staged(tmp_path, shape)

    run = run_stages(config, senders=senders, owners=owners, batch_size=300)

    assert run.late.num_rows == 0
    assert totals_of(run.results.rows()) == reference(shape)


@pytest.mark.parametrize(("shape", "die_at"), [("dag", 3), ("tree", 5)])
def test_a_tree_of_stages_on_the_supervisor_survives_a_kill_at_a_barrier_exactly_once(
    tmp_path: Path, shape: str, die_at: int
) -> None:
    """A kill at the first barrier of the last stage's first actor (the first epoch's, however far the files
    were read by then): every stage's actors restore from one checkpoint, or start afresh, and each window is
    written once and equals the reference."""
    config = staged(tmp_path, shape, batch_size=200)
    config = parse_config({**config.model_dump(mode="json", by_alias=True), "delivery": "exactly_once"})
    actors = InProcessActors(die_at_checkpoint=die_at)

    summary = asyncio.run(Supervisor(config, f"staged-{shape}", actors).run())

    assert len(summary.recoveries_s) == 1 and actors.killed
    assert totals_of(read_jsonl_dir(tmp_path / "out")) == reference(shape)
    stages = {entry.split()[1].split("-")[0] for entry in actors.log if entry.startswith("checkpoint")}
    assert stages == {"aggregate", *(f"stage{k}" for k in range(1, len(config.keyed_stages)))}


async def read_files(config: PipelineConfig) -> list[RawBatch]:
    batches = []
    for spec in config.all_inputs:
        assert spec.source.type == "file"
        for partition in range(len(spec.source.paths)):
            reader = InputPartitionReader(open_reader(spec.source, partition, 0, None, 0.0, START_TIME_MS), spec)
            while (raw := await reader.fetch(1_000)) is not None:
                batches.append(raw)
    return batches


@pytest.mark.parametrize("shape", ["dag", "tree"])
def test_verifys_recomputation_of_a_tree_equals_the_reference(tmp_path: Path, shape: str) -> None:
    config = staged(tmp_path, shape)
    compiled = compile_pipeline(config)
    expected = expected_run(compiled, asyncio.run(read_files(config)))
    last = config.last_stage.aggregate
    assert last is not None

    windows = recompute_windows(through_earlier_stages(expected.events, compiled), last)

    assert totals_of(windows.to_pylist()) == reference(shape)


def test_each_input_must_have_the_key_of_the_stage_it_feeds(tmp_path: Path) -> None:
    """The orders feed the windows (by customer_id), not the dedup: they need no _event_id, and lacking
    customer_id is refused naming the stage they feed."""
    data = staged(tmp_path, "dag").model_dump(mode="json", by_alias=True, exclude_none=True)
    select = data["inputs"]["orders"]["operators"][-1]
    select["columns"].remove("_event_id")
    compile_pipeline(parse_config(data))

    select["columns"].remove("customer_id")
    with pytest.raises(ConfigError, match=r"^stages\.1\.aggregate\.key: input 'orders' has no column 'customer_id'"):
        compile_pipeline(parse_config(data))


def test_a_stages_inputs_are_checked_when_the_config_is_read(tmp_path: Path) -> None:
    data = staged(tmp_path, "dag").model_dump(mode="json", by_alias=True, exclude_none=True)
    data["stages"][1]["inputs"] = ["orders", "paid_twice"]
    with pytest.raises(ConfigError, match=r"stages\.1\.inputs: 'paid_twice' is neither an input nor a stage"):
        parse_config(data)


def test_a_wrong_stage_input_in_a_file_reads_as_its_field_and_the_fix(tmp_path: Path) -> None:
    """The graph is checked over the whole config, yet the message starts with the field, as a field's does."""
    lines = error_lines_of_the_example_with(tmp_path, "inputs: [orders, paid_once]", "inputs: [orders, paid_twice]")

    assert lines[1:] == [
        "  stages.1.inputs: 'paid_twice' is neither an input nor a stage; inputs: ['orders', 'payments'], stages: "
        "['paid_once', 'per_customer']"
    ]


def windows_of_orders_then_payments(tmp_path: Path) -> dict[str, Any]:
    """A tree whose first stage emits a column of another type than an input has under the same name: orders'
    mean ordered_cents per customer per window (a double; the orders give int64), then the windows over the
    payments and those results."""
    data = staged(tmp_path, "dag").model_dump(mode="json", by_alias=True, exclude_none=True)
    data["stages"] = [
        {"name": "order_windows", "inputs": ["orders"], "aggregate": {
            "key": "customer_id", "window": {"type": "tumbling", "size_ms": WINDOW_MS},
            "max_out_of_order_ms": 3_600_000, "aggregations": {"orders": {"fn": "sum", "column": "placed"},
                             "ordered_cents": {"fn": "mean", "column": "ordered_cents"}}}},
        {"name": "per_customer", "inputs": ["payments", "order_windows"], "aggregate": {
            "key": "customer_id", "window": {"type": "tumbling", "size_ms": WINDOW_MS},
            "aggregations": {"windows": {"fn": "count"}, "orders": {"fn": "sum", "column": "orders"},
                             "mean_ordered_cents": {"fn": "max", "column": "ordered_cents"},
                             "payments": {"fn": "sum", "column": "paid"},
                             "paid_cents": {"fn": "sum", "column": "paid_cents"}}}},
    ]  # fmt: skip
    return data


def test_verify_gives_each_stage_its_rows_in_its_own_schema_and_equals_the_run(tmp_path: Path) -> None:
    """The orders' int64 ordered_cents and the first stage's double one never meet in one table: verify's
    recomputation equals what the stages emit."""
    config = parse_config(windows_of_orders_then_payments(tmp_path))
    compiled = compile_pipeline(config)
    assert compiled.stages[1].input_schema.field("ordered_cents").type == "double"
    last = config.last_stage.aggregate
    assert last is not None

    run = run_stages(config, senders=2, owners=2, batch_size=300)
    expected = expected_run(compiled, asyncio.run(read_files(config)))
    recomputed = recompute_windows(through_earlier_stages(expected.events, compiled), last)

    assert run.late.num_rows == 0
    key = ("customer_id", "window_start_ms")
    columns = ["windows", "orders", "mean_ordered_cents", "payments", "paid_cents"]

    def by_window(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        return {tuple(row[k] for k in key): tuple(row[c] for c in columns) for row in rows}

    emitted = by_window(run.results.rows())
    assert emitted == by_window(recomputed.to_pylist())
    delivered: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for event in PAYMENTS[::2] + PAYMENTS[1::2] + PAYMENTS[::5]:  # no dedup here: each as often as delivered
        if event["event_type"] == "PaymentProcessed":
            entry = delivered[(event["customer_id"], event["event_time_ms"] - event["event_time_ms"] % WINDOW_MS)]
            entry[0] += 1
            entry[1] += event["amount_cents"] or 0
    assert {k: (v[3], v[4]) for k, v in emitted.items() if v[3]} == {k: tuple(v) for k, v in delivered.items()}


def test_a_stage_whose_inputs_carry_no_trace_runs_beside_one_that_does(tmp_path: Path) -> None:
    """The payments drop _traceparent, the orders keep it: the dedup of payments carries none, the windows
    (which take the orders) do."""
    data = staged(tmp_path, "dag").model_dump(mode="json", by_alias=True, exclude_none=True)
    data["inputs"]["payments"]["operators"][-1]["columns"].remove("_traceparent")
    config = parse_config(data)

    compiled = compile_pipeline(config)

    assert [stage.carries_trace for stage in compiled.stages] == [False, True]
    assert totals_of(run_stages(config, senders=2, owners=2, batch_size=300).results.rows()) == reference("dag")


def test_a_column_of_two_types_in_what_a_stage_takes_names_the_stage_and_both_sources(tmp_path: Path) -> None:
    data = windows_of_orders_then_payments(tmp_path)
    data["stages"][1]["inputs"] = ["orders", "order_windows"]
    data["stages"][1]["aggregate"]["aggregations"] = {"orders": {"fn": "count"}}
    data["stages"][0]["inputs"] = ["payments"]
    data["stages"][0]["aggregate"]["aggregations"] = {"placed": {"fn": "mean", "column": "paid_cents"}}

    with pytest.raises(ConfigError, match=(
        r"^stages\.1\.inputs: column 'placed' is double in the rows of stage 'order_windows', and int64 in those of "
        r"input 'orders'; the stage takes both in one column"
    )):  # fmt: skip
        compile_pipeline(parse_config(data))


def test_an_input_without_event_time_names_the_stage_that_takes_it(tmp_path: Path) -> None:
    data = staged(tmp_path, "dag").model_dump(mode="json", by_alias=True, exclude_none=True)
    del data["inputs"]["orders"]["schema"]["event_time_field"]
    with pytest.raises(ConfigError, match=r"stages\.1\.aggregate needs inputs\.orders\.schema\.event_time_field"):
        parse_config(data)


def test_a_stage_that_feeds_none_reads_as_its_field(tmp_path: Path) -> None:
    lines = error_lines_of_the_example_with(tmp_path, "inputs: [orders, paid_once]", "inputs: [orders]")
    assert lines[1].startswith("  stages.0: stage 'paid_once' feeds no stage")


def error_lines_of_the_example_with(tmp_path: Path, written: str, instead: str) -> list[str]:
    """The lines of the error that loading configs/orders_payments_staged.yaml, ``written`` changed, raises."""
    text = (ROOT / "configs/orders_payments_staged.yaml").read_text()
    assert written in text
    path = tmp_path / "staged.yaml"
    path.write_text(text.replace(written, instead))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    return str(raised.value).splitlines()
