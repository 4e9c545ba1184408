"""An aggregate actor of a queryable stage, in process (no Ray): what its query() answers through checkpoints,
a restore into another actor and a regroup; the state and positions it checkpoints beside each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from actors.aggregate_actor import AggregateActor
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.account_views import ACCOUNT_VIEWS_YAML, account_events, balance_after
from pipelines.stages.plan import compile_pipeline
from pipelines.state.keygroups import key_group_of
from pipelines.state.queryable import NotOwner

START_MS = 1_767_225_600_000


def views_config(tmp_path: Path) -> PipelineConfig:
    data: dict[str, Any] = yaml.safe_load(ACCOUNT_VIEWS_YAML.read_text(encoding="utf-8"))
    data.update(checkpoint={"uri": str(tmp_path / "checkpoints")}, sinks=[{"type": "jsonl", "path": str(tmp_path)}],
                dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")})  # fmt: skip
    return parse_config(data)


def batch_of(config: PipelineConfig, events: list[dict[str, Any]]) -> pa.RecordBatch:
    """``events`` as the source stage hands them to the keyed stage."""
    schema = compile_pipeline(config).stages[0].input_schema
    rows = [{**event, "_partition": 0, "_offset": offset, "_key": event["aggregate_id"].encode(),
             "_traceparent": None, "_event_id": None} for offset, event in enumerate(events)]  # fmt: skip
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def folded(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    views: dict[str, dict[str, Any]] = {}
    for event in events:
        views[event["aggregate_id"]] = balance_after(views.get(event["aggregate_id"]), event)
    return views


@pytest.fixture
def config(tmp_path: Path) -> PipelineConfig:
    return views_config(tmp_path)


def test_committed_answers_the_checkpoint_and_latest_what_was_applied_since(config: PipelineConfig) -> None:
    events = account_events(60, 6, seed=1, start_time_ms=START_MS)
    groups = list(range(config.runtime.max_key_groups))
    actor = AggregateActor(config, "aggregate-0", groups, senders=1)
    actor.process(0, batch_of(config, events[:40]), watermark_ms=None)
    snapshot = actor.checkpoint(1)
    actor.complete(1)
    actor.process(0, batch_of(config, events[40:]), watermark_ms=None)
    keys = sorted(folded(events))

    committed = actor.query(keys, "committed")
    latest = actor.query(keys, "latest")

    assert committed.epoch == 1 and committed.values == [folded(events[:40]).get(key) for key in keys]
    assert latest.epoch is None and latest.values == [folded(events)[key] for key in keys]
    last = events[-1]
    assert actor.query([last["aggregate_id"]], "latest", f"{last['aggregate_id']}@{last['version']}").reached
    not_yet = actor.query([last["aggregate_id"]], "committed", f"{last['aggregate_id']}@{last['version']}")
    assert not not_yet.reached and not_yet.applied_version is not None and not_yet.applied_version < last["version"]
    assert snapshot.positions is not None and snapshot.epoch == 1
    actor.close()


def test_an_actor_restored_from_a_checkpoint_answers_its_state_and_positions(config: PipelineConfig) -> None:
    events = account_events(50, 5, seed=2, start_time_ms=START_MS)
    groups = list(range(config.runtime.max_key_groups))
    first = AggregateActor(config, "aggregate-0", groups, senders=1)
    first.process(0, batch_of(config, events), watermark_ms=None)
    snapshot = first.checkpoint(3)
    first.complete(3)
    first.close()

    second = AggregateActor(config, "aggregate-0b", groups, senders=1)
    second.restore([snapshot])
    keys = sorted(folded(events))
    last = events[-1]

    assert second.query(keys, "committed").values == [folded(events)[key] for key in keys]
    assert second.query(keys, "committed").epoch == 3, "the checkpoint restored names the committed answers"
    assert second.query([last["aggregate_id"]], "latest", f"{last['aggregate_id']}@{last['version']}").reached
    second.close()


def test_after_a_regroup_an_actor_answers_its_groups_and_refuses_the_others(config: PipelineConfig) -> None:
    events = account_events(80, 8, seed=3, start_time_ms=START_MS)
    every = list(range(config.runtime.max_key_groups))
    actor = AggregateActor(config, "aggregate-0", every, senders=1)
    actor.process(0, batch_of(config, events), watermark_ms=None)
    snapshot = actor.checkpoint(1)
    actor.complete(1)
    views = folded(events)
    kept = sorted({key_group_of(key, len(every)) for key in list(views)[:3]})

    actor.regroup(kept, 1, [snapshot])

    mine = [key for key in views if key_group_of(key, len(every)) in kept]
    others = [key for key in views if key not in mine]
    assert mine and others
    assert actor.query(mine, "latest").values == [views[key] for key in mine]
    assert actor.query(mine, "committed").epoch == 1
    with pytest.raises(NotOwner):
        actor.query(others[:1], "latest")
    mine_last = max((e for e in events if e["aggregate_id"] == mine[0]), key=lambda e: e["version"])
    assert actor.query([mine[0]], "latest", f"{mine[0]}@{mine_last['version']}").reached, "positions kept"
    actor.close()
