"""Every example config in configs/ loads and compiles, so the examples the README points to stay runnable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config.pipeline import AggregationConfig, PipelineConfig, load_config, parse_config
from pipelines.config.state import KeyedProcessConfig
from pipelines.errors import ConfigError
from pipelines.stages.plan import compile_pipeline

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
# Not pipeline configs: fake_cluster.yaml is a Ray autoscaler config, checked in test_autoscale_policy.py.
NON_PIPELINE_CONFIGS = frozenset({"fake_cluster.yaml"})
CONFIG_FILES = sorted(path for path in CONFIGS_DIR.glob("*.yaml") if path.name not in NON_PIPELINE_CONFIGS)


def test_there_are_example_configs() -> None:
    assert CONFIGS_DIR / "orders.yaml" in CONFIG_FILES


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[path.name for path in CONFIG_FILES])
def test_example_config_loads_and_compiles(path: Path) -> None:
    config = load_config(path)
    compiled = compile_pipeline(config)
    assert compiled.config is config
    stages = config.keyed_stages
    if stages and isinstance(stages[-1].keyed, KeyedProcessConfig) and compiled.stages[-1].output_schema is None:
        assert compiled.result_columns == (), "rows of a function without output_schema are known as it runs"
    else:
        assert compiled.result_columns


def test_orders_aggregates_revenue_per_customer_over_10_s_tumbling_windows() -> None:
    config = load_config(CONFIGS_DIR / "orders.yaml")
    aggregate = config.aggregate
    assert aggregate is not None
    assert aggregate.key == "customer_id"
    assert aggregate.window.type == "tumbling"
    assert aggregate.window.size_ms == 10_000
    assert aggregate.aggregations["revenue_cents"] == AggregationConfig(fn="sum", column="amount_cents")
    assert config.schema_ is not None
    assert config.schema_.event_time_field == "event_time_ms"
    result_columns = compile_pipeline(config).result_columns
    assert result_columns[0] == "customer_id"
    assert "revenue_cents" in result_columns


def _orders_kafka_with_sink(sink: dict[str, Any]) -> PipelineConfig:
    data = yaml.safe_load((CONFIGS_DIR / "orders_kafka.yaml").read_text(encoding="utf-8"))
    data["sinks"] = [sink]
    return parse_config(data, "orders_kafka.yaml")


def test_a_misspelt_kafka_sink_key_column_fails_to_compile() -> None:
    config = _orders_kafka_with_sink({"type": "kafka", "topic": "out", "key_column": "customr_id"})
    with pytest.raises(ConfigError, match=r"sinks\.0\.key_column"):
        compile_pipeline(config)


def test_partition_by_source_partition_without_a_partition_column_fails_to_compile() -> None:
    config = _orders_kafka_with_sink({"type": "kafka", "topic": "out", "partition_by": "source_partition"})
    with pytest.raises(ConfigError, match=r"sinks\.0\.partition_by"):
        compile_pipeline(config)
