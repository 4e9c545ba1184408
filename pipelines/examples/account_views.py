"""CQRS read side of the accounts domain (:mod:`pipelines.examples.accounts`): projections of the account events.

``AccountBalance`` folds an account's events into ``{"open", "balance_cents", "version", "events"}``: the view
``balances`` of ``configs/account-views.yaml``, queried by account id; it emits the view after each batch of an
account's events (a changelog the sinks take). An event at or below the version already
applied is a redelivery and changes nothing, so the view is right whether the events topic is read once or again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from pipelines.state.process_function import Key, Output, ProcessContext, TimeDomain

__all__ = ["ACCOUNT_VIEWS_YAML", "AccountBalance", "account_views_on_kafka", "balance_after"]

ACCOUNT_VIEWS_YAML = Path(__file__).resolve().parents[2] / "configs" / "account-views.yaml"


def balance_after(view: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any]:
    """The view after ``event`` (a row of the events topic: ``version``, ``event_type``, ``data`` as JSON text);
    the fold the projection runs and the reference a checker recomputes with."""
    view = dict(view) if view is not None else {"open": False, "balance_cents": 0, "version": 0, "events": 0}
    if event["version"] <= view["version"]:
        return view
    data = json.loads(event.get("data") or "{}")
    kind = event["event_type"]
    if kind == "Opened":
        view["open"] = True
    elif kind == "Deposited":
        view["balance_cents"] += int(data.get("amount_cents", 0))
    elif kind == "Withdrawn":
        view["balance_cents"] -= int(data.get("amount_cents", 0))
    view["version"] = int(event["version"])
    view["events"] += 1
    return view


class AccountBalance:
    """The ``balances`` projection: a keyed process function over the account events, keyed by account."""

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> Output:
        """Fold the key's events; emit the view as it is after them (the projection's changelog)."""
        view = ctx.state.get()
        for event in rows.select(["version", "event_type", "data"]).to_pylist():
            view = balance_after(view, event)
        ctx.state.set(view)
        return [{"aggregate_id": key, **view}]

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output:
        return None


def account_views_on_kafka(name: str, bootstrap: str, events_topic: str, work_dir: Path) -> dict[str, Any]:
    """``configs/account-views.yaml`` reading ``events_topic`` (an accounts pipeline's events) on Kafka, for tests
    and benchmarks to adjust; checkpoints and dead letters under ``work_dir``."""
    data: dict[str, Any] = yaml.safe_load(ACCOUNT_VIEWS_YAML.read_text(encoding="utf-8"))
    data["source"].update(topic=events_topic, group_id=name)
    data.update(
        name=name,
        kafka={"bootstrap_servers": bootstrap},
        dead_letter={"type": "jsonl", "path": str(work_dir / "dead_letter")},
        checkpoint={"uri": str(work_dir / "checkpoints")},
        tracing={"enabled": False},
    )
    return data
