"""Pipeline config: loading, validation messages that name the field path and what is allowed, overrides."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config.pipeline import (
    ConsoleSinkConfig,
    DeadLetterConfig,
    GeneratorSourceConfig,
    JsonlSinkConfig,
    PipelineConfig,
    TumblingWindowConfig,
    load_config,
    parse_config,
)
from pipelines.errors import ConfigError, EventrayError, ExpressionError, FatalError, PipelineHalted

ORDERS_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders.yaml"


def orders_data() -> dict[str, Any]:
    data = yaml.safe_load(ORDERS_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "test.yaml")
    return str(caught.value)


def test_orders_yaml_loads_with_its_values() -> None:
    config = load_config(ORDERS_YAML)
    assert config.name == "orders"
    assert isinstance(config.source, GeneratorSourceConfig)
    assert config.source.partitions == 8
    assert config.source.rate_per_s == 20_000
    assert config.source.invalid_fraction == 0.01
    assert config.schema_ is not None
    assert config.schema_.event_time_field == "event_time_ms"
    assert config.schema_.event_id_field == "event_id"
    assert config.schema_.fields["amount_cents"] == "int64"
    assert [op.op for op in config.operators] == ["filter", "mask", "select"]
    assert config.aggregate is not None
    assert config.aggregate.key == "customer_id"
    assert isinstance(config.aggregate.window, TumblingWindowConfig)
    assert config.aggregate.window.size_ms == 10_000
    assert {name: agg.fn for name, agg in config.aggregate.aggregations.items()} == {
        "orders": "count",
        "revenue_cents": "sum",
        "avg_order_cents": "mean",
        "max_order_cents": "max",
    }
    assert isinstance(config.sinks[0], ConsoleSinkConfig)
    assert config.sinks[0].sort_by == "revenue_cents"
    assert isinstance(config.sinks[1], JsonlSinkConfig)
    assert isinstance(config.dead_letter, DeadLetterConfig)
    assert config.dead_letter.path == "out/orders/dead_letter"
    assert config.runtime.max_key_groups == 128
    assert config.runtime.duration_s == 30


def test_yaml_round_trip_gives_an_equal_config() -> None:
    config = load_config(ORDERS_YAML)
    assert parse_config(yaml.safe_load(config.to_yaml())) == config


def test_unknown_key_names_its_path_and_says_unknown_field() -> None:
    data = orders_data()
    data["runtime"]["source_actor"] = 3
    message = config_error(data)
    assert "runtime.source_actor" in message
    assert "unknown field" in message
    assert "test.yaml" in message


def test_unknown_top_level_key_is_rejected() -> None:
    data = orders_data()
    data["sink"] = []
    message = config_error(data)
    assert "sink:" in message
    assert "unknown field" in message


def test_negative_rate_names_the_field_and_the_bound() -> None:
    data = orders_data()
    data["source"]["rate_per_s"] = -5
    message = config_error(data)
    assert "rate_per_s" in message
    assert "greater than 0" in message


def test_negative_rate_path_is_the_yaml_path() -> None:
    data = orders_data()
    data["source"]["rate_per_s"] = -5
    assert "source.rate_per_s:" in config_error(data)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda data: data["sinks"][0].update(top=0), "sinks.0.top:"),
        (lambda data: data["sinks"].append({"type": "jsonl", "path": ""}), "sinks.2.path:"),
        (lambda data: data["operators"][0].update(expr=""), "operators.0.expr:"),
        (lambda data: data.update(dead_letter={"type": "kafka", "topic": ""}, kafka={}), "dead_letter.topic:"),
        (lambda data: data.update(source={"type": "kafka", "topic": "t", "start": "x"}, kafka={}), "source.start:"),
        (lambda data: data["aggregate"]["window"].update(size_ms=0), "aggregate.window.size_ms:"),
    ],
)
def test_error_paths_are_yaml_paths_without_union_tags(change: Any, path: str) -> None:
    data = orders_data()
    change(data)
    assert path in config_error(data)


def test_a_key_named_like_a_union_tag_stays_in_the_path() -> None:
    data = orders_data()
    data["aggregate"]["aggregations"]["file"] = {"fn": "p99"}
    assert "aggregate.aggregations.file.fn:" in config_error(data)


def test_every_error_is_listed_not_just_the_first() -> None:
    data = orders_data()
    data["source"]["rate_per_s"] = -5
    data["runtime"]["batch_size"] = 0
    message = config_error(data)
    assert "rate_per_s" in message
    assert "runtime.batch_size" in message


def test_aggregate_actors_above_max_key_groups_is_rejected() -> None:
    data = orders_data()
    data["runtime"].update(aggregate_actors=200, max_key_groups=100)
    message = config_error(data)
    assert "runtime.aggregate_actors (200)" in message
    assert "runtime.max_key_groups (100)" in message


def test_aggregate_actors_above_max_key_groups_is_fine_without_aggregate() -> None:
    data = orders_data()
    del data["aggregate"]
    data["runtime"].update(aggregate_actors=200, max_key_groups=100)
    assert parse_config(data).runtime.aggregate_actors == 200


def test_sum_without_column_is_rejected() -> None:
    data = orders_data()
    data["aggregate"]["aggregations"]["total"] = {"fn": "sum"}
    message = config_error(data)
    assert "aggregate.aggregations.total" in message
    assert "'sum' needs a column" in message


def test_count_needs_no_column() -> None:
    data = orders_data()
    data["aggregate"]["aggregations"] = {"n": {"fn": "count"}}
    config = parse_config(data)
    assert config.aggregate is not None
    assert config.aggregate.aggregations["n"].column is None


def test_unknown_source_type_lists_the_allowed_tags() -> None:
    data = orders_data()
    data["source"]["type"] = "kinesis"
    message = config_error(data)
    assert "source:" in message
    assert "'kinesis'" in message
    assert "'generator'" in message
    assert "'file'" in message


def test_unknown_operator_lists_the_allowed_ops() -> None:
    data = orders_data()
    data["operators"].append({"op": "explode"})
    message = config_error(data)
    assert "operators.3" in message
    for op in ("'filter'", "'select'", "'derive'", "'mask'"):
        assert op in message


def test_unknown_aggregation_fn_lists_the_choices() -> None:
    data = orders_data()
    data["aggregate"]["aggregations"]["p99"] = {"fn": "p99", "column": "amount_cents"}
    message = config_error(data)
    assert "aggregate.aggregations.p99.fn" in message
    assert "'count'" in message
    assert "'mean'" in message


@pytest.mark.parametrize(
    ("section", "field", "value", "path"),
    [
        ("source", "invalid_fraction", 1.5, "invalid_fraction"),
        ("source", "partitions", 0, "partitions"),
        ("runtime", "max_key_groups", 0, "runtime.max_key_groups"),
        ("runtime", "source_actors", 257, "runtime.source_actors"),
        ("runtime", "duration_s", 0, "runtime.duration_s"),
    ],
)
def test_out_of_range_values_are_rejected(section: str, field: str, value: object, path: str) -> None:
    data = orders_data()
    data[section][field] = value
    assert path in config_error(data)


def test_no_sinks_is_rejected() -> None:
    data = orders_data()
    data["sinks"] = []
    assert "at least one sink" in config_error(data)


def test_default_sink_is_console() -> None:
    data = orders_data()
    del data["sinks"]
    assert parse_config(data).sinks == [ConsoleSinkConfig()]


def test_bad_name_is_rejected() -> None:
    data = orders_data()
    data["name"] = "Bad Name"
    assert "name:" in config_error(data)


def test_required_column_must_be_a_field() -> None:
    data = orders_data()
    data["schema"]["required"] = ["event_id", "nope"]
    message = config_error(data)
    assert "'nope'" in message
    assert "'event_id'" in message  # the known fields are listed


def test_event_time_field_must_be_numeric() -> None:
    data = orders_data()
    data["schema"]["event_time_field"] = "email"
    assert "event_time_field 'email' must be int64 or timestamp_ms" in config_error(data)


def test_aggregate_needs_an_event_time_field() -> None:
    data = orders_data()
    data["schema"]["event_time_field"] = None
    assert "aggregate needs schema.event_time_field" in config_error(data)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config([1, 2], "list.yaml")


def test_overrides_via_dotted_paths() -> None:
    config = load_config(
        ORDERS_YAML,
        {"runtime.max_events": 10, "source.seed": 7, "aggregate.window.size_ms": 5, "runtime.duration_s": None},
    )
    assert config.runtime.max_events == 10
    assert isinstance(config.source, GeneratorSourceConfig)
    assert config.source.seed == 7
    assert config.aggregate is not None
    assert isinstance(config.aggregate.window, TumblingWindowConfig)
    assert config.aggregate.window.size_ms == 5
    assert config.runtime.duration_s is None
    # untouched neighbours keep the file's values
    assert config.runtime.batch_size == 4096
    assert config.source.partitions == 8


def test_override_creates_missing_sections(tmp_path: Path) -> None:
    data = orders_data()
    del data["runtime"]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(path, {"runtime.max_events": 3})
    assert config.runtime.max_events == 3
    assert config.runtime.batch_size == 4096  # defaults for the rest


@pytest.mark.parametrize("dotted", ["runtime.max_events.limit", "name.first", "sinks.0.top"])
def test_override_through_a_value_is_a_config_error(dotted: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"override {dotted!r}: {dotted.partition('.')[0]}")):
        load_config(ORDERS_YAML, {"runtime.max_events": 10, dotted: 1})


def test_override_fills_a_null_section(tmp_path: Path) -> None:
    data = orders_data()
    data["runtime"] = None
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_config(path, {"runtime.max_events": 3}).runtime.max_events == 3


def test_invalid_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.max_events"):
        load_config(ORDERS_YAML, {"runtime.max_events": 0})


def test_overrides_do_not_touch_the_file() -> None:
    before = ORDERS_YAML.read_bytes()
    load_config(ORDERS_YAML, {"runtime.max_events": 10})
    assert ORDERS_YAML.read_bytes() == before


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_config(missing)
    assert str(missing) in str(caught.value)


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [orders\nsource: {", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


def test_configs_are_frozen() -> None:
    config = load_config(ORDERS_YAML)
    with pytest.raises(ValueError, match="frozen"):
        config.name = "other"


def test_python_built_config_equals_yaml_config() -> None:
    data = copy.deepcopy(orders_data())
    assert PipelineConfig.model_validate(data) == load_config(ORDERS_YAML)


@pytest.mark.parametrize("error_type", [ConfigError, ExpressionError, PipelineHalted, FatalError, EventrayError])
def test_errors_are_picklable(error_type: type[Exception]) -> None:
    error = error_type("operators.0 (filter): something is wrong")
    copied = pickle.loads(pickle.dumps(error))
    assert type(copied) is error_type
    assert str(copied) == str(error)


def test_config_error_is_fatal() -> None:
    assert issubclass(ConfigError, FatalError)
    assert issubclass(ExpressionError, ConfigError)


@pytest.mark.parametrize(
    ("checkpoint", "runtime", "patience_s"),
    [
        ({"interval_ms": 5_000}, {}, 10.0),  # the default interval: twice it
        ({"interval_ms": 4_000}, {}, 8.0),
        ({"interval_ms": 30_000}, {}, 60.0),  # a long interval tolerates a longer pause
        ({"interval_ms": 300_000}, {}, 60.0),  # up to the ceiling
        ({"interval_ms": 500}, {}, 5.0),  # a short one: the floor
        (None, {}, 10.0),  # no checkpoints
        ({"interval_ms": 500}, {"unresponsive_after_s": 2.5}, 2.5),  # as set
    ],
)
def test_watchdog_patience_follows_the_checkpoint_interval_unless_set(
    checkpoint: dict[str, Any] | None, runtime: dict[str, Any], patience_s: float
) -> None:
    data = orders_data()
    data["checkpoint"] = checkpoint
    data.setdefault("runtime", {}).update(runtime)
    assert parse_config(data, "test.yaml").unresponsive_after_s == patience_s


def test_watchdog_patience_must_be_positive() -> None:
    data = orders_data()
    data.setdefault("runtime", {})["unresponsive_after_s"] = 0
    assert "runtime.unresponsive_after_s" in config_error(data)
