"""``eventray es``: event-sourced aggregates read back from what their pipeline stored.

- ``replay CONFIG --key ID [--to-version N | --as-of TIME] [--steps]``: one aggregate rebuilt from the nearest
  snapshot and its events;
- ``state CONFIG --as-of TIME --out FILE``: every aggregate's state at a time, as one Parquet file;
- ``check CONFIG``: the stored events and replies against a sequential recomputation of the commands the run
  took (:mod:`pipelines.verify.event_store_check`): lost, duplicated, wrong, gaps, out of order;
- ``diff CONFIG --old mod:OrderV1 --new mod:Order``: a pre-deploy check: the stored events replayed through two
  versions of the aggregate, and the commands decided again by both; per aggregate, the first version where
  their states or their events diverge.

Each takes ``--json`` for scripts; exit 0 when all is well, 1 when the answer is a finding, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from cluster.commands.event_store_io import Stored, event_sourced_stage, read_commands, read_stored
from cluster.commands.run_config import parse_set
from pipelines.config.pipeline import PipelineConfig, load_config
from pipelines.config.secrets import resolve_secrets
from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError
from pipelines.state.event_sourced import Aggregate, load_aggregate
from pipelines.state.replay import Replayed, replay_history
from pipelines.verify.event_store_check import (
    CommandReply,
    StoredEvent,
    check_event_store,
    recompute_event_store,
)

__all__ = ["add_event_store_commands", "parse_time_ms"]


def add_event_store_commands(commands: Any) -> None:
    event_store = commands.add_parser("es", help="event-sourced aggregates: replay, state as of a time, check, diff")
    actions = event_store.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = _action(actions, "replay", "rebuild one aggregate from its events, to a version or a time", _replay)
    replay.add_argument("--key", required=True, help="the aggregate id (the stage's key column)")
    replay.add_argument("--to-version", type=int, default=None, metavar="N", help="stop after version N")
    replay.add_argument(
        "--as-of", default=None, metavar="TIME", help="stop at events after TIME (epoch ms or ISO 8601)"
    )
    replay.add_argument("--steps", action="store_true", help="print the state after each event")
    replay.add_argument("--no-snapshots", action="store_true", help="replay from the first event, not a snapshot")
    state = _action(actions, "state", "write every aggregate's state at a time as one Parquet file", _state)
    state.add_argument("--as-of", required=True, metavar="TIME", help="epoch ms, or ISO 8601 with a zone")
    state.add_argument("--out", required=True, type=Path, help="the Parquet file to write")
    _action(actions, "check", "check stored events and replies against the commands decided again in order", _check)
    diff = _action(actions, "diff", "replay stored events and commands through two aggregate versions", _diff)
    diff.add_argument("--old", required=True, metavar="MODULE:CLASS", help="the aggregate running now")
    diff.add_argument("--new", required=True, metavar="MODULE:CLASS", help="the aggregate about to be deployed")
    diff.add_argument("--events-only", action="store_true", help="compare replayed states only, not decisions")


def _action(actions: Any, name: str, summary: str, handler: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=summary, description=summary)
    parser.add_argument("config", help="the pipeline config with the event_sourced stage")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a config field")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    parser.set_defaults(func=handler)
    return parser


def _load(args: argparse.Namespace) -> tuple[PipelineConfig, EventSourcedConfig]:
    config = load_config(args.config, parse_set(args.set))
    stage = event_sourced_stage(config)  # before secrets: a config without the stage needs none
    return resolve_secrets(config, os.environ), stage


def parse_time_ms(text: str, flag: str = "--as-of") -> int:
    """Epoch milliseconds, or an ISO 8601 time with a zone (``2026-01-01T00:00:00Z``)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment: datetime | None = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(
            f"{flag} {text!r}: give epoch milliseconds or an ISO 8601 time with a zone, e.g. 2026-01-01T12:00:00Z"
        )
    return int(moment.timestamp() * 1000)


# --- replay ---------------------------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    if args.to_version is not None and args.to_version < 0:
        raise ConfigError(f"--to-version {args.to_version}: versions start at 1 (0: the initial state)")
    config, stage = _load(args)
    as_of_ms = None if args.as_of is None else parse_time_ms(args.as_of)
    stored = asyncio.run(read_stored(config, stage, args.key))
    snapshots = [] if args.no_snapshots else stored.snapshots
    aggregate = load_aggregate(stage.aggregate)
    try:
        replayed = replay_history(aggregate, stored.events, args.to_version, as_of_ms, args.steps, snapshots)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - user code (evolve, an upcaster): say so, exit as a finding
        print(f"eventray: {stage.aggregate} cannot replay {args.key}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if not stored.events:
        replayed = replace(replayed, problems=(*replayed.problems, f"no stored events of aggregate {args.key!r}"))
    if args.json:
        print(_json(_replayed_dict(args.key, replayed, len(stored.events))))
    else:
        _print_replayed(Console(), args.key, replayed, len(stored.events))
    return 1 if replayed.problems else 0


def _json(value: Any) -> str:
    """Valid JSON for scripts (a NaN is null, anything else unknown its text)."""
    return msgspec.json.encode(value, enc_hook=str).decode()


def _replayed_dict(key: str, replayed: Replayed, stored: int) -> dict[str, Any]:
    return {
        "aggregate_id": key,
        "version": replayed.version,
        "state": replayed.state,
        "from_snapshot": replayed.from_snapshot,
        "events_stored": stored,
        "steps": [step.__dict__ for step in replayed.steps],
        "problems": list(replayed.problems),
    }


def _print_replayed(console: Console, key: str, replayed: Replayed, stored: int) -> None:
    if replayed.steps:
        table = Table(title=f"{key}: state after each event")
        for column in ("version", "event", "time (UTC)", "state after"):
            table.add_column(column)
        for step in replayed.steps:
            data = json.dumps(step.data, default=str)
            table.add_row(
                str(step.version), f"{step.event_type} {data}", _iso(step.time_ms), json.dumps(step.state, default=str)
            )
        console.print(table)
    start = "the first event" if replayed.from_snapshot is None else f"the snapshot at version {replayed.from_snapshot}"
    console.print(f"[bold]{key}[/] at version {replayed.version} ({stored} event(s) stored; replayed from {start}):")
    console.print(json.dumps(replayed.state, default=str, indent=2), markup=False)
    for problem in replayed.problems:
        console.print(f"[yellow]warning:[/] {problem}")


def _iso(time_ms: int | None) -> str:
    if time_ms is None:
        return "-"
    return datetime.fromtimestamp(time_ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


# --- state as of a time ---------------------------------------------------------------------------------------


def _state(args: argparse.Namespace) -> int:
    config, stage = _load(args)
    as_of_ms = parse_time_ms(args.as_of)
    aggregate = load_aggregate(stage.aggregate)
    stored = asyncio.run(read_stored(config, stage))
    events, snapshots = _by_aggregate(stored.events), _by_aggregate(stored.snapshots)
    keys, versions, states, problems = [], [], [], 0
    failed: list[str] = []
    for key in sorted(events, key=str):
        try:
            replayed = replay_history(aggregate, events[key], as_of_ms=as_of_ms, snapshots=snapshots.get(key, []))
        except Exception as error:  # noqa: BLE001 - one aggregate user code cannot replay does not stop the rest
            failed.append(f"{key}: {type(error).__name__}: {error}")
            continue
        problems += bool(replayed.problems)
        if replayed.version:
            keys.append(key)
            versions.append(replayed.version)
            states.append(_json(replayed.state))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {stage.key: keys, "version": pa.array(versions, pa.int64()), "state": pa.array(states, pa.string())}
    )
    pq.write_table(table.replace_schema_metadata({b"eventray.as_of_ms": str(as_of_ms).encode()}), args.out)
    summary = {"aggregates": len(keys), "as_of_ms": as_of_ms, "out": str(args.out), "with_problems": problems,
               "failed": len(failed), "failed_examples": failed[:10]}  # fmt: skip
    if args.json:
        print(_json(summary))
    else:
        console = Console()
        console.print(f"{len(keys):,} aggregate(s) as of {_iso(as_of_ms)} written to {args.out}")
        if problems:
            console.print(f"{problems:,} with a gap or a repeat in their history (see es replay)")
        for line in failed[:10]:
            console.print(f"cannot replay {line}", markup=False)
    return 1 if problems or failed else 0


def _by_aggregate(rows: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["aggregate_id"]].append(row)
    return grouped


# --- check ----------------------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    config, stage = _load(args)
    aggregate = load_aggregate(stage.aggregate)
    commands = asyncio.run(read_commands(config))
    stored = asyncio.run(read_stored(config, stage))
    states_after: dict[tuple[Any, int], Any] = {}
    expected = recompute_event_store(aggregate, commands, stage, states_after)
    events, replies = _as_checked(stored)
    snapshots = [StoredEvent.of_row(row, event_type="snapshot") for row in stored.snapshots]
    report = check_event_store(*expected, events, replies, ordered=stored.in_partition_order, snapshots=snapshots,
                               states_after=states_after)  # fmt: skip
    failures = report.failures()
    if args.json:
        print(_json({**{k: v for k, v in report.__dict__.items() if isinstance(v, int)}, "failures": failures}))
    else:
        console = Console()
        console.print(
            f"{report.expected_replies:,} command(s) taken; {report.events:,} of {report.expected_events:,} "
            f"event(s) and {report.replies:,} reply(ies) stored, over {report.aggregates:,} aggregate(s)"
        )
        for line in failures or ["the store equals the sequential recomputation: 0 lost, 0 duplicated, 0 wrong"]:
            console.print(line, markup=False)
    return 1 if failures else 0


def _as_checked(stored: Stored) -> tuple[list[StoredEvent], list[CommandReply]]:
    return [StoredEvent.of_row(row) for row in stored.events], [CommandReply.of_row(row) for row in stored.replies]


# --- diff -----------------------------------------------------------------------------------------------------


def _diff(args: argparse.Namespace) -> int:
    config, stage = _load(args)
    old, new = load_aggregate(args.old), load_aggregate(args.new)
    stored = asyncio.run(read_stored(config, stage))
    diverged: dict[Any, dict[str, Any]] = defaultdict(dict)
    for key, events in _by_aggregate(stored.events).items():
        at = _first_divergent_state(old, new, events)
        if at is not None:
            diverged[key]["state_diverges_at"] = at
    if not args.events_only:
        commands = asyncio.run(read_commands(config))
        for key, at in _first_divergent_decisions(old, new, commands, stage).items():
            diverged[key]["events_diverge_at"] = at
    report = {
        "aggregates": len({row["aggregate_id"] for row in stored.events}),
        "diverged": len(diverged),
        "examples": [
            {"aggregate_id": key, **found} for key, found in sorted(diverged.items(), key=lambda kv: str(kv[0]))[:20]
        ],
    }
    if args.json:
        print(_json(report))
    else:
        _print_diff(Console(), args, report)
    return 1 if diverged else 0


def _first_divergent_state(old: Aggregate, new: Aggregate, events: list[dict[str, Any]]) -> Any:
    """The first version whose state differs between ``old`` and ``new`` (or where one of them fails)."""
    old_steps = _steps_or_error(old, events)
    new_steps = _steps_or_error(new, events)
    if isinstance(old_steps, str) or isinstance(new_steps, str):
        return old_steps if isinstance(old_steps, str) else new_steps
    for before, after in zip(old_steps, new_steps, strict=True):
        if before.state != after.state:
            return {"version": before.version, "old": before.state, "new": after.state}
    return None


def _steps_or_error(aggregate: Aggregate, events: list[dict[str, Any]]) -> Any:
    try:
        return replay_history(aggregate, events, keep_steps=True).steps
    except Exception as error:  # noqa: BLE001 - user code: a version that cannot replay is a divergence
        return f"{type(aggregate).__qualname__} cannot replay: {type(error).__name__}: {error}"


def _first_divergent_decisions(
    old: Aggregate, new: Aggregate, commands: list[dict[str, Any]], stage: EventSourcedConfig
) -> dict[Any, dict[str, Any]]:
    """Per aggregate whose commands, decided in order by each version, give other events: the first one."""
    before, _ = recompute_event_store(old, commands, stage)
    after, _ = recompute_event_store(new, commands, stage)
    old_events, new_events = _by_key(before), _by_key(after)
    found: dict[Any, dict[str, Any]] = {}
    for key in old_events.keys() | new_events.keys():
        ours, theirs = old_events.get(key, []), new_events.get(key, [])
        for version in range(1, max(len(ours), len(theirs)) + 1):
            mine = ours[version - 1] if version <= len(ours) else None
            yours = theirs[version - 1] if version <= len(theirs) else None
            if mine != yours:
                found[key] = {"version": version, "old": mine, "new": yours}
                break
    return found


def _by_key(events: list[StoredEvent]) -> dict[Any, list[tuple[str, Any, str]]]:
    grouped: dict[Any, list[tuple[str, Any, str]]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.version):
        grouped[event.aggregate_id].append((event.event_type, event.data, event.command_id))
    return grouped


def _print_diff(console: Console, args: argparse.Namespace, report: dict[str, Any]) -> None:
    console.print(
        f"{report['aggregates']:,} aggregate(s) replayed through {args.old} and {args.new}: "
        f"{report['diverged']:,} diverge"
    )
    for example in report["examples"]:
        for what in ("state_diverges_at", "events_diverge_at"):
            if what in example:
                console.print(
                    f"  {example['aggregate_id']}: {what.replace('_', ' ')} {json.dumps(example[what], default=str)}",
                    markup=False,
                )
