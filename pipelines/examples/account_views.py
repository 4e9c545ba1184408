"""CQRS read side of the accounts domain (:mod:`pipelines.examples.accounts`): projections of the account events.

``AccountBalance`` folds an account's events into ``{"open", "balance_cents", "version", "events"}``: the view
``balances`` of ``configs/account-views.yaml``, queried by account id; it emits the view after each batch of an
account's events (a changelog the sinks take). An event at or below the version already
applied is a redelivery and changes nothing, so the view is right whether the events topic is read once or again.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from pipelines.state.process_function import Key, Output, ProcessContext, TimeDomain

__all__ = [
    "ACCOUNT_VIEWS_YAML",
    "AccountBalance",
    "account_events",
    "account_views_on_kafka",
    "balance_after",
    "balances_after",
    "views_on_kafka",
]

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


def balances_after(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every account's view after ``events`` (in their order), by account id: the reference a checker compares
    a whole view with."""
    views: dict[str, dict[str, Any]] = {}
    for event in events:
        views[event["aggregate_id"]] = balance_after(views.get(event["aggregate_id"]), event)
    return views


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


def account_events(count: int, accounts: int, seed: int, start_time_ms: int) -> list[dict[str, Any]]:
    """``count`` events of ``accounts`` accounts (``acc-000``...) as the accounts pipeline stores them (versions
    from 1 per account, an ``Opened`` first, then deposits and withdrawals), for tests and benchmarks of the
    read side that write the events topic themselves."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    versions: dict[str, int] = defaultdict(int)
    width = max(3, len(str(accounts - 1)))
    events = []
    for index in range(count):
        account = f"acc-{rng.randrange(accounts):0{width}d}"
        versions[account] += 1
        kind = "Opened" if versions[account] == 1 else rng.choice(["Deposited", "Deposited", "Withdrawn"])
        data = {} if kind == "Opened" else {"amount_cents": rng.randint(1, 900)}
        events.append({"aggregate_id": account, "version": versions[account], "event_type": kind,
                       "schema_version": 1, "data": json.dumps(data), "command_id": f"c-{index}",
                       "_timestamp": start_time_ms + index})  # fmt: skip
    return events


def account_views_on_kafka(name: str, bootstrap: str, events_topic: str, work_dir: Path) -> dict[str, Any]:
    """``configs/account-views.yaml`` reading ``events_topic`` (an accounts pipeline's events) on Kafka, for tests
    and benchmarks to adjust; checkpoints and dead letters under ``work_dir``."""
    return views_on_kafka(ACCOUNT_VIEWS_YAML, name, bootstrap, events_topic, work_dir)


def views_on_kafka(config: Path, name: str, bootstrap: str, events_topic: str, work_dir: Path) -> dict[str, Any]:
    """The views pipeline ``config`` (a YAML file) named ``name``, reading ``events_topic`` on Kafka in its own
    consumer group; checkpoints and dead letters under ``work_dir``, tracing off."""
    data: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["source"].update(topic=events_topic, group_id=name)
    data.update(
        name=name,
        kafka={"bootstrap_servers": bootstrap},
        dead_letter={"type": "jsonl", "path": str(work_dir / "dead_letter")},
        checkpoint={"uri": str(work_dir / "checkpoints")},
        tracing={"enabled": False},
    )
    return data
