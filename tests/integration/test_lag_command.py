"""`eventray lag` on a Kafka pipeline: the group's committed offsets against the log end offsets of a real topic."""

from __future__ import annotations

import pytest

from cluster.commands.lag import lag_samples
from cluster.commands.produce import produce_events
from pipelines.config.pipeline import GeneratorSourceConfig, load_config
from tests.integration.pipelines_under_test import PARTITIONS, START_TIME_MS, connection, unique

pytestmark = [pytest.mark.kafka]


async def test_lag_of_a_kafka_pipeline_is_what_its_group_has_not_committed(kafka_bootstrap: str) -> None:
    topic = unique("lag-in")
    generator = GeneratorSourceConfig(partitions=PARTITIONS, rate_per_s=None)
    await produce_events(connection(kafka_bootstrap), topic, 1_000, generator, None, START_TIME_MS)
    config = load_config(
        "configs/orders_kafka.yaml",
        {"source.topic": topic, "source.group_id": unique("lag-group"), "kafka.bootstrap_servers": kafka_bootstrap},
    )

    samples = await lag_samples(config, now_s=0.0)

    assert len(samples.partitions) == PARTITIONS
    assert sum(s.end_offset - s.processed_offset for s in samples.partitions) == 1_000, "nothing committed yet"
