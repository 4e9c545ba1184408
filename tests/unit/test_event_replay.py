"""Replaying an event-sourced aggregate (pipelines/state/replay.py, upcasting.py, `eventray es replay`): to every
version it equals the live stage's state; from a snapshot it equals from scratch; a log mixing schema versions
replays as if written at the newest."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from cluster.cli import main
from pipelines.config.pipeline import parse_config
from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError
from pipelines.examples.accounts import Account
from pipelines.io.sinks import open_sink
from pipelines.stages.plan import compile_pipeline
from pipelines.state.event_sourced import EventSourced, load_aggregate
from pipelines.state.keyed_operator import StateFormatError
from pipelines.state.replay import replay_history
from pipelines.state.upcasting import check_upcasters, upcast_events
from pipelines.testing import run_stages
from pipelines.verify.event_store_check import CommandReply, StoredEvent, check_event_store, recompute_event_store
from tests.unit.test_event_sourced import ACCOUNT, ACCOUNTS_YAML, START_MS, accounts_config, workload

Row = dict[str, Any]


def live_run(snapshot_every: int | None = None) -> tuple[list[Row], dict[tuple[str, int], Any]]:
    """The stage's results over a workload, one command at a time, and each aggregate's state after each version."""
    op = EventSourced(EventSourcedConfig(aggregate=ACCOUNT, snapshot_every=snapshot_every), Account())
    results: list[Row] = []
    states: dict[tuple[str, int], Any] = {}
    for row in workload(count=3_000, seed=4, accounts=12):
        output = op.add(pa.RecordBatch.from_pylist([row])).output
        results += [] if output is None else output.to_pylist()
        states[(row["aggregate_id"], op.version_of(row["aggregate_id"]))] = op.state_of(row["aggregate_id"])
    return results, states


def of(results: list[Row], key: str, topic: str) -> list[Row]:
    return [row for row in results if row["aggregate_id"] == key and row["topic"] == topic]


def test_replay_to_every_version_equals_the_live_state_with_or_without_snapshots() -> None:
    results, states = live_run(snapshot_every=10)
    replays = 0
    for key in sorted({key for key, _ in states}):
        events, snapshots = of(results, key, "events"), of(results, key, "snapshots")
        assert [row["version"] for row in snapshots] == [v for v in range(10, len(events) + 1, 10)]
        for version in range(len(events) + 1):
            scratch = replay_history(Account(), list(reversed(events)), to_version=version)
            snapshot = replay_history(Account(), events, to_version=version, snapshots=snapshots)
            expected = states[(key, version)] if version else Account().initial()
            assert scratch.state == snapshot.state == expected
            assert scratch.problems == snapshot.problems == () and scratch.from_snapshot is None
            assert snapshot.from_snapshot == (version // 10 * 10 or None)
            replays += 1
    assert replays > 1_000


def test_steps_as_of_gaps_and_repeats() -> None:
    results, states = live_run()
    key = results[0]["aggregate_id"]
    events = of(results, key, "events")
    steps = replay_history(Account(), events, keep_steps=True).steps
    assert [step.version for step in steps] == list(range(1, len(events) + 1))
    assert steps[-1].state == states[(key, len(events))]
    as_of = replay_history(Account(), events, as_of_ms=events[4]["_timestamp"])
    assert as_of.version == 5 and as_of.state == states[(key, 5)]
    gap = replay_history(Account(), events[:6] + events[7:] + events[:2])
    assert gap.version == 6 and gap.problems == (
        "2 event(s) are stored more than once (each version is replayed once)",
        "version 7 is missing from the store: the replay stops at 6",
    )
    beyond = replay_history(Account(), events, to_version=len(events) + 5)
    assert beyond.problems == (
        f"the aggregate has {len(events)} event(s): version {len(events) + 5} does not exist yet",
    )


def amount_in_cents(table: pa.Table) -> pa.Table:
    """v1 -> v2: ``amount`` (whole units) became ``amount_cents``."""
    cents = pc.multiply(table.column("amount"), 100)
    return table.drop_columns(["amount"]).append_column("amount_cents", cents)


def with_currency(table: pa.Table) -> pa.Table:
    """v2 -> v3: a currency, EUR for every deposit before there were others; Deposited became FundsDeposited."""
    renamed = table.set_column(table.schema.get_field_index("event_type"), "event_type",
                               pa.array(["FundsDeposited"] * table.num_rows))  # fmt: skip
    return renamed.append_column("currency", pa.array(["EUR"] * table.num_rows))


class VersionedAccount:
    """An account whose deposits changed twice; its state changed once (v1: a bare balance)."""

    schema_versions: ClassVar[dict[str, int]] = {"Deposited": 3, "FundsDeposited": 3}  # renamed at v3
    upcasters: ClassVar[dict[tuple[str, int], Any]] = {
        ("Deposited", 1): amount_in_cents,
        ("Deposited", 2): with_currency,
    }
    state_version = 2
    state_upcasters: ClassVar[dict[int, Any]] = {1: lambda balance: {"balance_cents": balance, "currencies": ["EUR"]}}

    def initial(self) -> Row:
        return {"balance_cents": 0, "currencies": []}

    def decide(self, state: Row, command: Row, time_ms: int) -> list[Row]:
        return [{"event_type": "FundsDeposited", "amount_cents": command["amount_cents"], "currency": "EUR"}]

    def evolve(self, state: Row, event: Row) -> Row:
        assert event["event_type"] == "FundsDeposited", "every event reaches evolve at v3"
        currencies = sorted({*state["currencies"], event["currency"]})
        return {"balance_cents": state["balance_cents"] + event["amount_cents"], "currencies": currencies}


def deposit(version: int, schema_version: int, cents: int) -> Row:
    data = {1: {"amount": cents // 100}, 2: {"amount_cents": cents}, 3: {"amount_cents": cents, "currency": "EUR"}}
    event_type = "FundsDeposited" if schema_version == 3 else "Deposited"
    return {"version": version, "event_type": event_type, "schema_version": schema_version,
            "data": json.dumps(data[schema_version]), "_timestamp": START_MS + version}  # fmt: skip


def test_a_log_mixing_v1_v2_and_v3_events_replays_as_the_all_v3_log() -> None:
    amounts = [100 * (n % 7 + 1) for n in range(60)]
    mixed = [deposit(v, (v % 3) + 1, cents) for v, cents in enumerate(amounts, start=1)]
    all_v3 = [deposit(v, 3, cents) for v, cents in enumerate(amounts, start=1)]
    mixed_state = replay_history(VersionedAccount(), mixed)
    assert mixed_state == replay_history(VersionedAccount(), all_v3)
    assert mixed_state.state == {"balance_cents": sum(amounts), "currencies": ["EUR"]} and mixed_state.version == 60
    upcast = upcast_events(VersionedAccount(), mixed)
    assert [row["version"] for row in upcast] == list(range(1, 61)), "rows keep their order"
    assert {(row["event_type"], row["schema_version"]) for row in upcast} == {("FundsDeposited", 3)}
    old_snapshot = {"version": 30, "data": json.dumps(sum(amounts[:30])), "schema_version": 1}
    from_snapshot = replay_history(VersionedAccount(), mixed, snapshots=[old_snapshot])
    assert from_snapshot.from_snapshot == 30 and from_snapshot.state == mixed_state.state


class MissingStep(VersionedAccount):
    upcasters: ClassVar[dict[tuple[str, int], Any]] = {("Deposited", 2): with_currency}


class WrongRows(VersionedAccount):
    upcasters: ClassVar[dict[tuple[str, int], Any]] = {("Deposited", 1): lambda table: table.slice(1),
                                                       ("Deposited", 2): with_currency}  # fmt: skip


def test_upcasters_that_cannot_run_are_refused_naming_the_step() -> None:
    with pytest.raises(ConfigError, match=r"lacks upcasters\[\('Deposited', 1\)\]"):
        check_upcasters(MissingStep())
    with pytest.raises(ConfigError, match=r"lacks upcasters\[\('Deposited', 1\)\]"):
        load_aggregate("tests.unit.test_event_replay:MissingStep")
    with pytest.raises(ConfigError, match=r"must return a table of as many rows \(2\)"):
        upcast_events(WrongRows(), [deposit(1, 1, 100), deposit(2, 1, 200)])
    with pytest.raises(ConfigError, match=r"schema_versions\['Deposited'\] >= 4"):
        check_upcasters(VersionedAccount(), {("Deposited", 4)})


def test_eventray_es_replay_reads_the_stored_output_and_answers_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, states = live_run(snapshot_every=4)
    out = tmp_path / "results"
    out.mkdir()
    (out / "part-0.jsonl").write_bytes(b"".join(msgspec.json.encode(row) + b"\n" for row in results))
    data: dict[str, Any] = yaml.safe_load(ACCOUNTS_YAML.read_text(encoding="utf-8"))
    data["keyed"].update(events_topic="events", replies_topic="replies", snapshots_topic="snapshots", snapshot_every=4)
    data["sinks"] = [{"type": "jsonl", "path": str(out)}]
    config = tmp_path / "accounts.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    key = results[0]["aggregate_id"]
    versions = len(of(results, key, "events"))

    assert main(["es", "replay", str(config), "--key", key, "--to-version", "9", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == 9 and answer["state"] == states[(key, 9)] and answer["from_snapshot"] == 8
    assert main(["es", "replay", str(config), "--key", key, "--steps", "--no-snapshots"]) == 0
    printed = capsys.readouterr().out
    assert f"at version {versions} ({versions} event(s) stored; replayed from the first event)" in printed
    assert main(["es", "replay", str(config), "--key", key, "--to-version", str(versions + 1)]) == 1
    assert "does not exist yet" in capsys.readouterr().out
    assert main(["es", "replay", str(config), "--key", key, "--as-of", "noon"]) == 2
    assert "--as-of 'noon': give epoch milliseconds or an ISO 8601 time" in capsys.readouterr().err


def accounts_run_stored(tmp_path: Path, sink: dict[str, Any]) -> Path:
    """configs/accounts.yaml run in process, its results written where ``sink`` (JSONL or Parquet) keeps them;
    return a config file naming that sink."""
    data = accounts_config(tmp_path)
    data["keyed"]["snapshot_every"] = 5
    data["sinks"] = [sink]
    run = run_stages(parse_config(data), senders=2, owners=2, batch_size=100)
    table = pa.Table.from_pylist(run.results.rows())
    target = open_sink(parse_config(data).sinks[0], "0")
    target.write(table)
    target.close()
    config = tmp_path / "accounts.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return config


def test_es_check_finds_the_stored_run_equal_to_the_commands_decided_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = accounts_run_stored(tmp_path, {"type": "jsonl", "path": str(tmp_path / "results")})
    assert main(["es", "check", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failures"] == [] and report["expected_replies"] == report["replies"] == 1_200
    assert report["events"] == report["expected_events"] > 500
    stored = tmp_path / "results" / "part-0.jsonl"
    lines = stored.read_bytes().splitlines()
    first_event = next(i for i, line in enumerate(lines) if b'"topic":"account-events"' in line)
    stored.write_bytes(b"\n".join(lines[:first_event] + lines[first_event + 1 :] + [lines[3]]) + b"\n")
    assert main(["es", "check", str(config)]) == 1
    printed = capsys.readouterr().out
    assert "1 event(s) lost" in printed and "written more than once" in printed


class GenerousAccount(Account):
    """Lets a withdrawal overdraw by up to 100 cents: other decisions, the same evolve."""

    def decide(self, state: Row, command: Row, time_ms: int) -> Any:
        if command.get("command_type") == "Withdraw" and state["open"]:
            amount = command.get("amount_cents") or 0
            if state["balance_cents"] < amount <= state["balance_cents"] + 100:
                return [{"event_type": "Withdrawn", "amount_cents": amount, "at_ms": time_ms}]
        return super().decide(state, command, time_ms)


class DoubleOpenAccount(Account):
    """Evolves an Opened account with a 1-cent welcome bonus: the same decisions, another state."""

    def evolve(self, state: Row, event: Row) -> Row:
        evolved = super().evolve(state, event)
        return (
            {**evolved, "balance_cents": evolved["balance_cents"] + 1} if event["event_type"] == "Opened" else evolved
        )


def test_es_diff_reports_where_states_or_decisions_of_two_versions_diverge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = accounts_run_stored(tmp_path, {"type": "jsonl", "path": str(tmp_path / "results")})
    same = ["es", "diff", str(config), "--old", ACCOUNT, "--new", "pipelines.examples.accounts:Account", "--json"]
    assert main(same) == 0 and json.loads(capsys.readouterr().out)["diverged"] == 0
    generous = [*same[:6], "tests.unit.test_event_replay:GenerousAccount", "--json"]
    assert main(generous) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["diverged"] > 0
    assert all("events_diverge_at" in e and "state_diverges_at" not in e for e in report["examples"])
    bonus = [*same[:6], "tests.unit.test_event_replay:DoubleOpenAccount", "--events-only", "--json"]
    assert main(bonus) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["diverged"] == report["aggregates"] == 40
    assert {e["state_diverges_at"]["version"] for e in report["examples"]} == {1}


def test_es_state_writes_every_aggregate_as_of_a_time_from_a_bucketed_parquet_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "archive"
    config = accounts_run_stored(tmp_path, {"type": "parquet", "path": str(archive), "bucket_by": "aggregate_id",
                                            "buckets": 8})  # fmt: skip
    files = sorted(archive.glob("part-*.parquet"))
    assert len(files) == 8 and all(f.name.endswith(f"-b{b:04d}.parquet") for b, f in enumerate(files))
    for bucket, path in enumerate(files):
        keys = set(pq.read_table(path).column("aggregate_id").to_pylist())
        assert {zlib.crc32(key.encode()) % 8 for key in keys} == {bucket}
    rows = pa.concat_tables([pq.read_table(path) for path in files]).to_pylist()
    as_of = START_MS + 150_000
    out = tmp_path / "state.parquet"

    assert main(["es", "state", str(config), "--as-of", str(as_of), "--out", str(out)]) == 0
    written = {row["aggregate_id"]: row for row in pq.read_table(out).to_pylist()}
    for key, row in written.items():
        mine = [r for r in rows if r["aggregate_id"] == key and r["topic"] == "account-events"]
        latest = max((r for r in mine if r["_timestamp"] <= as_of), key=lambda r: r["version"])
        assert row["version"] == latest["version"]
        assert json.loads(row["state"]) == replay_history(Account(), mine, to_version=latest["version"]).state
    assert 0 < len(written) <= 40 and "written to" in capsys.readouterr().out
    key = next(iter(written))
    assert main(["es", "replay", str(config), "--key", key, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == max(
        r["version"] for r in rows if r["aggregate_id"] == key and r["topic"] == "account-events"
    )


def test_eventray_verify_points_an_event_sourced_pipeline_to_es_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(ACCOUNTS_YAML)]) == 2
    assert (
        "checked against its commands decided again in order by `eventray es check CONFIG`" in capsys.readouterr().err
    )


def test_a_projection_reading_stored_events_upcasts_them_with_op_upcast(tmp_path: Path) -> None:
    """A pipeline over a mixed v1/v2/v3 events file: `op: upcast` gives every row the v3 shape; a row whose data
    is not JSON is dead-lettered with the reason, the others go on."""
    stored = [
        {**deposit(v, (v % 3) + 1, 100 * v), "aggregate_id": f"acc-{v % 4}", "event_time_ms": START_MS + v}
        for v in range(1, 31)
    ]
    stored[6]["data"] = "{not json"  # a v2 event: upcasting reads its data
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(msgspec.json.encode(row) + b"\n" for row in stored))
    config = parse_config({
        "name": "projection",
        "source": {"type": "file", "paths": [str(events)]},
        "schema": {"fields": {"aggregate_id": "string", "version": "int64", "event_type": "string",
                              "schema_version": "int64", "data": "string", "event_time_ms": "int64"},
                   "event_time_field": "event_time_ms"},
        "operators": [{"op": "upcast", "aggregate": "tests.unit.test_event_replay:VersionedAccount"}],
        "keyed": {"type": "upsert", "key": "aggregate_id"},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
        "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
        "tracing": {"enabled": False},
    })  # fmt: skip
    run = run_stages(config, batch_size=7)
    rows = run.results.rows()
    assert {(row["event_type"], row["schema_version"]) for row in rows} == {("FundsDeposited", 3)}
    for row in rows:
        assert json.loads(row["data"]) == {"amount_cents": 100 * row["version"], "currency": "EUR"}
    (dead,) = run.dead_letters.rows()
    assert dead["offset"] == 6 and "upcast" in dead["reason"] and "not JSON" in dead["reason"]
    with pytest.raises(ConfigError, match=r"upcast needs the columns .* missing \['data'\]"):
        parse_and_compile = {**config.model_dump(mode="json", by_alias=True)}
        parse_and_compile["operators"] = [{"op": "select", "columns": ["aggregate_id", "version", "event_type",
                                                                       "schema_version", "_timestamp"]},
                                          parse_and_compile["operators"][0]]  # fmt: skip
        compile_pipeline(parse_config(parse_and_compile))


class Tally:
    """A state JSON cannot hold exactly (integer keys) and commands of several events (a tuple mid-command)."""

    def initial(self) -> Row:
        return {"counts": {}, "last": None}

    def decide(self, state: Row, command: Row, time_ms: int) -> list[Row]:
        return [{"event_type": "Counted", "n": command["amount_cents"] % 3}, {"event_type": "Marked", "at": time_ms}]

    def evolve(self, state: Row, event: Row) -> Row:
        if event["event_type"] == "Marked":
            return {**state, "last": (event["at"], len(state["counts"]))}  # a tuple: stored as a list
        counts = dict(state["counts"])
        counts[event["n"]] = counts.get(event["n"], 0) + 1  # integer keys
        return {**state, "counts": counts}


def test_states_json_cannot_hold_get_no_snapshot_and_every_path_agrees_after_multi_event_commands() -> None:
    op = EventSourced(EventSourcedConfig(aggregate="tests.unit.test_event_replay:Tally", snapshot_every=2), Tally())
    rows = [{**row, "_timestamp": row["issued_ms"]} for row in workload(count=400, seed=9, accounts=3)]
    results: list[Row] = []
    for row in rows:
        output = op.add(pa.RecordBatch.from_pylist([row])).output
        results += [] if output is None else output.to_pylist()
    assert not [row for row in results if row["topic"] == "snapshots"], "integer keys: JSON would change them"
    config = EventSourcedConfig(aggregate="tests.unit.test_event_replay:Tally")
    states_after: dict[tuple[Any, int], Any] = {}
    expected = recompute_event_store(Tally(), rows, config, states_after)
    for key in {row["aggregate_id"] for row in rows}:
        replayed = replay_history(Tally(), of(results, key, "events"))
        assert replayed.state == op.state_of(key) == states_after[(key, replayed.version)]
        assert isinstance(replayed.state["last"], list)
    stored = [StoredEvent.of_row(r) for r in results if r["topic"] == "events"]
    answered = [CommandReply.of_row(r) for r in results if r["topic"] == "replies"]
    assert check_event_store(*expected, stored, answered).failures() == []


def test_as_of_stops_before_a_snapshot_beyond_the_first_later_event() -> None:
    times = {2: 100, 3: 300, 4: 200}  # version -> command time: commands need not come in event-time order
    events: list[Row] = [{"version": 1, "event_type": "Opened", "schema_version": 1, "_timestamp": 50, "data": "{}"}]
    events += [
        {"version": v, "event_type": "Deposited", "schema_version": 1, "_timestamp": t,
         "data": json.dumps({"amount_cents": 10 * (v - 1), "at_ms": t})}
        for v, t in times.items()
    ]  # fmt: skip
    snapshot = {"version": 4, "_timestamp": 200, "schema_version": 1,
                "data": json.dumps({"open": True, "balance_cents": 60})}  # fmt: skip
    scratch = replay_history(Account(), events, as_of_ms=250)
    from_snapshot = replay_history(Account(), events, as_of_ms=250, snapshots=[snapshot])
    assert scratch.version == from_snapshot.version == 2 and from_snapshot.from_snapshot is None
    assert scratch.state == from_snapshot.state == {"open": True, "balance_cents": 10}


class AccountV2(Account):
    """The state gained a currency list (state version 2); an old checkpoint's state is upcast on restore."""

    state_version = 2
    state_upcasters: ClassVar[dict[int, Any]] = {1: lambda state: {**state, "currencies": ["EUR"]}}

    def initial(self) -> Row:
        return {**super().initial(), "currencies": ["EUR"]}


def test_a_checkpoint_of_an_older_state_version_is_upcast_on_restore_and_a_newer_one_refused() -> None:
    old = EventSourced(EventSourcedConfig(aggregate=ACCOUNT), Account())
    opened = {"aggregate_id": "a", "command_id": "c1", "expected_version": None, "command_type": "Open",
              "amount_cents": None, "_timestamp": START_MS}  # fmt: skip
    old.add(pa.RecordBatch.from_pylist([opened]))
    snapshot = old.snapshot()
    new = EventSourced(EventSourcedConfig(aggregate=ACCOUNT), AccountV2())  # the same path: a redeployed class
    new.restore(snapshot, START_MS)
    assert new.state_of("a") == {"open": True, "balance_cents": 0, "currencies": ["EUR"]}
    with pytest.raises(StateFormatError, match="state of version 2 is newer than aggregate Account reads"):
        EventSourced(EventSourcedConfig(aggregate=ACCOUNT), Account()).restore(new.snapshot(), START_MS)
    newer = {**deposit(1, 3, 100), "event_type": "Deposited", "schema_version": 4}
    with pytest.raises(ConfigError, match=r"schema_versions\['Deposited'\] >= 4"):
        replay_history(VersionedAccount(), [newer])


def test_the_checker_reads_file_order_as_unordered_and_a_lost_repeat_reply_as_lost() -> None:
    rows = workload(count=600, seed=6)
    expected = recompute_event_store(Account(), rows, EventSourcedConfig(aggregate=ACCOUNT))
    events, replies = expected
    shuffled = list(reversed(events))
    assert check_event_store(*expected, shuffled, replies, ordered=False).failures() == []
    assert check_event_store(*expected, shuffled, replies).out_of_order.count > 0
    repeat = next(reply for reply in replies if reply.duplicate)
    fewer = list(replies)
    fewer.remove(repeat)
    report = check_event_store(*expected, events, fewer)
    assert report.replies_lost.examples == (repeat.name,) and report.replies_wrong.count == 0


def test_compacting_the_events_or_replies_topic_is_refused(tmp_path: Path) -> None:
    data = accounts_config(tmp_path)
    data["kafka"] = {"bootstrap_servers": "127.0.0.1:9"}
    data["sinks"] = [{"type": "kafka", "topic": "account-replies", "topic_column": "topic",
                      "topics": ["account-events", "account-snapshots"], "compacted": ["account-events"]}]  # fmt: skip
    with pytest.raises(ConfigError, match=r"sinks.0.compacted: \['account-events'\] hold events or replies"):
        compile_pipeline(parse_config(data))
    data["sinks"][0]["compacted"] = ["account-snapshots"]
    assert compile_pipeline(parse_config(data)).result_columns[1] == "topic"
