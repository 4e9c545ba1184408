"""Keyed process function: value state, event- and processing-time timers, restore, against a reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipelines.config.state import KeyedProcessConfig
from pipelines.errors import ConfigError, FatalError
from pipelines.state.keyed_operator import KeyedOperator, StateFormatError, tag_state
from pipelines.state.process_function import (
    STATE_FORMAT,
    KeyedProcess,
    Output,
    ProcessContext,
    TimeDomain,
    load_process_function,
)
from pipelines.state.process_output import ProcessOutputError

TIMEOUT_MS = 10
NO_WATERMARK = -(1 << 62)

Row = tuple[str | None, int, int]  # customer, amount, event time
Step = tuple[str, Any]  # ("batch", rows) or ("advance", watermark_ms)


class RunningBalance:
    """The example: a running balance per customer, closed (emitted and cleared) after TIMEOUT_MS idle.

    State: {"balance", "last_ms"}. Every row emits the balance after it; the key's one event-time timer is
    moved to ``last activity + TIMEOUT_MS``.
    """

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> list[dict[str, Any]]:
        state = ctx.state.get({"balance": 0, "last_ms": None})
        if state["last_ms"] is not None:
            ctx.timers.delete_event_time_timer(state["last_ms"] + TIMEOUT_MS)
        out = []
        amounts, times = rows.column("amount").to_pylist(), rows.column("_timestamp").to_pylist()
        for amount, time_ms in zip(amounts, times, strict=True):
            state["balance"] += amount
            state["last_ms"] = time_ms if state["last_ms"] is None else max(state["last_ms"], time_ms)
            out.append({"customer": key, "balance": state["balance"], "closed_at_ms": None})
        ctx.state.set(state)
        ctx.timers.register_event_time_timer(state["last_ms"] + TIMEOUT_MS)
        return out

    def on_timer(self, key: Any, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> list[dict[str, Any]]:
        balance = ctx.state.get()["balance"]
        ctx.state.clear()
        return [{"customer": key, "balance": balance, "closed_at_ms": timer_ms}]


@dataclass
class Reference:
    """RunningBalance's semantics written directly: no operator, no timers service."""

    accounts: dict[str | None, dict[str, int]] = field(default_factory=dict)
    watermark_ms: int = NO_WATERMARK

    def add(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        out = []
        for customer in dict.fromkeys(row[0] for row in rows):  # keys in order of first appearance
            account = self.accounts.setdefault(customer, {"balance": 0, "last_ms": NO_WATERMARK})
            for key, amount, time_ms in rows:
                if key == customer:
                    account["balance"] += amount
                    account["last_ms"] = max(account["last_ms"], time_ms)
                    out.append({"customer": customer, "balance": account["balance"], "closed_at_ms": None})
        return out

    def advance(self, watermark_ms: int) -> list[dict[str, Any]]:
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        due = sorted(
            (account["last_ms"] + TIMEOUT_MS, customer is None, customer or "")
            for customer, account in self.accounts.items()
            if account["last_ms"] + TIMEOUT_MS <= self.watermark_ms
        )
        out = []
        for deadline, is_null, name in due:
            customer = None if is_null else name
            out.append(
                {"customer": customer, "balance": self.accounts.pop(customer)["balance"], "closed_at_ms": deadline}
            )
        return out


def batch_of(rows: Sequence[Row]) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "customer": pa.array([row[0] for row in rows], pa.string()),
            "amount": pa.array([row[1] for row in rows], pa.int64()),
            "_timestamp": pa.array([row[2] for row in rows], pa.int64()),
        }
    )


def rows_of(table: pa.Table | None) -> list[dict[str, Any]]:
    return [] if table is None else table.to_pylist()


def run(operator: KeyedProcess, steps: Sequence[Step]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind, value in steps:
        out += rows_of(operator.advance(value) if kind == "advance" else operator.add(batch_of(value)).output)
    return out


rows_strategy = st.lists(
    st.tuples(st.sampled_from(["ann", "bob", "cy", None]), st.integers(-100, 100), st.integers(0, 40)),
    min_size=1,
    max_size=10,
)
steps_strategy = st.lists(
    st.one_of(st.tuples(st.just("batch"), rows_strategy), st.tuples(st.just("advance"), st.integers(0, 60))),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(steps_strategy)
def test_running_balance_matches_the_reference(steps: list[Step]) -> None:
    operator, reference = KeyedProcess("customer", RunningBalance()), Reference()
    for kind, value in steps:
        if kind == "advance":
            assert rows_of(operator.advance(value)) == reference.advance(value)
        else:
            assert rows_of(operator.add(batch_of(value)).output) == reference.add(value)
    assert rows_of(operator.flush()) == reference.advance(1 << 62)
    assert operator.state_rows == 0


@settings(max_examples=100, deadline=None)
@given(steps_strategy, steps_strategy)
def test_snapshot_restore_continue_equals_an_uninterrupted_run(before: list[Step], after: list[Step]) -> None:
    uninterrupted = KeyedProcess("customer", RunningBalance())
    run(uninterrupted, before)
    snapshot = uninterrupted.snapshot()
    expected = run(uninterrupted, [*after, ("advance", 1 << 62)])

    restored = KeyedProcess("customer", RunningBalance())
    restored.restore(snapshot, uninterrupted_watermark(before))
    assert run(restored, [*after, ("advance", 1 << 62)]) == expected


def uninterrupted_watermark(steps: Sequence[Step]) -> int:
    return max([value for kind, value in steps if kind == "advance"], default=NO_WATERMARK)


@settings(max_examples=100, deadline=None)
@given(steps_strategy, steps_strategy)
def test_restoring_some_keys_continues_those_keys(before: list[Step], after: list[Step]) -> None:
    owned = {"ann", None}
    uninterrupted = KeyedProcess("customer", RunningBalance())
    run(uninterrupted, before)
    snapshot = uninterrupted.snapshot()
    expected = run(uninterrupted, [*after, ("advance", 1 << 62)])

    subset = snapshot.filter(pa.array([key in owned for key in snapshot.column("customer").to_pylist()], pa.bool_()))
    restored = KeyedProcess("customer", RunningBalance())
    restored.restore(subset, uninterrupted_watermark(before))
    mine = [(kind, [row for row in value if row[0] in owned] if kind == "batch" else value) for kind, value in after]
    got = run(restored, [(kind, value) for kind, value in mine if value != []] + [("advance", 1 << 62)])
    assert got == [row for row in expected if row["customer"] in owned]


class TimerProbe:
    """Registers the timers named in each row (column ``at``; negative: delete) and records firings."""

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> None:
        for at, domain in zip(rows.column("at").to_pylist(), rows.column("domain").to_pylist(), strict=True):
            if domain == "event":
                register, delete = ctx.timers.register_event_time_timer, ctx.timers.delete_event_time_timer
            else:
                register, delete = ctx.timers.register_processing_time_timer, ctx.timers.delete_processing_time_timer
            (register if at >= 0 else delete)(abs(at))

    def on_timer(self, key: Any, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> pa.Table:
        if key == "chain" and timer_ms < 100:
            ctx.timers.register_event_time_timer(timer_ms + 100)  # due in this same advance when far enough
        return pa.table({"key": [key], "timer_ms": [timer_ms], "domain": [domain], "watermark_ms": [ctx.watermark_ms]})


def probe_batch(rows: Sequence[tuple[str | None, int, str]]) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "k": pa.array([row[0] for row in rows], pa.string()),
            "at": pa.array([row[1] for row in rows], pa.int64()),
            "domain": pa.array([row[2] for row in rows], pa.string()),
            "_timestamp": pa.array([0] * len(rows), pa.int64()),
        }
    )


def fired(table: pa.Table | None) -> list[tuple[Any, int]]:
    return [(row["key"], row["timer_ms"]) for row in rows_of(table)]


def test_event_time_timers_fire_in_time_then_key_order_once_the_watermark_reaches_them() -> None:
    operator = KeyedProcess("k", TimerProbe())
    operator.add(probe_batch([("b", 20, "event"), ("a", 20, "event"), (None, 5, "event"), ("a", 10, "event")]))
    operator.add(probe_batch([("a", 10, "event"), ("b", 30, "event"), ("b", -30, "event")]))  # twice; deleted
    assert operator.state_rows == 4
    assert operator.advance(4) is None
    assert fired(operator.advance(10)) == [(None, 5), ("a", 10)]
    assert fired(operator.advance(1_000)) == [("a", 20), ("b", 20)]
    assert operator.state_rows == 0
    assert operator.advance(2_000) is None


def test_a_timer_registered_by_a_timer_fires_in_the_same_advance_when_due() -> None:
    operator = KeyedProcess("k", TimerProbe())
    operator.add(probe_batch([("chain", 1, "event")]))
    assert fired(operator.advance(150)) == [("chain", 1), ("chain", 101)]
    operator.add(probe_batch([("chain", 2, "event")]))
    assert fired(operator.advance(10)) == [("chain", 2), ("chain", 102)]  # past timers fire at the next advance
    assert operator.flush() is None


def test_processing_time_timers_fire_on_the_injected_clock_only() -> None:
    clock_ms = 1_000
    operator = KeyedProcess("k", TimerProbe())
    operator.add(probe_batch([("a", 1_500, "processing"), ("b", 1_200, "processing"), ("c", 1_300, "processing")]))
    operator.add(probe_batch([("c", -1_300, "processing")]))
    assert operator.advance(1 << 40) is None  # the watermark does not fire processing-time timers
    assert operator.flush() is None
    assert operator.advance_processing_time(clock_ms) is None
    clock_ms += 200
    assert fired(operator.advance_processing_time(clock_ms)) == [("b", 1_200)]
    assert operator.processing_time_ms == 1_200
    assert operator.advance_processing_time(0) is None  # processing time does not go back
    assert operator.processing_time_ms == 1_200
    assert fired(operator.advance_processing_time(5_000)) == [("a", 1_500)]


def test_processing_time_timers_survive_a_restore() -> None:
    operator = KeyedProcess("k", TimerProbe())
    operator.add(probe_batch([("a", 1_500, "processing"), ("a", 40, "event")]))
    snapshot = operator.snapshot()
    assert sorted(snapshot.column("kind").to_pylist()) == ["event_timer", "processing_timer"]
    restored = KeyedProcess("k", TimerProbe())
    restored.restore(snapshot, 0)
    assert fired(restored.advance_processing_time(2_000)) == [("a", 1_500)]
    assert fired(restored.advance(40)) == [("a", 40)]


class Keeper:
    """Stores whatever the rows' ``value`` column says, and emits what it reads back."""

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> list[dict[str, Any]] | None:
        before = ctx.state.get("absent")
        value = rows.column("value").to_pylist()[-1]
        if value is None:
            ctx.state.clear()
        else:
            ctx.state.set(value)
        return [{"before": str(before)}]

    def on_timer(self, key: Any, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> None:
        return None


def test_value_state_reads_back_what_a_restore_would() -> None:
    operator = KeyedProcess("k", Keeper())
    one = pa.record_batch({"k": ["x"], "value": [[1, 2]], "_timestamp": [0]})
    operator.add(one)
    assert rows_of(operator.add(one).output) == [{"before": "[1, 2]"}]
    nothing = pa.record_batch({"k": ["x"], "value": pa.array([None], pa.list_(pa.int64())), "_timestamp": [0]})
    operator.add(nothing)
    assert rows_of(operator.add(one).output) == [{"before": "absent"}]


def test_a_value_msgspec_cannot_encode_fails_at_set() -> None:
    class Unencodable:
        def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> None:
            ctx.state.set(object())

        def on_timer(self, key: Any, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> None:
            return None

    with pytest.raises(TypeError):
        KeyedProcess("k", Unencodable()).add(pa.record_batch({"k": ["x"], "_timestamp": [0]}))


def test_a_function_returning_something_else_than_rows_is_a_type_error() -> None:
    class Wrong:
        def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> Any:
            return {"not": "a list"}

        def on_timer(self, key: Any, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> None:
            return None

    with pytest.raises(TypeError, match="list of dicts"):
        KeyedProcess("k", Wrong()).add(pa.record_batch({"k": ["x"], "_timestamp": [0]}))


def test_snapshot_rows_and_refusals() -> None:
    operator = KeyedProcess("customer", RunningBalance())
    operator.add(batch_of([("ann", 5, 1)]))
    snapshot = operator.snapshot()
    assert snapshot.schema.metadata[b"eventray.state"] == STATE_FORMAT.encode()
    assert [(row["customer"], row["kind"], row["timer_ms"]) for row in snapshot.to_pylist()] == [
        ("ann", "value", None),
        ("ann", "event_timer", 1 + TIMEOUT_MS),
    ]
    operator.add(batch_of([("bob", 1, 1)]))
    assert snapshot.num_rows == 2  # immutable
    with pytest.raises(StateFormatError, match="untagged"):
        operator.restore(pa.table({"customer": ["ann"]}), 0)
    with pytest.raises(StateFormatError, match="another key column"):
        operator.restore(tag_state(pa.table({"id": ["ann"]}), STATE_FORMAT), 0)
    bad = pa.table({"customer": ["ann"], "kind": ["ledger"], "value": pa.array([b""]), "timer_ms": [1]})
    with pytest.raises(StateFormatError, match="ledger"):
        operator.restore(tag_state(bad, STATE_FORMAT), 0)
    empty = KeyedProcess("customer", RunningBalance())
    empty.restore(KeyedProcess("customer", RunningBalance()).snapshot(), 0)
    assert empty.state_rows == 0


def test_it_is_a_keyed_operator_built_from_config() -> None:
    config = KeyedProcessConfig(key="customer", function="tests.unit.test_process_function:RunningBalance")
    operator: KeyedOperator = KeyedProcess.from_config(config)
    assert operator.key == "customer"
    assert rows_of(operator.add(batch_of([("ann", 5, 1)])).output)[0]["balance"] == 5


def test_import_paths_that_do_not_name_a_function_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_process_function("tests.unit.no_such_module:Thing")
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_process_function("tests.unit.test_process_function:NoSuchThing")
    with pytest.raises(ConfigError, match="not callable"):
        load_process_function("tests.unit.test_process_function:TIMEOUT_MS")
    with pytest.raises(ConfigError, match="without process"):
        load_process_function("tests.unit.test_process_function:Reference")


def test_config_checks_the_import_path_format() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        KeyedProcessConfig(key="customer", function="no_colon_here")
    with pytest.raises(ValidationError, match="Extra inputs"):
        KeyedProcessConfig.model_validate({"key": "k", "function": "a:b", "timers": True})


DECLARED = pa.schema([
    pa.field("customer", pa.string(), nullable=False),
    ("balance", pa.int64()),
    ("note", pa.string()),
])  # fmt: skip


class Emits:
    """Emits what it is given, for the key's batch and for a timer; declares ``declared`` as its output_schema."""

    def __init__(self, output: Output, declared: Any = DECLARED) -> None:
        self.output = output
        self.output_schema = declared

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> Output:
        ctx.timers.register_event_time_timer(5)
        return self.output

    def on_timer(self, key: Any, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output:
        return self.output


def emitted(output: Output, declared: Any = DECLARED) -> tuple[pa.Table | None, pa.Table | None]:
    """What ``Emits(output)`` gives from ``process`` and from its timer."""
    operator = KeyedProcess("k", Emits(output, declared))
    added = operator.add(pa.record_batch({"k": ["x"], "_timestamp": [0]}))
    return added.output, operator.advance(10)


@pytest.mark.parametrize(
    "output",
    [
        [{"customer": "ann", "balance": 5, "note": None, "extra": "left out"}, {"customer": "bob"}],
        pa.table({"note": pa.nulls(2), "balance": pa.array([5, None], pa.int32()), "customer": ["ann", "bob"]}),
        pa.record_batch({"customer": ["ann", "bob"], "balance": [5, None]}),
    ],
    ids=["dicts", "table", "record-batch"],
)
def test_declared_rows_have_exactly_the_output_schema_a_column_of_nulls_included(output: Output) -> None:
    for table in emitted(output):
        assert table is not None and table.schema == DECLARED
        assert table.to_pylist() == [
            {"customer": "ann", "balance": 5, "note": None},
            {"customer": "bob", "balance": None, "note": None},
        ]


def test_undeclared_rows_are_what_the_function_returns() -> None:
    table, _ = emitted([{"customer": "ann", "note": None}], declared=None)
    assert table is not None and table.schema == pa.schema([("customer", pa.string()), ("note", pa.null())])
    assert KeyedProcess("k", Emits(None, None)).output_schema is None
    assert KeyedProcess("k", Emits(None)).output_schema == DECLARED


@pytest.mark.parametrize(
    ("output", "column", "why"),
    [
        ([{"customer": "ann", "balance": "5"}], "balance", "declared int64, and row 0 of its output holds a str"),
        ([{"customer": "ann"}, {"customer": "bob", "balance": 2.5}], "balance", "row 1 of its output holds a float"),
        ([{"customer": "ann"}, {"balance": 1}], "customer", "string not null, and row 1 of its output has no value"),
        (pa.table({"customer": ["ann"], "balance": ["lots"]}), "balance", "it returned is string, whose values do "),
        (pa.table({"customer": ["ann"], "note": [[1, 2]]}), "note", "it returned is list<item: int64>"),
        (pa.table({"balance": [1]}), "customer", "row 0 of its output has no value"),
        (pa.table({"customer": ["ann"], "balance": ["12"]}), "balance", "without a change of kind"),
        (pa.table({"customer": ["ann"], "balance": [True]}), "balance", "it returned is bool, whose values do not"),
        (pa.table({"customer": [7], "balance": [1]}), "customer", "it returned is int64, whose values do not"),
    ],
    ids=[
        "str-for-int",
        "float-for-int",
        "missing-not-null",
        "uncastable",
        "nested",
        "table-missing-not-null",
        "numeric-text-for-int",
        "flag-for-int",
        "int-for-text",
    ],
)
def test_rows_that_do_not_fit_the_output_schema_fail_naming_the_function_the_column_and_its_type(
    output: Output, column: str, why: str
) -> None:
    with pytest.raises(ProcessOutputError) as raised:
        emitted(output)
    message = str(raised.value)
    assert message.startswith(
        f"process function 'tests.unit.test_process_function:Emits' emitted rows that do not fit its output_schema: "
        f"column {column!r} is declared "
    )
    assert why in message and "Operator action: fix the function (or its output_schema)" in message
    assert isinstance(raised.value, FatalError), "a function's bug: retrying will not help, nothing is dead-lettered"
    assert "lots" not in message, "the message names no value: it is event data"


def test_an_output_schema_that_is_no_schema_is_a_config_error_naming_the_function() -> None:
    with pytest.raises(ConfigError, match=r"^process function 'tests.unit.test_process_function:Emits' declares "
                                          r"output_schema as dict, not a pyarrow.Schema"):  # fmt: skip
        KeyedProcess("k", Emits(None, {"customer": "string"}))
