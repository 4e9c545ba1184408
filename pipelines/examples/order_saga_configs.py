"""The order saga's four pipelines (``configs/order-saga*.yaml``) as data, on one broker under one topic prefix,
for tests and benchmarks to adjust: the orchestrator and its inventory, payments and shipping participants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["PARTICIPANTS", "SagaTopics", "order_saga_on_kafka"]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PARTICIPANTS = ("inventory", "payments", "shipping")
_TOPICS = (
    "orders-placed", "order-saga-replies", "order-saga-events", "order-saga-stuck", "order-saga-effects",
    "inventory-commands", "payment-commands", "shipping-commands", "order-saga.dead-letter",
)  # fmt: skip


class SagaTopics(dict[str, str]):
    """Each topic of the configs (``orders-placed`` ...) -> the topic it is under the prefix."""


def order_saga_on_kafka(
    prefix: str, bootstrap: str, work_dir: Path, options: dict[str, Any] | None = None
) -> tuple[dict[str, dict[str, Any]], SagaTopics]:
    """The four configs, each config's data by its name (``order-saga``, ``order-saga-inventory`` ...), every
    topic, group and pipeline name under ``prefix``, read from the earliest offsets, checkpoints under
    ``work_dir``; ``options`` replace the participants' (failure rates, seed). Returns them and the topics."""
    topics = SagaTopics({topic: f"{prefix}.{topic}" for topic in _TOPICS})
    configs: dict[str, dict[str, Any]] = {}
    for name in ("order-saga", *(f"order-saga-{p}" for p in PARTICIPANTS)):
        data: dict[str, Any] = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))
        data = _renamed(data, topics)
        data["name"] = f"{prefix}-{name}"
        for source in _sources(data):
            source.update(group_id=f"{prefix}-{name}", start="earliest")
        data.update(
            kafka={"bootstrap_servers": bootstrap},
            checkpoint={"interval_ms": 500, "uri": str(work_dir / name / "checkpoints")},
            tracing={"enabled": False},
        )
        if name == "order-saga":  # the saga names its commands' topics; they are written under the prefix
            data["keyed"]["topics"] = {
                t: topics[t] for t in ("inventory-commands", "payment-commands", "shipping-commands")
            }
        elif options is not None:
            data["keyed"]["options"] = {**data["keyed"]["options"], **options}
        configs[name] = data
    return configs, topics


def _renamed(value: Any, topics: SagaTopics) -> Any:
    if isinstance(value, dict):
        return {key: _renamed(item, topics) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item, topics) for item in value]
    return topics.get(value, value) if isinstance(value, str) else value


def _sources(data: dict[str, Any]) -> list[dict[str, Any]]:
    if "inputs" in data:
        return [spec["source"] for spec in data["inputs"].values()]
    return [data["source"]]
