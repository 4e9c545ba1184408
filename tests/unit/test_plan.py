"""compile_pipeline: the orders pipeline compiles and runs end to end in-process; wrong names fail early."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
import yaml

from pipelines.config.pipeline import GeneratorSourceConfig, load_config, parse_config
from pipelines.config.secrets import resolve_secrets
from pipelines.errors import ConfigError
from pipelines.io.generator import generate_events
from pipelines.io.records import RawBatch
from pipelines.stages.plan import compile_pipeline
from pipelines.state.keyed_operator import Added
from pipelines.windows.tumbling import WINDOW_END, WINDOW_START, TumblingWindows

ORDERS_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders.yaml"
SELECTED = ["customer_id", "amount_cents", "_partition", "_offset", "_timestamp", "_key", "_traceparent", "_event_id"]


def orders_data() -> dict[str, Any]:
    data = yaml.safe_load(ORDERS_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def compile_error(data: dict[str, Any]) -> str:
    config = parse_config(data)
    with pytest.raises(ConfigError) as caught:
        compile_pipeline(config)
    return str(caught.value)


def test_orders_pipeline_compiles() -> None:
    compiled = compile_pipeline(load_config(ORDERS_YAML))
    assert len(compiled.operators) == 3
    assert list(compiled.output_columns) == SELECTED
    assert compiled.result_columns == (
        "customer_id",
        WINDOW_START,
        WINDOW_END,
        "orders",
        "revenue_cents",
        "avg_order_cents",
        "max_order_cents",
        "_traceparent",  # results carry their first contributing event's trace context
    )


def test_orders_pipeline_runs_in_process() -> None:
    config = resolve_secrets(load_config(ORDERS_YAML), os.environ)  # the mask key, as the driver does
    assert isinstance(config.source, GeneratorSourceConfig)
    assert config.aggregate is not None
    compiled = compile_pipeline(config)
    generated = generate_events(config.source, partition=0, start=0, count=3_000, start_ms=1_700_000_000_000)
    count = len(generated.offsets)
    raw = RawBatch(
        topic="generator",
        partition=0,
        offsets=pa.array(generated.offsets),
        payloads=generated.payloads,
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )
    decoded = compiled.decode(raw)
    events = compiled.transform(decoded.events).events
    assert events.schema.names == SELECTED

    # recompute from the payloads which rows should reach the aggregate
    expected = []
    for offset, kind, payload in zip(
        generated.offsets.tolist(), generated.invalid_kind.tolist(), generated.payloads.to_pylist(), strict=True
    ):
        if not kind:
            record = msgspec.json.decode(payload)
            if record["event_type"] == "OrderCreated":
                expected.append((offset, record["customer_id"], record["amount_cents"]))
    assert events.column("_offset").to_pylist() == [row[0] for row in expected]
    assert events.column("customer_id").to_pylist() == [row[1] for row in expected]
    assert decoded.dead_letter_count == int((generated.invalid_kind != "").sum())

    windows = TumblingWindows(config.aggregate, carry_trace=compiled.carries_trace)
    assert windows.add(events) == Added()
    result = windows.flush()
    assert result is not None
    assert result.schema.names == list(compiled.result_columns)
    assert sum(result.column("orders").to_pylist()) == len(expected)
    assert sum(result.column("revenue_cents").to_pylist()) == sum(row[2] for row in expected)


def test_select_that_drops_timestamp_before_aggregate_fails() -> None:
    data = orders_data()
    data["operators"][2]["columns"] = [name for name in SELECTED if name != "_timestamp"]
    message = compile_error(data)
    assert "aggregate" in message
    assert "_timestamp" in message
    assert "keep it in select" in message


def test_unknown_aggregate_key_names_the_choices() -> None:
    data = orders_data()
    data["aggregate"]["key"] = "customer"
    message = compile_error(data)
    assert message.startswith("aggregate.key: unknown column 'customer'")
    assert str(SELECTED) in message


def test_aggregation_of_a_dropped_column_names_the_choices() -> None:
    data = orders_data()
    data["aggregate"]["aggregations"]["qty"] = {"fn": "sum", "column": "quantity"}
    message = compile_error(data)
    assert message.startswith("aggregate.aggregations.qty.column: unknown column 'quantity'")
    assert str(SELECTED) in message


def test_console_sort_by_unknown_column_names_the_choices() -> None:
    data = orders_data()
    data["sinks"][0]["sort_by"] = "amount_cents"  # an input column, not a result column
    message = compile_error(data)
    assert message.startswith("sinks.0.sort_by: unknown column 'amount_cents'")
    assert "'revenue_cents'" in message
    assert "'window_start_ms'" in message


def test_sort_by_of_operator_output_without_aggregate() -> None:
    data = orders_data()
    del data["aggregate"]
    data["sinks"][0]["sort_by"] = "amount_cents"
    compiled = compile_pipeline(parse_config(data))
    assert compiled.result_columns == tuple(SELECTED)


def test_operator_errors_carry_their_position() -> None:
    data = orders_data()
    data["operators"][1]["column"] = "phone"
    message = compile_error(data)
    assert message.startswith("operators.1 (mask):")
    assert "'phone'" in message


def test_schema_check_with_unknown_column_fails() -> None:
    data = orders_data()
    data["schema"]["checks"].append("total > 0")
    message = compile_error(data)
    assert "['total']" in message
    assert "event_time_ms" in message


def test_schema_check_with_a_type_error_fails_before_start() -> None:
    data = orders_data()
    data["schema"]["checks"].append('amount_cents > "abc"')
    message = compile_error(data)
    assert message.startswith("schema.checks:")
    assert 'amount_cents > "abc"' in message or "amount_cents > 'abc'" in message


@pytest.mark.parametrize("name", ["customer_id", WINDOW_START, WINDOW_END])
def test_aggregation_named_like_a_result_column_fails(name: str) -> None:
    data = orders_data()
    data["aggregate"]["aggregations"][name] = {"fn": "count"}
    with pytest.raises(ConfigError):
        compile_pipeline(parse_config(data))


def test_aggregation_named_like_the_key_names_the_path() -> None:
    data = orders_data()
    data["aggregate"]["aggregations"]["customer_id"] = {"fn": "count"}
    message = compile_error(data)
    assert message.startswith("aggregate.aggregations.customer_id: the name is taken by the aggregate key")


def test_a_type_error_in_an_operator_fails_at_compile_time() -> None:
    data = load_config(ORDERS_YAML).model_dump(mode="json", by_alias=True)
    data["operators"] = [{"op": "filter", "expr": 'amount_cents > "abc"'}, *data["operators"]]

    with pytest.raises(ConfigError, match="operators"):
        compile_pipeline(parse_config(data))


def test_summing_a_string_column_fails_at_compile_time() -> None:
    data = load_config(ORDERS_YAML).model_dump(mode="json", by_alias=True)
    data["aggregate"]["aggregations"]["revenue_cents"] = {"fn": "sum", "column": "customer_id"}

    with pytest.raises(ConfigError, match=r"aggregate\.aggregations"):
        compile_pipeline(parse_config(data))
