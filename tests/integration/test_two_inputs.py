"""A pipeline with two inputs (orders and payments, each with its own source, schema and operators) on a local
Ray cluster: from files of two formats and schemas, equal to a plain-Python reference; from two Kafka topics,
exactly once through a crash between producing and committing, verified by the delivery checker."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from actors.kafka.admin import committed_offsets
from cluster.commands.produce import produce_events
from cluster.commands.verify import verify_run
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.testing import CrashAt, run_stages
from tests.integration.pipelines_under_test import START_TIME_MS, connection, unique
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TWO_INPUTS_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders_payments.yaml"
WINDOW_MS = 10_000
CUSTOMERS = 40


def two_inputs() -> dict[str, Any]:
    data = yaml.safe_load(TWO_INPUTS_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# --- files: two formats, two schemas, some dirt ---------------------------------------------------------------


def write_orders(directory: Path, files: int, per_file: int, rng: random.Random) -> list[dict[str, Any]]:
    """JSONL orders in ``files`` files; every 50th line is dirt (an amount that is a string, a cut line). Returns
    the valid orders."""
    valid: list[dict[str, Any]] = []
    directory.mkdir(parents=True)
    for index in range(files):
        lines = []
        for line in range(per_file):
            event = {
                "event_id": f"o{index}-{line}", "event_type": "OrderCreated",
                "customer_id": f"c{rng.randrange(CUSTOMERS)}", "order_id": f"order-{index}-{line}",
                "amount_cents": rng.randrange(100, 50_000),
                "event_time_ms": START_TIME_MS + line * 20 + rng.randrange(400),
            }  # fmt: skip
            if line % 50 == 7:
                lines.append(json.dumps({**event, "amount_cents": "12.50"}))
            elif line % 50 == 31:
                lines.append(json.dumps(event)[:25])
            else:
                lines.append(json.dumps(event))
                valid.append(event)
        (directory / f"orders-{index}.jsonl").write_text("\n".join(lines) + "\n")
    return valid


def write_payments(path: Path, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Payments in Parquet with a schema of their own (``customer``, ``amount``, ``paid_at_ms``); every 40th has no
    time (a required field). Returns the valid payments."""
    rows = [
        {
            "payment_id": f"p-{line}", "customer": f"c{rng.randrange(CUSTOMERS)}",
            "amount": rng.randrange(100, 30_000), "method": rng.choice(["card", "sepa", "wallet"]),
            "paid_at_ms": None if line % 40 == 3 else START_TIME_MS + line * 30 + rng.randrange(400),
        }
        for line in range(count)
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    return [row for row in rows if row["paid_at_ms"] is not None]


def reference(orders: list[dict[str, Any]], payments: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """(customer, window start) -> (orders, ordered_cents, payments, paid_cents); None where a window had none of
    a kind (a sum over no rows is null)."""
    sums: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for order in orders:
        window = order["event_time_ms"] // WINDOW_MS * WINDOW_MS
        sums[order["customer_id"], window][0] += 1
        sums[order["customer_id"], window][1] += order["amount_cents"]
    for payment in payments:
        window = payment["paid_at_ms"] // WINDOW_MS * WINDOW_MS
        sums[payment["customer"], window][2] += 1
        sums[payment["customer"], window][3] += payment["amount"]
    return {
        key: (orders or None, ordered or None, paid or None, paid_cents or None)
        for key, (orders, ordered, paid, paid_cents) in sums.items()
    }


def two_file_inputs(tmp_path: Path) -> tuple[PipelineConfig, list[dict[str, Any]], list[dict[str, Any]]]:
    """Orders in 3 JSONL files and payments in one Parquet file, both with dirt; the config and the clean rows."""
    rng = random.Random(5)
    orders = write_orders(tmp_path / "orders", files=3, per_file=2_000, rng=rng)
    payments = write_payments(tmp_path / "payments.parquet", 4_000, rng)
    data = two_inputs()
    data["inputs"]["orders"]["source"] = {"type": "file", "paths": [str(tmp_path / "orders" / "*.jsonl")]}
    data["inputs"]["payments"] = {
        "source": {"type": "file", "paths": [str(tmp_path / "payments.parquet")], "format": "parquet"},
        "schema": {
            "fields": {"payment_id": "string", "customer": "string", "amount": "int64", "method": "string",
                       "paid_at_ms": "int64"},
            "required": ["payment_id", "customer", "paid_at_ms"],
            "event_time_field": "paid_at_ms", "event_id_field": "payment_id",
        },
        "operators": [
            {"op": "derive", "column": "paid", "expr": "1"},
            {"op": "select", "columns": ["customer", "paid", "amount", "_partition", "_offset", "_timestamp",
                                         "_key", "_traceparent", "_event_id"],
             "rename": {"customer": "customer_id", "amount": "paid_cents"}},
        ],
    }  # fmt: skip
    data.update(
        sinks=[{"type": "jsonl", "path": str(tmp_path / "windows")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints")},
        runtime={"duration_s": None, "source_actors": 2, "aggregate_actors": 2, "batch_size": 500},
    )
    config = parse_config(data)
    return config, orders, payments


def test_orders_from_jsonl_and_payments_from_parquet_equal_the_reference(
    ray_driver: LocalRayCluster, tmp_path: Path
) -> None:
    config, orders, payments = two_file_inputs(tmp_path)

    summary = run_pipeline(config, address=ray_driver.address)

    rows = read_jsonl_dir(tmp_path / "windows")
    actual = {
        (row["customer_id"], row["window_start_ms"]): (row["orders"], row["ordered_cents"], row["payments"],
                                                      row["paid_cents"])
        for row in rows
    }  # fmt: skip
    assert len(rows) == len(actual), "a (customer, window) was emitted more than once"
    assert actual == reference(orders, payments)
    dirty = 3 * 2_000 - len(orders) + 4_000 - len(payments)
    dead = read_jsonl_dir(tmp_path / "dead_letter")
    assert len(dead) == dirty == summary.progress.dead_lettered
    assert {row["topic"].rsplit(".", 1)[-1] for row in dead} == {"jsonl", "parquet"}, "both inputs' dirt"
    assert summary.progress.events_in == 3 * 2_000 + 4_000 and summary.progress.late_events == 0
    report = asyncio.run(verify_run(config))
    assert report.failures("exactly_once") == [], "each window once, each dirty record dead-lettered once"


def test_the_same_two_inputs_run_in_process_equal_the_reference(tmp_path: Path) -> None:
    config, orders, payments = two_file_inputs(tmp_path)

    run = run_stages(config, senders=2, owners=2, batch_size=500)

    rows = run.results.rows()
    actual = {
        (row["customer_id"], row["window_start_ms"]): (row["orders"], row["ordered_cents"], row["payments"],
                                                      row["paid_cents"])
        for row in rows
    }  # fmt: skip
    assert len(rows) == len(actual) and actual == reference(orders, payments)
    assert run.dead_letters.num_rows == 3 * 2_000 - len(orders) + 4_000 - len(payments) > 0
    assert run.events_in == 3 * 2_000 + 4_000 and run.late.rows() == []


# --- Kafka: two topics, exactly once through a crash -------------------------------------------------------------


def test_two_kafka_topics_exactly_once_through_a_crash_between_producing_and_committing(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = unique("two-inputs")
    orders_topic, payments_topic = f"{name}.orders", f"{name}.payments"
    # max_events is split evenly over the 5 pipeline partitions (6,400 each); each topic holds that many a partition
    orders = GeneratorSourceConfig(partitions=3, seed=42, rate_per_s=None, event_time_rate_per_s=2_000)
    payments = GeneratorSourceConfig(partitions=2, seed=7, rate_per_s=None, event_time_rate_per_s=1_200)
    events = {orders_topic: (19_200, orders), payments_topic: (12_800, payments)}
    for topic, (count, generator) in events.items():
        asyncio.run(produce_events(connection(kafka_bootstrap), topic, count, generator, None, START_TIME_MS))
    data = two_inputs()
    data["inputs"]["orders"]["source"] = {"type": "kafka", "topic": orders_topic, "start": "earliest", "group_id": name}
    data["inputs"]["payments"]["source"] = {"type": "kafka", "topic": payments_topic, "start": "earliest"}
    data["aggregate"]["window"]["size_ms"] = 1_000  # many windows: every epoch emits some
    data.update(
        name=name,
        kafka={"bootstrap_servers": kafka_bootstrap},
        delivery="exactly_once",
        sinks=[{"type": "kafka", "topic": f"{name}.out", "key_column": "customer_id"}],
        dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints")},
        runtime={"duration_s": None, "max_events": 32_000, "source_actors": 2, "aggregate_actors": 2,
                 "batch_size": 1_000},
        tracing={"enabled": False},
    )  # fmt: skip
    config = parse_config(data)

    summary = run_pipeline(config, address=ray_driver.address, faults=(CrashAt("aggregate-1", epoch=1),))

    assert len(summary.recoveries_s) >= 1 and summary.reemitted_rows > 0, "the interrupted commit was redone"
    report = asyncio.run(verify_run(config))
    assert report.input_records == 32_000 == summary.progress.events_in
    assert report.failures("exactly_once") == []
    windows = report.outputs[0].windows
    assert windows is not None and windows.expected > 0 and windows.emissions == windows.expected
    assert report.dead_letters.dead_lettered.count > 0 and report.dead_letters.missing.count == 0
    for topic, (count, _) in events.items():
        committed = asyncio.run(committed_offsets(connection(kafka_bootstrap), topic, name))
        assert sum(offset or 0 for offset in committed.values()) == count, f"{topic}: offsets under one group"
