"""A Kafka sink that routes each row to the topic a column names (events by type), exactly once on a local Ray
cluster: every event in the topic of its type, the others in the default topic with what they named, each once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from actors.kafka.admin import read_topic
from cluster.commands.verify import verify_run
from cluster.control.runner import run_pipeline
from pipelines.testing import CrashAt
from tests.integration.pipelines_under_test import connection, generator_source, passthrough, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EVENTS = 20_000


def test_events_go_to_the_topic_of_their_type_exactly_once(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = unique("routed")
    routes = {"OrderCreated": f"{name}.ordercreated", "PaymentProcessed": f"{name}.paymentprocessed"}
    config = passthrough(
        generator_source(),
        [{"type": "kafka", "topic": f"{name}.other", "topic_column": "route", "topics": sorted(routes.values())}],
        {"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        {"max_events": EVENTS, "source_actors": 2},
        kafka={"bootstrap_servers": kafka_bootstrap},
    )
    operators = [
        {"op": "derive", "column": "route", "expr": f'concat("{name}.", lower(event_type))'},
        {"op": "select", "columns": ["event_id", "event_type", "route", "_partition", "_offset"]},
    ]
    data = config.model_dump(mode="json", by_alias=True)
    data.update(operators=operators, delivery="exactly_once",
                checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints")})  # fmt: skip
    config = type(config).model_validate(data)

    # source-0 exits once its first epoch's outputs are staged, before it commits them: the write-ahead rows are
    # routed again at recovery, each to its topic
    summary = run_pipeline(config, address=ray_driver.address, faults=(CrashAt("source-0", epoch=1),))

    assert len(summary.recoveries_s) >= 1 and summary.reemitted_rows > 0, "the interrupted commit was redone"
    report = asyncio.run(verify_run(config))
    assert report.failures("exactly_once") == [], "each valid event once, over all the sink's topics"
    assert report.outputs[0].rows == summary.progress.events_out > 0
    for event_type, topic in routes.items():
        records = asyncio.run(read_topic(connection(kafka_bootstrap), topic))
        assert records and {record.value.count(event_type.encode()) for record in records} == {1}
        assert all(b"eventray.unrouted" not in dict(record.headers or ()) for record in records)
    others = asyncio.run(read_topic(connection(kafka_bootstrap), f"{name}.other"))
    named = Counter(dict(record.headers)["eventray.unrouted"].decode() for record in others)
    assert set(named) == {f"{name}.{kind}" for kind in ("userregistered", "shipmentdispatched", "inventoryupdated")}
