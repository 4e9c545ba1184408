"""Event-sourced aggregates (pipelines/state/event_sourced.py): optimistic concurrency, idempotent commands,
rejections that never halt, restore, and random workloads against the sequential reference
(pipelines/verify/event_store_check.py), in the operator and through the whole pipeline in process."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
import yaml
from pydantic import ValidationError

from pipelines.config.pipeline import parse_config
from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError
from pipelines.examples.accounts import Account, Order, account_commands
from pipelines.stages.plan import compile_pipeline
from pipelines.state.event_sourced import ACCEPTED, REJECTED, EventSourced, Rejected, load_aggregate
from pipelines.state.keyed_operator import KeyedOperator, StateFormatError
from pipelines.testing import run_stages
from pipelines.verify.event_store_check import (
    CommandReply,
    StoredEvent,
    check_event_store,
    recompute_event_store,
)

START_MS = 1_767_225_600_000
ACCOUNT = "pipelines.examples.accounts:Account"
ACCOUNTS_YAML = Path(__file__).resolve().parents[2] / "configs" / "accounts.yaml"


def operator(**settings: Any) -> EventSourced:
    return EventSourced.from_config(EventSourcedConfig(aggregate=ACCOUNT, **settings))


def command(aggregate_id: str | None, command_id: str | None, kind: str, amount: int | None = None,
            expected: int | None = None, at_ms: int = START_MS) -> dict[str, Any]:  # fmt: skip
    return {"aggregate_id": aggregate_id, "command_id": command_id, "expected_version": expected,
            "command_type": kind, "amount_cents": amount, "_timestamp": at_ms}  # fmt: skip


def decided(op: EventSourced, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    output = op.add(pa.RecordBatch.from_pylist(rows)).output
    return [] if output is None else output.to_pylist()


def replies(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in results if row["topic"] == "replies"]


def events(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in results if row["topic"] == "events"]


def as_stored(results: list[dict[str, Any]]) -> tuple[list[StoredEvent], list[CommandReply]]:
    stored = [StoredEvent.of_row(row) for row in events(results)]
    answered = [CommandReply.of_row(row) for row in replies(results)]
    return stored, answered


def test_the_seeds_account_deposits_1000_withdraws_500_and_has_500() -> None:
    op = operator()
    results = decided(op, [command("a", "c1", "Open"), command("a", "c2", "Deposit", 1_000, at_ms=START_MS + 1),
                           command("a", "c3", "Withdraw", 500, at_ms=START_MS + 2)])  # fmt: skip

    assert op.state_of("a") == {"open": True, "balance_cents": 500} and op.version_of("a") == 3
    assert [(e["version"], e["event_type"], msgspec.json.decode(e["data"])) for e in events(results)] == [
        (1, "Opened", {}),
        (2, "Deposited", {"amount_cents": 1_000, "at_ms": START_MS + 1}),
        (3, "Withdrawn", {"amount_cents": 500, "at_ms": START_MS + 2}),
    ]
    assert [(r["command_id"], r["status"], r["version"], r["first_version"]) for r in replies(results)] == [
        ("c1", ACCEPTED, 1, 1), ("c2", ACCEPTED, 2, 2), ("c3", ACCEPTED, 3, 3),
    ]  # fmt: skip
    assert {row["_timestamp"] for row in results} == {START_MS, START_MS + 1, START_MS + 2}


def test_a_withdrawal_beyond_the_balance_is_rejected_and_changes_nothing() -> None:
    op = operator()
    decided(op, [command("a", "c1", "Open"), command("a", "c2", "Deposit", 300)])
    results = decided(op, [command("a", "c3", "Withdraw", 301)])
    assert events(results) == []
    (reply,) = replies(results)
    assert (reply["status"], reply["version"], reply["first_version"]) == (REJECTED, 2, None)
    assert "insufficient funds" in reply["reason"] and op.state_of("a")["balance_cents"] == 300


def test_a_stale_expected_version_is_rejected_with_the_version_the_aggregate_has() -> None:
    op = operator()
    decided(op, [command("a", "c1", "Open"), command("a", "c2", "Deposit", 100, expected=1)])
    (reply,) = replies(decided(op, [command("a", "c3", "Deposit", 5, expected=1)]))
    assert (reply["status"], reply["version"]) == (REJECTED, 2)
    assert "expected version 1" in reply["reason"] and "at 2" in reply["reason"]
    (fresh,) = replies(decided(op, [command("a", "c4", "Deposit", 5, expected=2)]))
    assert (fresh["status"], fresh["version"]) == (ACCEPTED, 3)


@pytest.mark.parametrize("writers", [2, 5, 40])
def test_writers_with_the_same_expected_version_get_exactly_one_acceptance(writers: int) -> None:
    op = operator()
    decided(op, [command("a", "open", "Open")])
    racing = [command("a", f"w{n}", "Deposit", n + 1, expected=1) for n in range(writers)]
    random.Random(writers).shuffle(racing)
    answered = replies(decided(op, racing))
    assert Counter(reply["status"] for reply in answered) == {ACCEPTED: 1, REJECTED: writers - 1}
    assert answered[0]["status"] == ACCEPTED, "the first in the partition's order wins"
    assert op.version_of("a") == 2


def test_a_repeated_command_id_gets_its_first_reply_again_and_no_events_until_it_is_forgotten() -> None:
    op = operator(command_ttl_ms=1_000)
    decided(op, [command("a", "c1", "Open")])
    first = decided(op, [command("a", "c2", "Deposit", 100)])
    again = decided(op, [command("a", "c2", "Deposit", 100, at_ms=START_MS + 10)])
    assert events(again) == [] and op.state_of("a")["balance_cents"] == 100
    (original,), (repeated,) = replies(first), replies(again)
    assert repeated["duplicate"] is True and original["duplicate"] is False
    assert {k: v for k, v in repeated.items() if k not in ("duplicate", "_timestamp")} == {
        k: v for k, v in original.items() if k not in ("duplicate", "_timestamp")
    }
    op.advance(START_MS + 10 + 1_000)  # the id's time + ttl is not yet passed
    assert replies(decided(op, [command("a", "c2", "Deposit", 100)]))[0]["duplicate"] is True
    op.advance(START_MS + 10 + 1_001)
    assert replies(decided(op, [command("a", "c2", "Deposit", 100)]))[0]["duplicate"] is False
    assert op.state_of("a")["balance_cents"] == 200


class Faulty:
    """An aggregate whose user code fails on some commands: the command is rejected, the pipeline goes on."""

    def initial(self) -> int:
        return 0

    def decide(self, state: int, command: dict[str, Any], time_ms: int) -> Any:
        kind = command["command_type"]
        if kind == "Crash":
            raise KeyError("no_such_field")
        if kind == "NotJson":
            return [{"event_type": "Odd", "value": object()}]
        if kind == "NoType":
            return [{"value": 1}]
        if kind == "BadEvolve":
            return [{"event_type": "Added", "value": 1}, {"event_type": "Poison"}]
        if kind == "Nothing":
            return None
        return [{"event_type": "Added", "value": 1}]

    def evolve(self, state: int, event: dict[str, Any]) -> int:
        if event["event_type"] == "Poison":
            raise ValueError("cannot apply poison")
        return state + int(event["value"])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("Crash", "decide raised KeyError"),
        ("NotJson", "cannot be stored as JSON"),
        ("NoType", "not a dict with a text event_type"),
        ("BadEvolve", "evolve raised ValueError: cannot apply poison"),
        ("Nothing", "decide returned NoneType"),
    ],
)
def test_failing_user_code_rejects_the_command_whole_and_the_next_one_is_decided(kind: str, reason: str) -> None:
    op = EventSourced(EventSourcedConfig(aggregate="tests.unit.test_event_sourced:Faulty"), Faulty())
    results = decided(op, [command("a", "c1", kind), command("a", "c2", "Add")])
    assert [row["version"] for row in events(results)] == [1], "no half-applied command: only c2's event"
    failed, added = replies(results)
    assert failed["status"] == REJECTED and reason in failed["reason"] and failed["version"] == 0
    assert added["status"] == ACCEPTED and op.state_of("a") == 1


def test_commands_without_an_aggregate_or_command_id_are_rejected_and_without_time_dead_lettered() -> None:
    op = operator()
    rows = [command(None, "c1", "Open"), command("a", None, "Open"), {**command("a", "c3", "Open"), "_timestamp": None}]
    added = op.add(pa.RecordBatch.from_pylist(rows))
    assert added.output is not None
    reasons = [row["reason"] for row in replies(added.output.to_pylist())]
    assert reasons == ["the command has no aggregate_id", "the command has no command_id"]
    assert added.no_event_time is not None and added.no_event_time.column("command_id").to_pylist() == ["c3"]
    assert op.version_of("a") == 0


def test_decide_sees_the_commands_columns_and_its_time_not_the_internal_ones() -> None:
    seen: list[tuple[dict[str, Any], int]] = []

    class Recording(Account):
        def decide(self, state: dict[str, Any], command: dict[str, Any], time_ms: int) -> Any:
            seen.append((command, time_ms))
            return super().decide(state, command, time_ms)

    op = EventSourced(EventSourcedConfig(aggregate=ACCOUNT), Recording())
    op.add(pa.RecordBatch.from_pylist([{**command("a", "c1", "Open", at_ms=START_MS + 7), "_partition": 3}]))
    assert seen == [({"aggregate_id": "a", "command_id": "c1", "expected_version": None, "command_type": "Open",
                      "amount_cents": None}, START_MS + 7)]  # fmt: skip


def workload(count: int = 6_000, seed: int = 3, accounts: int = 30) -> list[dict[str, Any]]:
    return [{**row, "_timestamp": row["issued_ms"]} for row in account_commands(accounts, count, seed, START_MS)]


def run_in_batches(op: EventSourced, rows: list[dict[str, Any]], cuts: list[int]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for start, end in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        if end > start:
            results += decided(op, rows[start:end])
    return results


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_random_workload_equals_the_sequential_reference(seed: int) -> None:
    rows = workload(seed=seed)
    rng = random.Random(seed)
    results = run_in_batches(operator(), rows, sorted(rng.sample(range(1, len(rows)), 12)))
    expected = recompute_event_store(Account(), rows, EventSourcedConfig(aggregate=ACCOUNT))
    report = check_event_store(*expected, *as_stored(results))
    assert report.failures() == []
    assert report.events == report.expected_events > 1_000 and report.replies == len(rows)
    statuses = Counter((reply.status, reply.duplicate) for reply in expected[1])
    assert statuses[(REJECTED, False)] > 100 and statuses[(ACCEPTED, True)] > 50, "stale versions and resends ran"


def test_deciding_twice_gives_the_same_events_and_replies() -> None:
    rows = workload(count=2_000)
    assert run_in_batches(operator(), rows, [500, 1_500]) == run_in_batches(operator(), rows, [999])


def test_restoring_a_snapshot_split_between_two_owners_goes_on_as_if_never_stopped() -> None:
    rows = workload(count=4_000, seed=8)
    whole = run_in_batches(operator(), rows, [2_000])
    first = operator()
    before = run_in_batches(first, rows[:2_000], [])
    first.advance(START_MS)
    snapshot = first.snapshot()
    keys = pa.array(sorted(set(snapshot.column("aggregate_id").to_pylist())))
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    owners = [operator(), operator()]
    for owner, half in zip(owners, halves, strict=True):
        owner.restore(snapshot.filter(pa.compute.is_in(snapshot.column("aggregate_id"), value_set=half)), START_MS)
    assert sum(owner.state_rows for owner in owners) == first.state_rows > 0
    after: list[dict[str, Any]] = []
    for row in rows[2_000:]:
        owner = owners[0] if pa.scalar(row["aggregate_id"]) in halves[0] else owners[1]
        after += decided(owner, [row])
    by_command = sorted(before + after, key=lambda r: (r["aggregate_id"], r["version"], r["topic"], r["_timestamp"]))
    assert by_command == sorted(whole, key=lambda r: (r["aggregate_id"], r["version"], r["topic"], r["_timestamp"]))


def test_a_snapshot_is_refused_by_another_aggregate_class() -> None:
    op = operator()
    decided(op, [command("a", "c1", "Open")])
    other = EventSourced(EventSourcedConfig(aggregate="pipelines.examples.accounts:Order"), Order())
    with pytest.raises(StateFormatError, match="aggregate was"):
        other.restore(op.snapshot(), 0)


def test_it_is_a_keyed_operator_and_bad_paths_are_config_errors() -> None:
    op: KeyedOperator = operator()
    assert op.key == "aggregate_id" and op.flush() is None
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_aggregate("pipelines.examples.accounts:Nope")
    with pytest.raises(ConfigError, match=r"without initial\(\) and decide\(\) and evolve\(\)"):
        load_aggregate("tests.unit.test_event_sourced:Counter")
    with pytest.raises(ConfigError, match="could not be made: calling it raised TypeError"):
        load_aggregate("tests.unit.test_event_sourced:Rejected")
    with pytest.raises(ValidationError, match="same column twice"):
        EventSourcedConfig(aggregate=ACCOUNT, command_id_column="aggregate_id")
    with pytest.raises(ValidationError, match="name a topic of its own for each"):
        EventSourcedConfig(aggregate=ACCOUNT, events_topic="t", replies_topic="t")
    assert Rejected("x").reason == "x"


def accounts_config(tmp_path: Path, **keyed: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ACCOUNTS_YAML.read_text(encoding="utf-8"))
    data["source"]["paths"] = [str(ACCOUNTS_YAML.parent / "data" / "accounts" / "commands-*.jsonl")]
    data["keyed"].update(keyed)
    data.update(sinks=[{"type": "jsonl", "path": str(tmp_path / "out")}],
                dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")}, tracing={"enabled": False})  # fmt: skip
    return data


def test_the_accounts_example_run_in_process_by_several_owners_equals_the_reference(tmp_path: Path) -> None:
    config = parse_config(accounts_config(tmp_path))
    run = run_stages(config, senders=2, owners=3, batch_size=64)
    commands = []
    for path in sorted((ACCOUNTS_YAML.parent / "data" / "accounts").glob("commands-*.jsonl")):
        commands += [
            {**row, "_timestamp": row["issued_ms"]} for row in map(msgspec.json.decode, path.read_bytes().splitlines())
        ]
    expected = recompute_event_store(Account(), commands, EventSourcedConfig(aggregate=ACCOUNT))
    results = [{**row, "topic": row["topic"].removeprefix("account-")} for row in run.results.rows()]
    report = check_event_store(*expected, *as_stored(results))
    assert report.failures() == [] and run.events_in == len(commands) == report.replies
    assert report.events > 500


def test_the_stage_is_checked_when_the_pipeline_compiles(tmp_path: Path) -> None:
    compiled = compile_pipeline(parse_config(accounts_config(tmp_path)))
    assert compiled.result_columns[:4] == ("aggregate_id", "topic", "command_id", "version")
    data = accounts_config(tmp_path, command_id_column="request_id")
    with pytest.raises(ConfigError, match=r"keyed\.command_id_column: unknown column 'request_id'"):
        compile_pipeline(parse_config(data))
    data = accounts_config(tmp_path, expected_version_column="command_type")
    with pytest.raises(ConfigError, match=r"keyed\.expected_version_column: column 'command_type' is string"):
        compile_pipeline(parse_config(data))
    data = accounts_config(tmp_path, aggregate="pipelines.examples.accounts:Missing")
    with pytest.raises(ConfigError, match=r"keyed\.aggregate: aggregate 'pipelines\.examples\.accounts:Missing'"):
        compile_pipeline(parse_config(data))
    data = accounts_config(tmp_path)
    data["sinks"] = [{"type": "console", "columns": ["aggregate_id", "nope"]}]
    with pytest.raises(ConfigError, match=r"sinks.0.columns: unknown column\(s\) \['nope'\]"):
        compile_pipeline(parse_config(data))


def test_the_checker_finds_events_and_replies_lost_written_twice_wrong_or_out_of_order() -> None:
    rows = workload(count=1_000, seed=5)
    expected = recompute_event_store(Account(), rows, EventSourcedConfig(aggregate=ACCOUNT))
    stored, answered = as_stored(run_in_batches(operator(), rows, [400]))
    first, second = stored[0], next(e for e in stored if e.aggregate_id == stored[0].aggregate_id and e.version == 2)
    changed = StoredEvent(stored[5].aggregate_id, stored[5].version, stored[5].event_type, {"other": 1},
                          stored[5].command_id)  # fmt: skip
    tampered = [second, first, *[e for e in stored[1:] if e not in (second, stored[5])], changed, stored[9]]
    tampered.remove(stored[-1])
    replies_tampered = [*answered[1:], answered[3], CommandReply(**{**answered[4].__dict__, "version": 99})]
    replies_tampered.remove(answered[4])
    report = check_event_store(*expected, tampered, replies_tampered)
    assert report.lost.examples == (stored[-1].name,) and report.duplicated.examples == (stored[9].name,)
    assert report.wrong.examples == (changed.name,) and report.out_of_order.count >= 1
    assert report.replies_lost.examples == (answered[0].name,)
    assert report.replies_duplicated.examples == (answered[3].name,)
    assert report.replies_wrong.examples == (answered[4].name,)
    assert len(report.failures()) == 7


def order_command(order: str, command_id: str, kind: str, customer_id: str | None = "cust-1") -> dict[str, Any]:
    return {**command(order, command_id, kind, 2_500), "customer_id": customer_id}


def test_an_order_goes_placed_paid_shipped_and_cannot_be_cancelled_once_shipped() -> None:
    op = EventSourced(EventSourcedConfig(aggregate="pipelines.examples.accounts:Order"), Order())
    steps = [("o1", "c1", "Pay"), ("o1", "c2", "Place"), ("o1", "c3", "Place"), ("o1", "c4", "Ship"),
             ("o1", "c5", "Pay"), ("o1", "c6", "Ship"), ("o1", "c7", "Cancel"), ("o2", "c8", "Place"),
             ("o2", "c9", "Cancel"), ("o2", "c10", "Pay"), ("o2", "c11", "Refund")]  # fmt: skip
    results = decided(op, [order_command(order, cid, kind) for order, cid, kind in steps])
    outcomes = [(r["command_id"], r["status"]) for r in replies(results)]
    assert outcomes == [
        ("c1", REJECTED), ("c2", ACCEPTED), ("c3", REJECTED), ("c4", REJECTED), ("c5", ACCEPTED), ("c6", ACCEPTED),
        ("c7", REJECTED), ("c8", ACCEPTED), ("c9", ACCEPTED), ("c10", REJECTED), ("c11", REJECTED),
    ]  # fmt: skip
    assert [e["event_type"] for e in events(results)] == ["Placed", "Paid", "Shipped", "Placed", "Cancelled"]
    assert op.state_of("o1") == {"status": "shipped", "customer_id": "cust-1", "amount_cents": 2_500}
    assert op.state_of("o2") == {"status": "cancelled", "customer_id": "cust-1", "amount_cents": 2_500}
    reasons = {r["command_id"]: r["reason"] for r in replies(results)}
    assert reasons["c1"] == "no such order: place it first" and "shipped" in reasons["c7"]
    assert "unknown command type 'Refund'" in reasons["c11"]


def test_every_order_event_carries_the_customer_and_the_amount() -> None:
    op = EventSourced(EventSourcedConfig(aggregate="pipelines.examples.accounts:Order"), Order())
    steps = [("o1", "c1", "Place"), ("o1", "c2", "Pay"), ("o1", "c3", "Ship"), ("o2", "c4", "Place"),
             ("o2", "c5", "Cancel")]  # fmt: skip
    results = decided(op, [order_command(order, cid, kind, f"cust-{order}") for order, cid, kind in steps])
    assert [(e["aggregate_id"], e["event_type"], msgspec.json.decode(e["data"])) for e in events(results)] == [
        (order, kind, {"customer_id": f"cust-{order}", "amount_cents": 2_500, "at_ms": START_MS})
        for order, kind in [("o1", "Placed"), ("o1", "Paid"), ("o1", "Shipped"), ("o2", "Placed"), ("o2", "Cancelled")]
    ]


@pytest.mark.parametrize("customer_id", [None, ""])
def test_a_place_without_a_customer_is_rejected_and_the_order_can_be_placed_with_one(customer_id: Any) -> None:
    op = EventSourced(EventSourcedConfig(aggregate="pipelines.examples.accounts:Order"), Order())
    results = decided(op, [order_command("o1", "c1", "Place", customer_id), order_command("o1", "c2", "Place")])
    refused, placed = replies(results)
    assert (refused["status"], refused["version"]) == (REJECTED, 0)
    assert refused["reason"] == f"a Place needs a customer_id (the customer who orders), not {customer_id!r}"
    assert (placed["status"], placed["version"]) == (ACCEPTED, 1)
    assert op.state_of("o1")["customer_id"] == "cust-1"


def test_a_place_with_a_negative_amount_is_rejected() -> None:
    op = EventSourced(EventSourcedConfig(aggregate="pipelines.examples.accounts:Order"), Order())
    (reply,) = replies(decided(op, [{**order_command("o1", "c1", "Place"), "amount_cents": -1}]))
    assert reply["status"] == REJECTED and reply["reason"] == "amount_cents must be an integer of at least 0, not -1"
