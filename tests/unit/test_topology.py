"""Pipelines with several inputs: the config's two forms, pipeline partitions, one stage schema, and a run of
the two-input config (orders and payments) in this process, killed at a barrier and verified exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from cluster.commands.lag import lag_samples
from cluster.commands.verify import verify_run
from cluster.control.assignment import assign_partitions
from cluster.control.supervisor import Supervisor
from pipelines.config.pipeline import SINGLE_INPUT, PipelineConfig, parse_config
from pipelines.config.secrets import resolve_secrets, secrets_carried
from pipelines.errors import ConfigError
from pipelines.examples.orders import orders_pipeline
from pipelines.stages.plan import compile_pipeline
from pipelines.stages.topology import (
    PARTITION_STRIDE,
    check_input_layout,
    conform,
    input_layout,
    input_of,
    local_partition,
    partition_ids,
    partition_limits,
    pipeline_partition,
    stage_schema,
)
from pipelines.state.checkpoint_store import Checkpoint, CheckpointStore, SourceSnapshot
from tests.reference import read_jsonl_dir
from tests.unit.test_supervisor_in_process import InProcessActors

TWO_INPUTS_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders_payments.yaml"
START_TIME_MS = 1_767_225_600_000


def two_inputs() -> dict[str, Any]:
    data = yaml.safe_load(TWO_INPUTS_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def refused(call: Callable[..., object], *args: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        call(*args)
    return str(caught.value)


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        compile_pipeline(parse_config(data, "test.yaml"))
    return str(caught.value)


# --- pipeline partitions ---------------------------------------------------------------------------------------


def test_the_first_input_keeps_its_partition_numbers_and_the_others_never_collide() -> None:
    assert partition_ids([3]) == [0, 1, 2], "a single input's checkpoints are those it always wrote"
    ids = partition_ids([3, 2])
    assert ids == [0, 1, 2, PARTITION_STRIDE, PARTITION_STRIDE + 1]
    assert [(input_of(p), local_partition(p)) for p in ids] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    grown = partition_ids([5, 2])  # the first input (a Kafka topic) gained partitions: none of the second moved
    assert set(ids) <= set(grown)
    assert max(grown) < 2**31, "pipeline partitions fit the int32 _partition column"
    with pytest.raises(ConfigError, match="at most 65536"):
        pipeline_partition(1, PARTITION_STRIDE)
    assert pipeline_partition(0, PARTITION_STRIDE) == PARTITION_STRIDE, "one input may have any number"
    with pytest.raises(ConfigError, match="with several inputs each has at most 65536"):
        partition_ids([PARTITION_STRIDE + 1, 1])


def test_assignment_and_budgets_take_pipeline_partitions() -> None:
    ids = partition_ids([3, 2])
    owned = assign_partitions(ids, 2)
    assert sorted(p for actor in owned for p in actor) == ids
    assert max(map(len, owned)) - min(map(len, owned)) <= 1
    limits = partition_limits(ids, 11)
    assert set(limits) == set(ids) and sum(v or 0 for v in limits.values()) == 11
    assert assign_partitions(4, 2) == [[0, 2], [1, 3]], "a count still means partitions 0..n-1"


# --- one stage schema -------------------------------------------------------------------------------------------


def test_rows_of_every_input_are_conformed_to_one_schema_with_nulls_where_an_input_lacks_a_column() -> None:
    orders = pa.schema([("customer_id", pa.string()), ("ordered_cents", pa.int64())])
    payments = pa.schema([("customer_id", pa.string()), ("paid_cents", pa.int64())])
    schema = stage_schema([("orders", orders), ("payments", payments)])
    assert schema.names == ["customer_id", "ordered_cents", "paid_cents"]
    batch = pa.RecordBatch.from_pydict({"customer_id": ["c1"], "paid_cents": [5]}, schema=payments)
    conformed = conform(batch, schema)
    assert conformed.schema == schema
    assert conformed.to_pylist() == [{"customer_id": "c1", "ordered_cents": None, "paid_cents": 5}]


def test_two_inputs_giving_a_column_two_types_fail_naming_both() -> None:
    left = pa.schema([("amount", pa.int64())])
    right = pa.schema([("amount", pa.string())])
    with pytest.raises(ConfigError) as caught:
        stage_schema([("orders", left), ("payments", right)])
    message = str(caught.value)
    assert "inputs.payments: column 'amount' is string" in message and "int64 in input 'orders'" in message


# --- the config's two forms -----------------------------------------------------------------------------------


def test_the_single_input_form_is_one_input_and_the_two_input_config_compiles() -> None:
    data = two_inputs()
    config = parse_config(data)
    assert [(i.name, i.index, i.path) for i in config.all_inputs] == [
        ("orders", 0, "inputs.orders."), ("payments", 1, "inputs.payments."),
    ]  # fmt: skip
    compiled = compile_pipeline(config)
    assert [i.name for i in compiled.inputs] == ["orders", "payments"]
    assert {"placed", "ordered_cents", "paid", "paid_cents"} <= set(compiled.output_columns)
    orders = data["inputs"]["orders"]
    single = parse_config({k: v for k, v in data.items() if k != "inputs"} | orders)
    assert [(i.name, i.path) for i in single.all_inputs] == [(SINGLE_INPUT, "")]


def test_inputs_and_a_top_level_source_together_are_refused_naming_what_to_move() -> None:
    data = two_inputs()
    data["source"] = data["inputs"]["orders"]["source"]
    message = refused(parse_config, data)
    assert "inputs is set, and so is source" in message and "move them into an input" in message
    del data["source"], data["inputs"]
    message = refused(parse_config, data)
    assert "source and schema missing" in message


def test_an_error_inside_an_input_names_its_path_as_written() -> None:
    data = two_inputs()
    data["inputs"]["payments"]["source"]["rate_per_s"] = -1
    message = refused(parse_config, data, "test.yaml")
    assert "inputs.payments.source.rate_per_s:" in message


def test_an_input_without_the_stage_key_fails_naming_the_input_and_the_fix() -> None:
    data = two_inputs()
    data["inputs"]["payments"]["operators"][-1]["rename"] = {"amount_cents": "paid_cents", "customer_id": "buyer"}
    message = config_error(data)
    assert "aggregate.key: input 'payments' has no column 'customer_id'" in message
    assert "rename" in message


def test_an_operator_error_of_an_input_names_the_input() -> None:
    data = two_inputs()
    data["inputs"]["payments"]["operators"][0]["expr"] = "no_such_column == 1"
    assert config_error(data).startswith("inputs.payments.operators.0 (filter):")


def test_an_input_without_event_time_fails_for_a_keyed_stage() -> None:
    data = two_inputs()
    del data["inputs"]["payments"]["schema"]["event_time_field"]
    message = refused(parse_config, data)
    assert "inputs.payments.schema.event_time_field" in message


def test_kafka_inputs_share_one_consumer_group() -> None:
    data = two_inputs()
    data["kafka"] = {}
    for name in ("orders", "payments"):
        data["inputs"][name]["source"] = {"type": "kafka", "topic": name, "group_id": f"g-{name}"}
    message = refused(parse_config, data)
    assert "different group_ids" in message
    data["inputs"]["orders"]["source"]["group_id"] = "g-payments"
    assert parse_config(data).group_id == "g-payments"


def test_mask_keys_of_every_input_are_resolved_and_a_missing_one_is_named_by_its_input() -> None:
    data = two_inputs()
    data["inputs"]["payments"]["operators"].insert(0, {"op": "mask", "column": "currency", "method": "hash",
                                                       "key_env": "PAYMENTS_MASK_KEY"})  # fmt: skip
    config = parse_config(data)
    message = refused(resolve_secrets, config, {})
    assert message.startswith("inputs.payments.operators.0 (mask currency): method hash needs a secret key")
    resolved = resolve_secrets(config, {"PAYMENTS_MASK_KEY": "k" * 32})
    assert secrets_carried(resolved) == ["inputs.payments.operators.0.key"]
    assert secrets_carried(config) == []


# --- a run, killed at a barrier -------------------------------------------------------------------------------


def test_a_two_input_run_killed_at_a_barrier_is_exactly_once_and_equal_to_the_recomputation(tmp_path: Path) -> None:
    data = two_inputs()
    for spec in data["inputs"].values():
        spec["source"].update(rate_per_s=10_000, start_time_ms=START_TIME_MS)
    data["aggregate"]["window"]["size_ms"] = 1_000  # many windows: every epoch emits some
    data.update(
        delivery="exactly_once",
        sinks=[{"type": "jsonl", "path": str(tmp_path / "out")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")},
        checkpoint={"interval_ms": 100, "uri": str(tmp_path / "checkpoints")},
        runtime={"max_events": 12_000, "duration_s": None, "batch_size": 256, "source_actors": 2,
                 "aggregate_actors": 2},
        tracing={"enabled": False},
    )  # fmt: skip
    config = parse_config(data)
    actors = InProcessActors(die_at_checkpoint=5)  # the barrier of the third epoch, on one of two aggregates

    summary = asyncio.run(Supervisor(config, "two", actors).run())

    assert len(summary.recoveries_s) == 1 and actors.killed
    report = asyncio.run(verify_run(config))
    assert report.input_records == 12_000 == summary.progress.events_in
    assert report.failures("exactly_once") == []
    windows = report.outputs[0].windows
    assert windows is not None and windows.expected > 0
    assert windows.emissions == windows.expected, "every window emitted exactly once"
    assert report.dead_letters.dead_lettered.count > 0 and report.dead_letters.missing.count == 0
    inputs = {input_of(row["partition"]) for row in read_jsonl_dir(tmp_path / "dead")}
    assert inputs == {0, 1}, "each input's invalid events are dead-lettered under its own pipeline partitions"


# --- lag of every input -----------------------------------------------------------------------------------------


async def test_lag_shows_each_input_by_its_own_partitions(tmp_path: Path) -> None:
    data = two_inputs()
    data["inputs"]["orders"]["source"].update(partitions=2, rate_per_s=800)  # 400/s a partition
    data["inputs"]["payments"]["source"].update(partitions=1, rate_per_s=100)
    data.update(name="lagging", checkpoint={"uri": str(tmp_path)})
    config = parse_config(data)
    positions = {0: 100, 1: 50, pipeline_partition(1, 0): 30}
    store = CheckpointStore(str(tmp_path), "lagging")
    store.commit(Checkpoint(epoch=1, run_id="r", created_at_s=0.0, started_at_s=1_000.0, start_time_ms=0,
                            partitions=3, sources=[SourceSnapshot("s", positions, {})], aggregates=[]))  # fmt: skip

    samples = await lag_samples(config, now_s=1_010.0)

    assert [(s.topic, s.partition, s.end_offset, s.processed_offset) for s in samples.partitions] == [
        ("generator:orders", 0, 4_000, 100), ("generator:orders", 1, 4_000, 50), ("generator:payments", 0, 1_000, 30),
    ]  # fmt: skip


# --- what the partition numbers mean -----------------------------------------------------------------------------


def test_a_checkpoint_restores_only_under_the_input_layout_it_was_written_with() -> None:
    config = parse_config(two_inputs())
    layout = input_layout(config)
    assert layout == ["orders: generator", "payments: generator"]
    check_input_layout(config, layout, "checkpoint 3")  # the same: fine
    swapped = two_inputs()
    swapped["inputs"] = dict(reversed(list(swapped["inputs"].items())))
    message = refused(check_input_layout, parse_config(swapped), layout, "checkpoint 3")
    assert "checkpoint 3 was written with the inputs ['orders: generator', 'payments: generator']" in message
    assert "would go to the wrong inputs" in message
    assert "predates input layouts" in refused(check_input_layout, config, [], "checkpoint 3")
    single = parse_config({k: v for k, v in two_inputs().items() if k != "inputs"} | two_inputs()["inputs"]["orders"])
    check_input_layout(single, [], "an older checkpoint")  # a single input's checkpoint from before layouts


def test_two_inputs_may_not_read_one_topic_nor_give_generator_events_one_id() -> None:
    data = two_inputs()
    data["kafka"] = {}
    for name in ("orders", "payments"):
        data["inputs"][name]["source"] = {"type": "kafka", "topic": "events"}
    assert "several inputs read the topic(s) ['events']" in refused(parse_config, data)
    data = two_inputs()
    data["inputs"]["payments"]["source"]["event_id_prefix"] = "o"
    assert "set source.event_id_prefix on each" in refused(parse_config, data)


def kafka_orders(source: dict[str, Any], inputs: dict[str, Any] | None = None) -> PipelineConfig:
    """The orders pipeline on a Kafka source (or on ``inputs``), as a config dict would give it."""
    data = orders_pipeline().model_dump(mode="json", by_alias=True, exclude_none=True)
    data.update(kafka={"bootstrap_servers": "127.0.0.1:9092"})
    if inputs is None:
        data["source"] = source
    else:
        data["inputs"] = inputs
        for name in ("source", "schema", "operators"):
            data.pop(name, None)
    return parse_config(data)


def test_a_kafka_source_of_several_topics_is_an_input_per_topic() -> None:
    config = kafka_orders({"type": "kafka", "topics": ["web", "shop"]})

    assert [(spec.name, spec.index, spec.source.topic) for spec in config.all_inputs] == [  # type: ignore[union-attr]
        ("input[web]", 0, "web"),
        ("input[shop]", 1, "shop"),
    ]
    assert input_layout(config) == ["input[web]: kafka web", "input[shop]: kafka shop"]
    assert partition_ids([3, 2]) == [0, 1, 2, 65_536, 65_537]
    compiled = compile_pipeline(resolve_secrets(config, {"EVENTRAY_MASK_KEY": "k" * 32}))
    assert [i.name for i in compiled.inputs] == ["input[web]", "input[shop]"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"type": "kafka", "topic": "web", "topics": ["shop"]}, "both topic and topics are set"),
        ({"type": "kafka"}, "neither topic nor topics is set"),
        ({"type": "kafka", "topics": ["web", "web"]}, r"topics lists \['web'\] more than once"),
    ],
)
def test_a_kafka_source_names_its_topics_one_way_once(source: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        kafka_orders(source)


def test_a_topic_read_by_two_inputs_is_refused_even_inside_topics() -> None:
    orders = orders_pipeline()
    spec = {"schema": orders.all_inputs[0].schema.model_dump(mode="json", by_alias=True, exclude_none=True),
            "operators": [op.model_dump(mode="json", exclude_none=True) for op in orders.operators]}  # fmt: skip
    inputs = {
        "a": {"source": {"type": "kafka", "topics": ["web", "shop"]}, **spec},
        "b": {"source": {"type": "kafka", "topic": "shop"}, **spec},
    }
    with pytest.raises(ConfigError, match=r"several inputs read the topic\(s\) \['shop'\]"):
        kafka_orders({}, inputs)
