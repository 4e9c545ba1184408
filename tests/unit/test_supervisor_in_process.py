"""The Supervisor driven without Ray: plain actor objects in this process behind the handle interface.

The same orders run as the integration tests, so the reconcile logic (assignment, freeze/stop, finish order,
commit after the aggregates flushed, summary) is checked tick by tick without a cluster.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa

from actors import AggregateActor, AggregateProgress, SourceActor, SourceProgress
from cluster.assignment import partition_limits
from cluster.supervisor import Supervisor
from pipelines.config import PipelineConfig
from pipelines.orders import orders_pipeline
from tests.reference import read_jsonl_dir, reference_orders

START_TIME_MS = 1_767_225_600_000
EVENTS = 20_000


class InProcessAggregate:
    def __init__(self, actor: AggregateActor, actor_id: str, log: list[str]) -> None:
        self.actor, self.actor_id, self._log = actor, actor_id, log

    async def progress(self) -> AggregateProgress:
        return self.actor.progress()

    async def close(self) -> AggregateProgress:
        self._log.append(f"close {self.actor_id}")
        return self.actor.close()


class InProcessSource:
    def __init__(self, actor: SourceActor, actor_id: str, log: list[str]) -> None:
        self.actor, self.actor_id, self._log = actor, actor_id, log

    def start(self) -> Any:
        return self.actor.run()

    async def progress(self) -> SourceProgress:
        return self.actor.progress()

    async def stop(self) -> None:
        self.actor.stop()

    async def freeze(self) -> None:
        await self.actor.freeze()

    async def add_partitions(self, partitions: list[int]) -> None:
        await self.actor.add_partitions(partitions)

    async def commit_and_close(self) -> SourceProgress:
        self._log.append(f"commit {self.actor_id}")
        return await self.actor.commit_and_close()


class InProcessDownstream:
    def __init__(self, aggregates: list[AggregateActor]) -> None:
        self._aggregates = aggregates

    @property
    def owners(self) -> int:
        return len(self._aggregates)

    async def send(self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None,
                   trace_context: str | None) -> None:  # fmt: skip
        self._aggregates[owner].process(sender, batch, watermark_ms, trace_context)

    async def finish(self, sender: int) -> None:
        for aggregate in self._aggregates:
            aggregate.finish(sender)


class InProcessActors:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.killed: list[str] = []

    def aggregate(self, config: PipelineConfig, actor_id: str, key_groups: list[int], senders: int) -> Any:
        return InProcessAggregate(AggregateActor(config, actor_id, key_groups, senders), actor_id, self.log)

    def source(self, config: PipelineConfig, actor_id: str, sender_index: int, partitions: list[int],
               limits: dict[int, int | None], clock: tuple[float, int], aggregates: list[Any],
               owner_of_group: list[int] | None) -> Any:  # fmt: skip
        downstream = InProcessDownstream([a.actor for a in aggregates]) if owner_of_group is not None else None
        actor = SourceActor(config, actor_id, sender_index, partitions, limits, *clock, downstream, owner_of_group)
        return InProcessSource(actor, actor_id, self.log)

    def kill(self, handle: Any) -> None:
        self.killed.append(handle.actor_id)


def orders(tmp_path: Path, aggregate_actors: int) -> PipelineConfig:
    return orders_pipeline(
        runtime__max_events=EVENTS,
        runtime__duration_s=None,
        runtime__aggregate_actors=aggregate_actors,
        source__rate_per_s=None,
        source__start_time_ms=START_TIME_MS,
        tracing__enabled=False,
        dead_letter__path=str(tmp_path / "dead"),
        sinks=[
            {"type": "console", "top": 3, "sort_by": "revenue_cents"},
            {"type": "jsonl", "path": str(tmp_path / "out")},
        ],
    )


def test_an_in_process_run_equals_the_reference_and_commits_after_the_aggregates(tmp_path: Path) -> None:
    config = orders(tmp_path, aggregate_actors=3)
    actors = InProcessActors()

    summary = asyncio.run(Supervisor(config, "t1", actors).run())

    expected, invalid = reference_orders(
        config.source,  # type: ignore[arg-type]
        partition_limits(8, EVENTS),
        START_TIME_MS,
        10_000,
    )
    rows = read_jsonl_dir(tmp_path / "out")
    actual = {(r["customer_id"], r["window_start_ms"]): (r["orders"], r["revenue_cents"]) for r in rows}
    assert actual == {key: (value["orders"], value["revenue_cents"]) for key, value in expected.items()}
    assert summary.progress.events_in == EVENTS
    assert summary.progress.dead_lettered == invalid
    assert summary.preview[0]["revenue_cents"] == max(value["revenue_cents"] for value in expected.values())
    closes = [i for i, entry in enumerate(actors.log) if entry.startswith("close")]
    commits = [i for i, entry in enumerate(actors.log) if entry.startswith("commit")]
    assert len(closes) == 3 and len(commits) == 2
    assert max(closes) < min(commits), "offsets are committed only after every aggregate emitted and flushed"


def test_stop_finishes_cleanly_and_reports_it(tmp_path: Path) -> None:
    config = orders(tmp_path, aggregate_actors=1).model_copy(update={"runtime": orders(tmp_path, 1).runtime.model_copy(
        update={"max_events": None})})  # fmt: skip
    supervisor = Supervisor(config, "t2", InProcessActors())

    async def run_then_stop() -> Any:
        run = asyncio.ensure_future(supervisor.run())
        await asyncio.sleep(0.5)
        await supervisor.stop()
        return await asyncio.wait_for(run, timeout=30)

    summary = asyncio.run(run_then_stop())

    assert summary.stopped_early
    assert summary.progress.events_in > 0
    assert summary.progress.windows_emitted > 0, "open windows are emitted at stop, not lost"
