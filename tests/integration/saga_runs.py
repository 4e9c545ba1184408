"""The order saga's four pipelines (configs/order-saga*.yaml) run on a real broker and a real Ray cluster, for the
saga integration and chaos tests: topics made, orders placed, every saga awaited to its end, and what the topics
hold read back (read committed) for the checker (pipelines/verify/saga_check.py)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.kafka.admin import ensure_topic, read_topic
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.order_saga import order_starts
from pipelines.examples.order_saga_configs import SagaTopics, order_saga_on_kafka
from pipelines.sagas.contract import TERMINAL_STATUSES
from tests.integration.pipelines_under_test import connection, produce_events

__all__ = ["SagaRun", "saga_run"]

PARTITIONS = {"orders-placed": 4, "order-saga-replies": 4, "order-saga-events": 4, "order-saga-effects": 2,
              "inventory-commands": 2, "payment-commands": 2, "shipping-commands": 2}  # fmt: skip


@dataclass
class SagaRun:
    """The configs of one run, its topics and the orders it places."""

    configs: dict[str, PipelineConfig]
    topics: SagaTopics
    bootstrap: str
    starts: list[dict[str, Any]]

    @property
    def saga_ids(self) -> set[str]:
        return {start["saga_id"] for start in self.starts}

    def place_orders(self, starts: list[dict[str, Any]] | None = None) -> None:
        asyncio.run(produce_events(self.bootstrap, self.topics["orders-placed"], starts or self.starts, "saga_id"))

    def rows(self, topic: str) -> list[dict[str, Any]]:
        """The committed rows of ``topic`` (as the configs name it), each with its ``_traceparent`` header."""
        records = asyncio.run(read_topic(connection(self.bootstrap), self.topics[topic], idle_s=1.0))
        rows = []
        for record in records:
            row = json.loads(record.value)
            headers = dict(record.headers or ())
            row["_traceparent"] = headers["traceparent"].decode() if "traceparent" in headers else None
            rows.append(row)
        return rows

    def ended(self) -> tuple[set[str], list[dict[str, Any]]]:
        """The sagas whose newest lifecycle event is terminal, and the events."""
        events = self.rows("order-saga-events")
        newest: dict[str, dict[str, Any]] = {}
        for event in events:
            held = newest.get(event["saga_id"])
            if held is None or event["sequence"] > held["sequence"]:
                newest[event["saga_id"]] = event
        return {saga for saga, event in newest.items() if event["status"] in TERMINAL_STATUSES}, events

    def wait_until_every_saga_ended(self, patient_s: float, progress: Any = None) -> list[dict[str, Any]]:
        """Poll the events topic until every saga placed has a terminal status; return its events."""
        deadline = time.monotonic() + patient_s
        while True:
            ended, events = self.ended()
            if progress is not None:
                progress(len(ended))
            if self.saga_ids <= ended:
                return events
            assert time.monotonic() < deadline, (
                f"{len(self.saga_ids - ended)} of {len(self.saga_ids)} sagas had not ended after {patient_s} s, "
                f"e.g. {sorted(self.saga_ids - ended)[:5]}"
            )
            time.sleep(2.0)


def saga_run(prefix: str, bootstrap: str, work_dir: Path, sagas: int, options: dict[str, Any],
             timeout_ms: int, seed: int = 3) -> SagaRun:  # fmt: skip
    """The four configs under ``prefix`` (participants with ``options``, steps waiting ``timeout_ms``), their
    topics made, and ``sagas`` orders to place (some placed twice)."""
    data, topics = order_saga_on_kafka(prefix, bootstrap, work_dir, options)
    data["order-saga"]["keyed"]["options"] = {"timeout_ms": timeout_ms}
    for name, partitions in PARTITIONS.items():
        asyncio.run(ensure_topic(connection(bootstrap), topics[name], partitions))
    for name in ("order-saga-stuck", "order-saga.dead-letter"):
        asyncio.run(ensure_topic(connection(bootstrap), topics[name], 1))
    configs = {name: parse_config(config) for name, config in data.items()}
    starts = order_starts(sagas, seed=seed, start_time_ms=1_767_225_600_000, step_ms=50)
    return SagaRun(configs, topics, bootstrap, starts)
