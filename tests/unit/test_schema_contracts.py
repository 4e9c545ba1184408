"""The event contracts of several configs (who reads and writes which topic, with which schema and subject)
and their Markdown, from the configs alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.config.pipeline import load_config, parse_config
from pipelines.errors import ConfigError
from pipelines.examples.order_versions import READER_FILE, V3
from pipelines.schemas.contracts import contracts_of
from pipelines.schemas.docs import contracts_markdown
from pipelines.schemas.subjects import subject_name

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def avro_writer(strategy: str = "topic") -> dict[str, Any]:
    return {
        "name": "writer",
        "source": {"type": "generator", "partitions": 1},
        "schema": {
            "fields": {"order_id": "string", "customer_id": "string", "amount_cents": "int64", "placed_ms": "int64"}
        },
        "sinks": [
            {
                "type": "kafka",
                "topic": "orders-avro",
                "format": "avro",
                "avro_schema": V3,
                "registry": {"url": "http://127.0.0.1:1", "subject_strategy": strategy},
            }
        ],
        "kafka": {},
    }


def test_subject_names_follow_confluents_strategies() -> None:
    assert subject_name("topic", "orders", "shop.OrderPlaced") == "orders-value"
    assert subject_name("record", "orders", "shop.OrderPlaced") == "shop.OrderPlaced"
    assert subject_name("topic_record", "orders", "shop.OrderPlaced") == "orders-shop.OrderPlaced"


def test_readers_and_writers_of_a_topic_across_configs() -> None:
    reader = load_config(CONFIGS / "orders-registry.yaml")
    writer = parse_config(avro_writer("topic_record"))

    contracts = contracts_of([(Path("r.yaml"), reader), (Path("w.yaml"), writer)])

    assert [r.pipeline for r in contracts.readers_of("orders-avro")] == ["orders-registry"]
    (written,) = contracts.writers_of("orders-avro")
    assert written.subject("orders-avro") == "orders-avro-shop.orders.OrderPlaced"
    assert contracts.readers[0].subjects("orders-avro") == ["orders-avro-value"]
    assert contracts.topics == ["orders-avro"]


def test_the_markdown_names_writers_readers_fields_and_aliases() -> None:
    contracts = contracts_of(
        [(Path("r.yaml"), load_config(CONFIGS / "orders-registry.yaml")), (Path("w.yaml"), parse_config(avro_writer()))]
    )

    text = contracts_markdown(contracts)

    assert "## `orders-avro`" in text
    assert "**written by** `writer` (w.yaml, sinks.0): Avro, subject `orders-avro-value`" in text
    assert "**read by** `orders-registry` (r.yaml, source): Avro, Confluent wire format" in text
    assert "| `customer_id` | string |  | customerId |  |" in text
    assert "| `placed_ms` | long (timestamp-millis) |" in text


def test_a_field_no_reader_record_has_is_refused_naming_it(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "orders-registry.yaml", {"schema.fields.coupon": "string"})

    with pytest.raises(ConfigError, match=r"schema.fields \['coupon'\] are in no record of the reader schema"):
        contracts_of([(tmp_path / "c.yaml", config)])


def test_the_reader_schema_file_must_exist(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.avsc")
    config = load_config(CONFIGS / "orders-registry.yaml", {"schema.registry.reader_schema_file": missing})

    with pytest.raises(ConfigError, match=r"schema\.registry\.reader_schema_file: cannot read"):
        contracts_of([(tmp_path / "c.yaml", config)])
    assert READER_FILE.exists()


def test_a_column_whose_reader_values_do_not_convert_is_refused_naming_both_types(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "orders-registry.yaml", {"schema.fields.amount_cents": "bool"})

    with pytest.raises(ConfigError, match=r"schema\.fields\.amount_cents: bool, but .* has it as long.*int64"):
        contracts_of([(tmp_path / "c.yaml", config)])
