"""The ``keyed`` section: upsert, dedup and process configs, the ``keyed_stage`` view, the operator factory and
the compile-time checks, without Ray (one plain AggregateActor drives processing-time timers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from actors.aggregate_actor import AggregateActor
from pipelines.config.pipeline import KeyedStage, PipelineConfig, load_config, parse_config
from pipelines.config.state import DedupConfig, KeyedProcessConfig, UpsertConfig
from pipelines.errors import ConfigError
from pipelines.io.sources import GeneratorReader
from pipelines.stages.keyed_stage import open_keyed_operator
from pipelines.stages.plan import compile_pipeline
from pipelines.state.dedup import Dedup
from pipelines.state.process_function import KeyedProcess, ProcessContext
from pipelines.state.upsert_table import UpsertTable
from pipelines.windows.tumbling import TumblingWindows

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


class CountPerKey:
    """A process function for the tests: emits a running count per key."""

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> list[dict[str, Any]]:
        count = ctx.state.get(0) + rows.num_rows
        ctx.state.set(count)
        return [{"sku": key, "count": count}]

    def on_timer(self, key: Any, timer_ms: int, domain: str, ctx: ProcessContext) -> None:
        return None


def _orders(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONFIGS_DIR / "orders.yaml").read_text(encoding="utf-8"))
    data.pop("aggregate")
    data["sinks"] = [{"type": "console"}]
    data["operators"] = []  # every decoded column stays
    data.update(changes)
    return data


def _config(keyed: dict[str, Any], **changes: Any) -> PipelineConfig:
    return parse_config(_orders(keyed=keyed, **changes))


# --- config ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyed", "model"),
    [
        ({"type": "upsert", "key": "sku"}, UpsertConfig),
        ({"type": "dedup", "id_column": "event_id", "ttl_ms": 60_000}, DedupConfig),
        ({"type": "process", "key": "sku", "function": "tests.unit.test_keyed_stage:CountPerKey"}, KeyedProcessConfig),
    ],
)
def test_keyed_is_told_apart_by_type(keyed: dict[str, Any], model: type) -> None:
    config = _config(keyed)
    assert isinstance(config.keyed, model)
    assert config.aggregate is None


def test_aggregate_and_keyed_together_are_refused_naming_both_and_the_fix() -> None:
    data = yaml.safe_load((CONFIGS_DIR / "orders.yaml").read_text(encoding="utf-8"))
    data["keyed"] = {"type": "dedup", "id_column": "event_id", "ttl_ms": 1_000}
    with pytest.raises(ConfigError, match=r"aggregate and keyed are both set.*remove the other"):
        parse_config(data)


def test_a_keyed_section_without_type_lists_the_types() -> None:
    with pytest.raises(ConfigError, match=r"keyed: .*write type: one of upsert, dedup, process"):
        _config({"key": "sku"})


def test_keyed_errors_name_the_field_path_without_the_tag() -> None:
    with pytest.raises(ConfigError) as raised:
        _config({"type": "dedup", "id_column": "event_id", "ttl_ms": 0, "idle_timeout_ms": 0, "kee": 1})
    message = str(raised.value)
    for path in ("keyed.ttl_ms", "keyed.idle_timeout_ms", "keyed.kee"):
        assert f"  {path}:" in message
    assert "keyed.dedup" not in message


@pytest.mark.parametrize(
    "keyed",
    [{"type": "upsert", "key": "sku"}, {"type": "dedup", "id_column": "event_id", "ttl_ms": 1}],
)
def test_keyed_stages_need_event_time_like_windows(keyed: dict[str, Any]) -> None:
    data = _orders(keyed=keyed)
    data["schema"]["event_time_field"] = None
    with pytest.raises(ConfigError, match=rf"keyed \({keyed['type']}\) needs schema.event_time_field"):
        parse_config(data)


def test_keyed_stages_need_a_key_group_per_aggregate_actor() -> None:
    with pytest.raises(ConfigError, match=r"exceeds runtime.max_key_groups"):
        _config({"type": "upsert", "key": "sku"}, runtime={"aggregate_actors": 4, "max_key_groups": 2})


def test_watermark_settings_have_the_aggregate_defaults() -> None:
    upsert, dedup = UpsertConfig(key="k"), DedupConfig(id_column="i", ttl_ms=1)
    process = KeyedProcessConfig(key="k", function="a:B")
    aggregate = parse_config(yaml.safe_load((CONFIGS_DIR / "orders.yaml").read_text(encoding="utf-8"))).aggregate
    assert aggregate is not None
    for model in (upsert, dedup, process):
        assert model.idle_timeout_ms == type(aggregate).model_fields["idle_timeout_ms"].default
        assert model.max_out_of_order_ms == type(aggregate).model_fields["max_out_of_order_ms"].default


# --- keyed_stage view -----------------------------------------------------------------------------------------


def test_keyed_stage_views_every_kind_of_keyed_stage() -> None:
    windows = parse_config(yaml.safe_load((CONFIGS_DIR / "orders.yaml").read_text(encoding="utf-8")))
    assert windows.keyed_stage == KeyedStage("windows", "customer_id", "aggregate.key", 1_000, 5_000)
    upsert = _config({"type": "upsert", "key": "sku", "max_out_of_order_ms": 7, "idle_timeout_ms": 9})
    assert upsert.keyed_stage == KeyedStage("upsert", "sku", "keyed.key", 7, 9)
    dedup = _config({"type": "dedup", "id_column": "event_id", "ttl_ms": 5})
    assert dedup.keyed_stage == KeyedStage("dedup", "event_id", "keyed.id_column", 1_000, 5_000)
    process = _config({"type": "process", "key": "sku", "function": "tests.unit.test_keyed_stage:CountPerKey"})
    assert process.keyed_stage == KeyedStage("process", "sku", "keyed.key", 1_000, 5_000)
    assert parse_config(_orders()).keyed_stage is None


# --- factory and compile --------------------------------------------------------------------------------------


def test_the_factory_builds_the_operator_the_config_names() -> None:
    windows = parse_config(yaml.safe_load((CONFIGS_DIR / "orders.yaml").read_text(encoding="utf-8")))
    assert isinstance(open_keyed_operator(windows, carry_trace=False), TumblingWindows)
    assert isinstance(open_keyed_operator(_config({"type": "upsert", "key": "sku"}), False), UpsertTable)
    dedup = _config({"type": "dedup", "id_column": "event_id", "ttl_ms": 5})
    assert isinstance(open_keyed_operator(dedup, False), Dedup)
    process = _config({"type": "process", "key": "sku", "function": "tests.unit.test_keyed_stage:CountPerKey"})
    assert isinstance(open_keyed_operator(process, False), KeyedProcess)
    with pytest.raises(ValueError, match="no keyed stage"):
        open_keyed_operator(parse_config(_orders()), False)


def test_upsert_and_dedup_results_are_the_operators_columns() -> None:
    for keyed in ({"type": "upsert", "key": "sku"}, {"type": "dedup", "id_column": "event_id", "ttl_ms": 5}):
        compiled = compile_pipeline(_config(keyed))
        assert compiled.result_columns == compiled.output_columns


@pytest.mark.parametrize(
    ("keyed", "operators", "field", "column"),
    [
        ({"type": "upsert", "key": "skuu"}, [], "keyed.key", "skuu"),
        ({"type": "upsert", "key": "sku", "delete_column": "gone"}, [], "keyed.delete_column", "gone"),
        ({"type": "dedup", "id_column": "evt", "ttl_ms": 5}, [], "keyed.id_column", "evt"),
        ({"type": "process", "key": "nope", "function": "tests.unit.test_keyed_stage:CountPerKey"}, [], "keyed.key",
         "nope"),
        ({"type": "upsert", "key": "sku"}, [{"op": "select", "columns": ["quantity"]}], "keyed.key", "sku"),
    ],
)  # fmt: skip
def test_unknown_keyed_columns_fail_to_compile_naming_the_field_and_the_columns(
    keyed: dict[str, Any], operators: list[dict[str, Any]], field: str, column: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: unknown column '{column}'; available: \[") as raised:
        compile_pipeline(_config(keyed, operators=operators))
    if not operators:
        assert "'event_time_ms'" in str(raised.value), "the error lists the available columns"


def test_upsert_and_dedup_need_the_timestamp_column() -> None:
    select = [{"op": "select", "columns": ["sku", "quantity", "event_id"]}]
    with pytest.raises(ConfigError, match=r"^keyed: the operators dropped _timestamp, which upsert needs"):
        compile_pipeline(_config({"type": "upsert", "key": "sku"}, operators=select))


def test_a_delete_column_that_is_not_boolean_fails_the_dry_run() -> None:
    with pytest.raises(ConfigError, match=r"^keyed.delete_column: column 'quantity' is int64, not bool"):
        compile_pipeline(_config({"type": "upsert", "key": "sku", "delete_column": "quantity"}))
    deleted = [{"op": "derive", "column": "deleted", "expr": 'event_type == "UserRegistered"'}]
    compile_pipeline(_config({"type": "upsert", "key": "sku", "delete_column": "deleted"}, operators=deleted))


def test_a_process_function_that_cannot_be_imported_fails_to_compile() -> None:
    with pytest.raises(ConfigError, match=r"^keyed.function: process function 'tests.unit.nowhere:Fn' cannot be"):
        compile_pipeline(_config({"type": "process", "key": "sku", "function": "tests.unit.nowhere:Fn"}))


def test_process_results_are_unknown_so_sink_columns_are_not_checked() -> None:
    keyed = {"type": "process", "key": "sku", "function": "tests.unit.test_keyed_stage:CountPerKey"}
    compiled = compile_pipeline(_config(keyed, sinks=[{"type": "console", "sort_by": "count"}]))
    assert compiled.result_columns == ()


def test_sink_columns_are_checked_against_upsert_results() -> None:
    with pytest.raises(ConfigError, match=r"^sinks.0.sort_by: unknown column 'count'"):
        compile_pipeline(_config({"type": "upsert", "key": "sku"}, sinks=[{"type": "console", "sort_by": "count"}]))


def test_the_example_configs_are_keyed_as_documented() -> None:
    inventory = load_config(CONFIGS_DIR / "inventory_upsert.yaml")
    assert isinstance(inventory.keyed, UpsertConfig) and inventory.keyed.key == "sku"
    dedup = load_config(CONFIGS_DIR / "orders_dedup.yaml")
    assert isinstance(dedup.keyed, DedupConfig) and dedup.keyed.id_column == "event_id" and dedup.keyed.ttl_ms > 0


class RemindNow:
    """A process function for the tests: a processing-time timer per key, already due, that reports itself."""

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> None:
        ctx.timers.register_processing_time_timer(1)

    def on_timer(self, key: Any, timer_ms: int, domain: str, ctx: ProcessContext) -> list[dict[str, Any]]:
        return [{"sku": key, "fired": domain}]


async def test_the_aggregate_actor_fires_processing_time_timers_at_its_next_call(tmp_path: Path) -> None:
    keyed = {"type": "process", "key": "sku", "function": "tests.unit.test_keyed_stage:RemindNow"}
    config = _config(keyed, checkpoint=None, dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")})
    compiled = compile_pipeline(config)
    raw = await GeneratorReader(config.source, 0, 0, 400, 0.0, 0).fetch(400)  # type: ignore[arg-type]
    assert raw is not None
    events = compiled.transform(compiled.decode(raw).events).events
    actor = AggregateActor(config, "aggregate-0", list(range(config.runtime.max_key_groups)), senders=1)

    actor.process(0, events, watermark_ms=0)

    fired = [row for row in actor.progress().preview if row.get("fired") == "processing"]
    assert fired, "the timers registered by this batch were due and fired in the same call"
    actor.close()
