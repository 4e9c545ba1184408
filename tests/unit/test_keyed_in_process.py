"""Upsert and dedup pipelines run end to end through the real Supervisor and actors, in this process (no Ray),
with the fakes of test_supervisor_in_process.py; results are checked against plain-Python references over the
generator's events, also under exactly-once with an aggregate killed at a barrier (state restored by key group).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

from cluster.control.handles import NextOwners
from cluster.control.supervisor import Supervisor
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, load_config
from pipelines.io.generator import generate_events
from pipelines.stages.topology import partition_limits
from pipelines.state.checkpoint_store import AggregateSnapshot, CheckpointStore
from pipelines.testing import FaultPlan
from tests.reference import KNOWN_TYPES, read_jsonl_dir
from tests.unit.test_supervisor_in_process import InProcessActors, InProcessAggregate

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
START_TIME_MS = 1_767_225_600_000
EVENTS = 20_000
Event = dict[str, Any]


class RestoreRecordingActors(InProcessActors):
    """InProcessActors that also record how many state rows each aggregate loaded at restore."""

    def __init__(self, die_at_checkpoint: int | None = None) -> None:
        super().__init__(die_at_checkpoint)
        self.restored_rows: list[int] = []

    def aggregate(self, config: PipelineConfig, actor_id: str, key_groups: list[int], senders: int,
                  slot: str, faults: FaultPlan = (), stage: int = 0,
                  next_stage: NextOwners | None = None) -> Any:  # fmt: skip
        inner: InProcessAggregate = super().aggregate(config, actor_id, key_groups, senders, slot, faults, stage,
                                                      next_stage)  # fmt: skip
        recorded = self.restored_rows

        class Recording(InProcessAggregate):
            async def restore(self, snapshots: list[AggregateSnapshot]) -> int:
                rows = await super().restore(snapshots)
                recorded.append(rows)
                return rows

        return Recording(inner.actor, actor_id, self, stage)


def _valid(event: Any) -> bool:
    """The schema of both example configs: required ids and time, a known type, no negative amount."""
    if not isinstance(event, dict) or any(event.get(f) is None for f in ("event_id", "event_type", "event_time_ms")):
        return False
    amount = event.get("amount_cents")
    return event["event_type"] in KNOWN_TYPES and (amount is None or amount >= 0)


def _generated(source: GeneratorSourceConfig, partition: int, count: int) -> list[bytes]:
    payloads: list[bytes] = generate_events(source, partition, 0, count, START_TIME_MS).payloads.to_pylist()
    return payloads


def _decoded(payload: bytes) -> Event | None:
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    return event if _valid(event) else None


def _overrides(tmp_path: Path, **more: Any) -> dict[str, Any]:
    return {
        "runtime.max_events": EVENTS,
        "runtime.duration_s": None,
        "runtime.aggregate_actors": 2,
        "source.start_time_ms": START_TIME_MS,
        "tracing.enabled": False,
        "checkpoint.uri": str(tmp_path / "checkpoints"),
        "dead_letter.path": str(tmp_path / "dead"),
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
        **more,
    }


def _state_rows(config: PipelineConfig) -> list[Event]:
    """The keyed state of the last (final) checkpoint, every key group."""
    assert config.checkpoint is not None
    store = CheckpointStore(config.checkpoint.uri, config.name)
    checkpoint = store.latest()
    assert checkpoint is not None and checkpoint.finished
    states = [store.read_table(a.state).to_pylist() for a in checkpoint.aggregates if a.state is not None]
    return [row for rows in states for row in rows]


# --- upsert: current inventory per SKU ------------------------------------------------------------------------


def _reference_inventory(source: GeneratorSourceConfig) -> tuple[dict[str, tuple[int, set[int]]], set[tuple[Any, ...]]]:
    """Per SKU: the newest event time and the quantities carried at it (equal times from different partitions
    may arrive in either order: any of them may win); and every valid (sku, event_id, quantity) version."""
    newest: dict[str, tuple[int, set[int]]] = {}
    versions: set[tuple[Any, ...]] = set()
    for partition, limit in partition_limits(source.partitions, EVENTS).items():
        assert limit is not None
        for payload in _generated(source, partition, limit):
            event = _decoded(payload)
            if event is None or event["event_type"] != "InventoryUpdated":
                continue
            sku, time_ms, quantity = event["sku"], event["event_time_ms"], event["quantity"]
            versions.add((sku, event["event_id"], quantity))
            best = newest.get(sku)
            if best is None or time_ms > best[0]:
                newest[sku] = (time_ms, {quantity})
            elif time_ms == best[0]:
                best[1].add(quantity)
    return newest, versions


def _latest(rows: list[Event]) -> dict[str, Event]:
    """The newest row per SKU by event time (what a reader of the changelog keeps)."""
    latest: dict[str, Event] = {}
    for row in rows:
        seen = latest.get(row["sku"])
        if seen is None or row["event_time_ms"] >= seen["event_time_ms"]:
            latest[row["sku"]] = row
    return latest


def _assert_inventory_is_the_reference(config: PipelineConfig) -> None:
    assert isinstance(config.source, GeneratorSourceConfig)
    newest, versions = _reference_inventory(config.source)
    changelog = read_jsonl_dir(Path(config.sinks[0].path))  # type: ignore[union-attr]
    assert {(r["sku"], r["event_id"], r["quantity"]) for r in changelog} <= versions, "only real versions"
    ids = [row["event_id"] for row in changelog]
    assert len(ids) == len(set(ids)), "each version is applied (and emitted) at most once"
    for table in (_latest(changelog), _latest(_state_rows(config))):
        assert set(table) == set(newest)
        for sku, row in table.items():
            time_ms, quantities = newest[sku]
            assert row["event_time_ms"] == time_ms and row["quantity"] in quantities, (sku, row, newest[sku])


def _inventory(tmp_path: Path, **more: Any) -> PipelineConfig:
    return load_config(CONFIGS_DIR / "inventory_upsert.yaml", _overrides(tmp_path, **more))


def test_the_upsert_table_holds_the_newest_inventory_of_every_sku(tmp_path: Path) -> None:
    config = _inventory(tmp_path, **{"source.rate_per_s": None})

    summary = asyncio.run(Supervisor(config, "u1", InProcessActors()).run())

    _assert_inventory_is_the_reference(config)
    assert summary.progress.events_in == EVENTS
    assert summary.progress.windows_emitted == len(read_jsonl_dir(tmp_path / "out")), "changelog rows counted"


def test_an_upsert_aggregate_killed_at_a_barrier_restores_its_table_exactly_once(tmp_path: Path) -> None:
    # paced at 20,000 events/s: the run lasts about a second, so it holds several 100 ms epochs
    config = _inventory(tmp_path, **{"source.rate_per_s": 20_000, "delivery": "exactly_once",
                                     "checkpoint.interval_ms": 100, "runtime.batch_size": 256})  # fmt: skip
    actors = RestoreRecordingActors(die_at_checkpoint=5)  # the barrier of the third epoch, on one of two aggregates

    summary = asyncio.run(Supervisor(config, "u2", actors).run())

    assert len(summary.recoveries_s) == 1 and actors.killed
    assert len(actors.restored_rows) == 2 and all(rows > 0 for rows in actors.restored_rows), actors.restored_rows
    _assert_inventory_is_the_reference(config)


# --- dedup: an idempotent consumer over redelivered events ------------------------------------------------------

PARTITIONS = 4
PER_PARTITION = 5_000


def _write_redelivered_input(directory: Path) -> list[bytes]:
    """JSONL files, one per partition, holding the generator's events plus redeliveries, as an at-least-once
    producer that retried would write them: every third event again 500 events later in the next partition,
    every seventh again 50 events later in its own. Returns every line written."""
    source = GeneratorSourceConfig(partitions=PARTITIONS, rate_per_s=None, event_time_rate_per_s=2_000)
    events = [_generated(source, partition, PER_PARTITION) for partition in range(PARTITIONS)]
    directory.mkdir()
    written: list[bytes] = []
    for partition in range(PARTITIONS):
        previous = events[(partition - 1) % PARTITIONS]
        placed = [(float(i), line) for i, line in enumerate(events[partition])]
        placed += [(i + 500.5, line) for i, line in enumerate(previous) if i % 3 == 0]
        placed += [(i + 50.5, line) for i, line in enumerate(events[partition]) if i % 7 == 0]
        lines = [line for _, line in sorted(placed, key=lambda item: item[0])]
        (directory / f"p{partition}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        written += lines
    return written


def _orders_dedup(tmp_path: Path, **more: Any) -> PipelineConfig:
    source = {"type": "file", "paths": [str(tmp_path / "in" / "p*.jsonl")]}
    return load_config(CONFIGS_DIR / "orders_dedup.yaml", _overrides(tmp_path, **{
        "source": source, "runtime.max_events": None, "runtime.batch_size": 64, **more}))  # fmt: skip


def _assert_each_order_passed_once(config: PipelineConfig, lines: list[bytes]) -> int:
    """Check the output against the input; return the redelivered copies of valid orders (the duplicates)."""
    orders = Counter(e["event_id"] for e in map(_decoded, lines) if e is not None and e["event_type"] == "OrderCreated")
    passed = Counter(row["event_id"] for row in read_jsonl_dir(Path(config.sinks[0].path)))  # type: ignore[union-attr]
    assert passed == Counter(set(orders)), "every order exactly once, however often it was delivered"
    assert {row["event_id"] for row in _state_rows(config)} == set(orders), "every id is still remembered"
    return orders.total() - len(orders)


def test_dedup_passes_each_event_id_once(tmp_path: Path) -> None:
    lines = _write_redelivered_input(tmp_path / "in")
    config = _orders_dedup(tmp_path)

    summary = asyncio.run(Supervisor(config, "d1", InProcessActors()).run())

    duplicates = _assert_each_order_passed_once(config, lines)
    assert duplicates > 1_000
    assert summary.progress.dropped_intended == duplicates, "duplicates are counted, not dead-lettered"
    assert summary.progress.late_events == 0


def test_a_dedup_aggregate_killed_at_a_barrier_still_passes_each_event_id_once(tmp_path: Path) -> None:
    lines = _write_redelivered_input(tmp_path / "in")
    config = _orders_dedup(tmp_path, **{"delivery": "exactly_once", "checkpoint.interval_ms": 100})
    actors = RestoreRecordingActors(die_at_checkpoint=3)  # the barrier of the second epoch

    summary = asyncio.run(Supervisor(config, "d2", actors).run())

    assert len(summary.recoveries_s) == 1 and actors.killed
    # the ids seen before the restored barrier come back by key group: a redelivery after it is still dropped
    assert len(actors.restored_rows) == 2 and all(rows > 0 for rows in actors.restored_rows), actors.restored_rows
    _assert_each_order_passed_once(config, lines)
    dead = Counter((row["topic"], row["offset"]) for row in read_jsonl_dir(tmp_path / "dead"))
    assert dead and set(dead.values()) == {1}, "each invalid event is dead-lettered exactly once"
