"""Quix Streams' ``join_asof`` for ``python -m benchmarks.joins`` (run in a child process of its own): orders
joined with the newest inventory version of their SKU at or before their event time, ``how="left"``."""

from __future__ import annotations

import time
from typing import Any

from quixstreams import Application

__all__ = ["run"]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    assigned: dict[str, float] = {}

    class TimedApplication(Application):
        def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
            super()._on_assign(consumer, partitions)
            assigned.setdefault("ready_s", time.time())

    app = TimedApplication(broker_address=spec["bootstrap"], consumer_group=f"bench-join-quix-{time.time_ns()}",
                           auto_offset_reset="earliest", state_dir=f"{spec['work_dir']}/state", loglevel="WARNING",
                           producer_extra_config={"enable.idempotence": True})  # fmt: skip
    topics = [app.topic(spec[side], value_deserializer="json", key_deserializer="str",
                        timestamp_extractor=lambda value, _headers, _timestamp, _type: int(value["event_time_ms"]))
              for side in ("orders", "inventory")]  # fmt: skip
    counts = {"inputs": 0, "outputs": 0}
    total = spec["orders_count"] + spec["inventory_count"]

    def stop_when_done() -> None:
        # every record read and every order written: the same end as the other systems'
        if counts["outputs"] >= spec["orders_count"] and counts["inputs"] >= total:
            app.stop()

    def read(_: Any) -> None:
        counts["inputs"] += 1
        stop_when_done()

    def written(_: Any) -> None:
        counts["outputs"] += 1
        stop_when_done()

    def merge(order: dict[str, Any], stock: dict[str, Any] | None) -> dict[str, Any]:
        return {**order, "in_stock": None if stock is None else stock["quantity"]}

    orders, inventory = app.dataframe(topics[0]).update(read), app.dataframe(topics[1]).update(read)
    joined = orders.join_asof(inventory, how="left", on_merge=merge).update(written)
    joined.to_topic(app.topic(spec["output"], value_serializer="json", key_serializer="str"))
    app.run()
    return {"ready_s": assigned.get("ready_s", 0.0), "done_s": time.time(), **counts}
