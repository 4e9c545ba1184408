"""Queryable keyed state, the CQRS read side (pipelines/state/queryable.py): URL keys read as the key column's
type, the operators' views (process values, upsert rows, event-sourced aggregates), read-your-writes positions,
latest and committed consistency, a query waiting for a position while another thread applies it, and the
config of ``query:`` and ``serve:``. No Ray, no Kafka: the state objects are driven by hand."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest
import yaml
from pydantic import ValidationError

from pipelines.config.pipeline import SchemaConfig, parse_config
from pipelines.config.query import PositionConfig, QueryConfig, ServeConfig
from pipelines.config.state import EventSourcedConfig, KeyedProcessConfig, UpsertConfig
from pipelines.errors import ConfigError
from pipelines.examples.account_views import ACCOUNT_VIEWS_YAML
from pipelines.examples.accounts import ACCOUNTS_YAML
from pipelines.stages.plan import compile_pipeline
from pipelines.state.event_sourced import EventSourced
from pipelines.state.keygroups import KeyGroupRouter
from pipelines.state.process_function import Key, KeyedProcess, Output, ProcessContext, TimeDomain
from pipelines.state.queryable import KeyedValues, Positions, QueryableState, TableRows, WantedPosition, as_keys
from pipelines.state.upsert_table import UpsertTable
from tests.unit.test_config import config_error

START_MS = 1_767_225_600_000
WAIT_S = 30.0  # long enough that a test passing on it means the wait was woken, not timed out
INT64, TEXT = pa.int64(), pa.string()
POSITION = PositionConfig(aggregate_column="aggregate_id", version_column="version")

Event = tuple[str | None, int, str, int]  # aggregate_id, version, event_type, amount_cents


def account_views_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ACCOUNT_VIEWS_YAML.read_text(encoding="utf-8"))
    return data


def accounts_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ACCOUNTS_YAML.read_text(encoding="utf-8"))
    return data


def balances_config() -> KeyedProcessConfig:
    keyed = parse_config(account_views_data()).keyed
    assert isinstance(keyed, KeyedProcessConfig) and keyed.query is not None
    return keyed


VIEWS = parse_config(account_views_data())
KEY_GROUPS = KeyGroupRouter("aggregate_id", VIEWS.runtime.max_key_groups, [0] * VIEWS.runtime.max_key_groups)


def events(*rows: Event) -> pa.RecordBatch:
    """Rows of an events topic as the account-views pipeline reads them."""
    return pa.record_batch({
        "aggregate_id": pa.array([row[0] for row in rows], pa.string()),
        "version": pa.array([row[1] for row in rows], pa.int64()),
        "event_type": pa.array([row[2] for row in rows], pa.string()),
        "data": pa.array([msgspec.json.encode({"amount_cents": row[3]}).decode() for row in rows], pa.string()),
        "_timestamp": pa.array([START_MS + index for index in range(len(rows))], pa.int64()),
    })  # fmt: skip


def balance(version: int, balance_cents: int) -> dict[str, Any]:
    """The ``balances`` view of an account opened at version 1 and holding ``balance_cents``."""
    return {"open": True, "balance_cents": balance_cents, "version": version, "events": version}


OPENED = ("acc-1", 1, "Opened", 0)
DEPOSITED = ("acc-1", 2, "Deposited", 500)
WITHDRAWN = ("acc-1", 3, "Withdrawn", 200)


class Balances:
    """The ``balances`` stage of configs/account-views.yaml as an actor holds it: the operator and its queryable
    state, told about each batch after the operator applied it."""

    def __init__(self, query: QueryConfig | None = None) -> None:
        keyed = balances_config()
        self.operator = KeyedProcess.from_config(keyed)
        assert keyed.query is not None
        self.state = QueryableState(query or keyed.query, self.operator)

    def apply(self, *rows: Event) -> None:
        batch = events(*rows)
        self.operator.add(batch)
        self.state.applied(batch, KEY_GROUPS.key_groups(batch))

    def latest(self, *keys: str) -> list[Any]:
        return self.state.answer(list(keys), "latest", None, 0).values

    def committed(self, *keys: str) -> list[Any]:
        return self.state.answer(list(keys), "committed", None, 0).values


# as_keys


@pytest.mark.parametrize("key_type", [pa.string(), pa.large_string(), pa.null()], ids=str)
def test_keys_of_a_text_key_column_are_passed_as_written(key_type: pa.DataType) -> None:
    assert as_keys(["7", "acc-1", ""], key_type) == ["7", "acc-1", ""]


def test_keys_of_an_int64_key_column_are_parsed_and_those_that_are_no_int64_are_none() -> None:
    written = ["7", "-3", "0", "x", "7.5", "9223372036854775808"]
    assert as_keys(written, pa.int64()) == [7, -3, 0, None, None, None]


# the operators' views


class LastAmount:
    """A process function keeping the last ``amount`` of each key."""

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> Output:
        ctx.state.set({"amount": rows.column("amount").to_pylist()[-1]})
        return None

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output:
        return None


def amounts(keys: list[Any], values: list[int], key_type: pa.DataType = INT64) -> pa.RecordBatch:
    return pa.record_batch({
        "k": pa.array(keys, key_type),
        "amount": pa.array(values, pa.int64()),
        "_timestamp": pa.array([START_MS] * len(keys), pa.int64()),
    })  # fmt: skip


def test_a_process_views_frozen_copy_ignores_later_batches_and_its_live_view_does_not() -> None:
    operator = KeyedProcess("k", LastAmount())
    operator.add(amounts([7, 8], [10, 20]))
    frozen, live = operator.view(frozen=True), operator.view(frozen=False)
    operator.add(amounts([7, 9], [11, 30]))

    assert frozen.values(["7", "8", "9"]) == [{"amount": 10}, {"amount": 20}, None]
    assert live.values(["7", "8", "9"]) == [{"amount": 11}, {"amount": 20}, {"amount": 30}]


def test_a_restored_process_view_reads_int64_keys_before_any_batch() -> None:
    """The key column's type comes with the snapshot: a URL key "7" finds 7 in a restored operator."""
    before = KeyedProcess("k", LastAmount())
    before.add(amounts([7], [10]))
    restored = KeyedProcess("k", LastAmount())
    restored.restore(before.snapshot(), START_MS)
    assert restored.view(frozen=False).values(["7", "70"]) == [{"amount": 10}, None]


def test_a_key_that_is_no_int64_does_not_find_the_null_keys_process_value() -> None:
    operator = KeyedProcess("k", LastAmount())
    operator.add(amounts([None, 7], [1, 10]))
    assert operator.view(frozen=False).values(["x", "7"]) == [None, {"amount": 10}]


def upserts(
    rows: list[tuple[Any, int | None, bool]], first_ms: int = START_MS, key_type: pa.DataType = TEXT
) -> pa.RecordBatch:
    """Versions of (sku, qty, gone), one millisecond apart from ``first_ms``."""
    return pa.record_batch({
        "sku": pa.array([row[0] for row in rows], key_type),
        "qty": pa.array([row[1] for row in rows], pa.int64()),
        "_timestamp": pa.array([first_ms + index for index in range(len(rows))], pa.int64()),
        "gone": pa.array([row[2] for row in rows], pa.bool_()),
    })  # fmt: skip


def qty(rows: list[Any]) -> list[int | None]:
    return [None if row is None else row["qty"] for row in rows]


def test_an_upsert_tables_view_answers_in_key_order_without_deleted_or_unknown_keys() -> None:
    table = UpsertTable(UpsertConfig(key="sku", delete_column="gone"))
    table.add(upserts([("a", 1, False), ("b", 2, False), ("c", 3, False)]))
    table.add(upserts([("b", None, True), ("d", 4, False)], START_MS + 10))  # a second chunk, and a tombstone

    rows = table.view(frozen=False).values(["d", "b", "zz", "a"])
    assert qty(rows) == [4, None, None, 1]
    assert rows[0]["sku"] == "d" and rows[3]["sku"] == "a"


def test_an_upsert_tables_view_keeps_the_rows_of_when_it_was_taken() -> None:
    table = UpsertTable(UpsertConfig(key="sku", delete_column="gone"))
    assert table.view(frozen=True).values(["a"]) == [None], "an empty table has no rows"
    table.add(upserts([("a", 1, False)]))
    frozen = table.view(frozen=True)
    table.add(upserts([("a", 5, False), ("b", 2, False)], START_MS + 10))

    assert qty(frozen.values(["a", "b"])) == [1, None]
    assert qty(table.view(frozen=True).values(["a", "b"])) == [5, 2]


def test_a_key_that_is_no_int64_does_not_find_the_null_keys_upsert_row() -> None:
    table = UpsertTable(UpsertConfig(key="sku"))
    table.add(upserts([(None, 1, False), (7, 10, False)], key_type=pa.int64()))
    assert qty(table.view(frozen=False).values(["x", "7"])) == [None, 10]


def command(aggregate_id: str, command_id: str, kind: str, amount: int | None = None) -> dict[str, Any]:
    return {"aggregate_id": aggregate_id, "command_id": command_id, "expected_version": None,
            "command_type": kind, "amount_cents": amount, "_timestamp": START_MS}  # fmt: skip


def test_an_event_sourced_view_gives_each_aggregates_version_and_state() -> None:
    operator = EventSourced.from_config(EventSourcedConfig(aggregate="pipelines.examples.accounts:Account"))
    operator.add(pa.RecordBatch.from_pylist([command("a", "c1", "Open"), command("a", "c2", "Deposit", 1_000)]))
    frozen = operator.view(frozen=True)
    operator.add(pa.RecordBatch.from_pylist([command("a", "c3", "Withdraw", 400), command("b", "c4", "Open")]))

    assert frozen.values(["a", "b"]) == [{"version": 2, "state": {"open": True, "balance_cents": 1_000}}, None]
    assert operator.view(frozen=False).values(["a", "b", "c"]) == [
        {"version": 3, "state": {"open": True, "balance_cents": 600}},
        {"version": 1, "state": {"open": True, "balance_cents": 0}},
        None,
    ]


def test_keyed_values_give_a_version_only_to_keys_that_have_a_value() -> None:
    reader = KeyedValues({"a": msgspec.msgpack.encode([1, 2])}, pa.string(), {"a": 4, "b": 1})
    assert reader.values(["a", "b"]) == [{"version": 4, "state": [1, 2]}, None]


def test_table_rows_of_no_table_are_none_for_every_key() -> None:
    assert TableRows(None, "sku", None).values(["a", "b"]) == [None, None]


# positions


def positions_batch(rows: list[tuple[str | None, int | None]]) -> pa.RecordBatch:
    return pa.record_batch({
        "aggregate_id": pa.array([row[0] for row in rows], pa.string()),
        "version": pa.array([row[1] for row in rows], pa.int64()),
    })  # fmt: skip


def groups(*values: int) -> npt.NDArray[np.int64]:
    """The key groups of a batch's rows, as the actor computes them for its stage's key."""
    return np.array(values, dtype=np.int64)


def test_positions_keep_each_aggregates_newest_version_with_the_key_group_of_its_row() -> None:
    positions = Positions(POSITION)
    positions.apply(positions_batch([("a", 1), ("a", 3), ("b", 2), ("a", 2)]), groups(5, 5, 9, 5))
    positions.apply(positions_batch([("a", 1)]), groups(5))  # a redelivery does not move it back

    assert (positions.version("a"), positions.version("b"), positions.version("never")) == (3, 2, 0)
    table = positions.table()
    assert table.schema.types == [pa.string(), pa.int64(), pa.int32()]
    assert sorted(zip(*(table.column(name).to_pylist() for name in table.column_names), strict=True)) == [
        ("a", 3, 5), ("b", 2, 9),
    ]  # fmt: skip


def test_rows_without_an_aggregate_or_a_version_and_batches_without_the_columns_are_no_positions() -> None:
    positions = Positions(POSITION)
    positions.apply(positions_batch([(None, 4), ("a", None), ("b", 0)]), groups(1, 2, 3))
    positions.apply(pa.record_batch({"aggregate_id": pa.array(["c"])}), groups(1))
    assert positions.frozen() == {}


def test_positions_read_the_configured_columns_and_cast_the_aggregate_to_text() -> None:
    positions = Positions(PositionConfig(aggregate_column="account", version_column="seq"))
    batch = pa.record_batch({"account": pa.array([7], pa.int64()), "seq": pa.array([12], pa.int64())})
    positions.apply(batch, groups(0))
    assert positions.frozen() == {"7": 12}


def test_frozen_positions_are_a_copy() -> None:
    positions = Positions(POSITION)
    positions.apply(positions_batch([("a", 1)]), groups(0))
    frozen = positions.frozen()
    positions.apply(positions_batch([("a", 2), ("b", 1)]), groups(0, 0))
    assert frozen == {"a": 1}
    assert positions.frozen() == {"a": 2, "b": 1}


def test_keeping_key_groups_forgets_the_others_and_takes_over_the_newer_positions_of_those_kept() -> None:
    mine = Positions(POSITION)
    mine.apply(positions_batch([("a", 3), ("b", 2)]), groups(1, 2))
    previous_owner = Positions(POSITION)
    previous_owner.apply(positions_batch([("a", 7), ("c", 5), ("d", 4)]), groups(1, 1, 3))
    stale = Positions(POSITION)
    stale.apply(positions_batch([("a", 2)]), groups(1))

    mine.keep([1], [previous_owner.table(), stale.table()])

    assert mine.frozen() == {"a": 7, "c": 5}, "b's group 2 and d's group 3 are not kept; a@2 does not move a back"
    table = mine.table()
    assert dict(zip(table.column("aggregate").to_pylist(), table.column("_key_group").to_pylist(), strict=True)) == {
        "a": 1, "c": 1,
    }  # fmt: skip


# wanted positions


@pytest.mark.parametrize(
    ("token", "aggregate", "version"), [("acc-7@3", "acc-7", 3), ("ns@acc@12", "ns@acc", 12), ("a@0", "a", 0)]
)
def test_a_wanted_position_is_the_aggregate_before_the_last_at_and_its_version(
    token: str, aggregate: str, version: int
) -> None:
    wanted = WantedPosition.parse(token)
    assert (wanted.aggregate, wanted.version) == (aggregate, version)
    assert str(wanted) == token


@pytest.mark.parametrize("token", ["acc-7", "@3", "acc-7@", "acc-7@-1", "acc-7@x", "acc-7@3.5", ""])
def test_a_malformed_wanted_position_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="min_position"):
        WantedPosition.parse(token)


# queryable state: latest and committed


def test_latest_answers_what_is_applied_in_key_order() -> None:
    stage = Balances()
    stage.apply(OPENED, DEPOSITED, ("acc-2", 1, "Opened", 0))
    answer = stage.state.answer(["acc-2", "acc-9", "acc-1"], "latest", None, 0)
    assert answer.values == [balance(1, 0), None, balance(2, 500)]
    assert (answer.consistency, answer.reached, answer.applied_version) == ("latest", True, None)


def test_a_mode_the_view_does_not_offer_and_a_position_without_query_position_are_refused() -> None:
    stage = Balances(QueryConfig(view="balances", consistency=["latest"]))
    with pytest.raises(ValueError, match="committed"):
        stage.state.answer(["acc-1"], "committed", None, 0)
    with pytest.raises(ValueError, match=r"query\.position"):
        stage.state.answer(["acc-1"], "latest", WantedPosition("acc-1", 1), 0)


def test_committed_shows_an_epochs_state_only_once_the_epoch_completes() -> None:
    stage = Balances()
    stage.apply(OPENED)
    assert stage.committed("acc-1") == [None], "nothing is committed before a checkpoint completes"
    stage.state.prepare(1)
    stage.apply(DEPOSITED)
    assert stage.committed("acc-1") == [None], "epoch 1 has not completed"

    stage.state.commit(1)

    assert stage.committed("acc-1") == [balance(1, 0)], "what epoch 1's barrier froze, not what came after"
    assert stage.latest("acc-1") == [balance(2, 500)]


def test_committing_an_epoch_drops_the_older_epochs_prepared() -> None:
    stage = Balances()
    stage.apply(OPENED)
    stage.state.prepare(1)
    stage.apply(DEPOSITED)
    stage.state.prepare(2)
    stage.state.commit(2)
    assert stage.committed("acc-1") == [balance(2, 500)]

    stage.state.commit(1)  # late, or repeated: epoch 1's freeze went with epoch 2's commit
    assert stage.committed("acc-1") == [balance(2, 500)]
    stage.state.commit(7)  # never prepared: nothing to promote
    assert stage.committed("acc-1") == [balance(2, 500)]


def test_reset_makes_the_restored_state_the_committed_one_and_forgets_what_was_prepared() -> None:
    stage = Balances()
    stage.apply(OPENED)
    stage.state.prepare(5)
    stage.apply(DEPOSITED)

    stage.state.reset(4)
    reached = stage.state.answer(["acc-1"], "committed", WantedPosition("acc-1", 2), 0)
    assert reached.values == [balance(2, 500)]
    assert (reached.reached, reached.applied_version) == (True, 2), "the committed positions are reset with it"
    assert reached.epoch == 4

    stage.state.commit(5)
    assert stage.committed("acc-1") == [balance(2, 500)], "epoch 5's freeze is older than the restored state"


def test_a_committed_answer_names_the_checkpoint_it_is_of_and_a_latest_one_none() -> None:
    stage = Balances()
    stage.apply(OPENED)
    assert stage.state.answer(["acc-1"], "committed", None, 0).epoch is None, "no checkpoint known yet"
    stage.state.prepare(1)
    stage.state.commit(1)
    assert stage.state.answer(["acc-1"], "committed", None, 0).epoch == 1
    assert stage.state.answer(["acc-1"], "latest", None, 0).epoch is None


def test_a_reset_names_the_checkpoint_restored_or_none_when_not_known() -> None:
    stage = Balances()
    stage.state.reset(6)
    assert stage.state.answer(["acc-1"], "committed", None, 0).epoch == 6
    stage.state.reset(None)
    assert stage.state.answer(["acc-1"], "committed", None, 0).epoch is None


def test_a_position_not_applied_within_the_wait_answers_how_far_the_owner_is() -> None:
    stage = Balances()
    stage.apply(OPENED, DEPOSITED)
    answer = stage.state.answer(["acc-1"], "latest", WantedPosition("acc-1", 5), 0.01)
    assert (answer.reached, answer.applied_version) == (False, 2)
    assert answer.values == [balance(2, 500)], "the values are answered all the same"
    unknown = stage.state.answer(["acc-9"], "latest", WantedPosition("acc-9", 1), 0.01)
    assert (unknown.reached, unknown.applied_version, unknown.values) == (False, 0, [None])


def test_a_committed_read_your_writes_query_waits_for_the_commit_not_the_apply() -> None:
    stage = Balances()
    stage.apply(OPENED)
    wanted = WantedPosition("acc-1", 1)
    before = stage.state.answer(["acc-1"], "committed", wanted, 0.01)
    assert (before.reached, before.applied_version, before.values) == (False, 0, [None])
    assert stage.state.answer(["acc-1"], "latest", wanted, 0).reached

    stage.state.prepare(1)
    stage.state.commit(1)

    after = stage.state.answer(["acc-1"], "committed", wanted, 0)
    assert (after.reached, after.applied_version, after.values) == (True, 1, [balance(1, 0)])


class SignallingPositions(Positions):
    """Positions that say when a query has looked at them: the waiting query holds the condition's lock while it
    does, so a batch applied after the signal can only be applied once the query is waiting."""

    def __init__(self, config: PositionConfig) -> None:
        super().__init__(config)
        self.looked_at = threading.Event()

    def version(self, aggregate: str) -> int:
        self.looked_at.set()
        return super().version(aggregate)


def test_a_query_waiting_for_a_position_is_answered_when_another_thread_applies_it() -> None:
    stage = Balances()
    positions = stage.state.positions = SignallingPositions(POSITION)
    stage.apply(OPENED)
    happened: list[str] = []
    answers: list[Any] = []

    def query() -> None:
        answers.append(stage.state.answer(["acc-1"], "latest", WantedPosition("acc-1", 2), WAIT_S))
        happened.append("answered")

    started_s = time.monotonic()
    waiting = threading.Thread(target=query, daemon=True)
    waiting.start()
    assert positions.looked_at.wait(WAIT_S), "the query never looked at the positions"
    happened.append("applied")
    stage.apply(DEPOSITED)
    waiting.join(WAIT_S)
    waited_s = time.monotonic() - started_s

    assert not waiting.is_alive()
    assert happened == ["applied", "answered"]
    (answer,) = answers
    assert (answer.reached, answer.applied_version, answer.values) == (True, 2, [balance(2, 500)])
    assert waited_s < WAIT_S, "woken by the batch, not by the end of the wait"


# config: query and serve


def test_the_account_views_config_serves_its_stage_as_the_balances_view() -> None:
    assert VIEWS.query_views == {
        0: QueryConfig(view="balances", consistency=["latest", "committed"], position=POSITION)
    }
    assert (VIEWS.serve.port, VIEWS.serve.retry_bound_s, VIEWS.serve.position_wait_s) == (8095, 10.0, 5.0)


def with_keyed(data: dict[str, Any], keyed: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(data)
    changed["keyed"] = keyed
    return changed


@pytest.mark.parametrize(
    "keyed",
    [
        {"type": "upsert", "key": "aggregate_id"},
        {"type": "process", "key": "aggregate_id", "function": "pipelines.examples.account_views:AccountBalance"},
    ],
    ids=["upsert", "process"],
)
def test_an_upsert_or_process_stage_with_query_is_a_view_with_both_modes_by_default(keyed: dict[str, Any]) -> None:
    config = parse_config(with_keyed(account_views_data(), {**keyed, "query": {"view": "latest-rows"}}))
    assert config.query_views == {0: QueryConfig(view="latest-rows", consistency=["latest", "committed"])}
    assert config.query_views[0].position is None


def test_an_event_sourced_stage_with_query_is_a_view() -> None:
    data = accounts_data()
    data["keyed"]["query"] = {"view": "accounts", "consistency": ["committed"]}
    assert parse_config(data).query_views == {0: QueryConfig(view="accounts", consistency=["committed"])}


def test_a_pipeline_without_query_serves_no_view() -> None:
    assert parse_config(accounts_data()).query_views == {}


def test_query_on_a_dedup_stage_is_refused() -> None:
    keyed = {"type": "dedup", "id_column": "aggregate_id", "ttl_ms": 1_000, "query": {"view": "ids"}}
    assert "keyed.query" in config_error(with_keyed(account_views_data(), keyed))


def two_stages(first_view: str, second_view: str) -> dict[str, Any]:
    data = account_views_data()
    keyed = data.pop("keyed")
    second = copy.deepcopy(keyed)
    keyed["query"]["view"], second["query"]["view"] = first_view, second_view
    data["stages"] = [{"keyed": keyed}, {"keyed": second}]
    return data


def test_one_view_name_served_by_two_stages_is_refused() -> None:
    message = config_error(two_stages("balances", "balances"))
    assert "query.view" in message and "'balances'" in message


def test_two_stages_serve_two_views_by_stage_index() -> None:
    config = parse_config(two_stages("balances", "balances-again"))
    assert {index: query.view for index, query in config.query_views.items()} == {0: "balances", 1: "balances-again"}


@pytest.mark.parametrize("consistency", [["latest", "latest"], ["committed", "latest", "committed"], []])
def test_consistency_listing_a_mode_twice_or_none_is_refused(consistency: list[str]) -> None:
    data = account_views_data()
    data["keyed"]["query"]["consistency"] = consistency
    assert "keyed.query" in config_error(data)
    with pytest.raises(ValidationError, match="consistency"):
        QueryConfig.model_validate({"view": "v", "consistency": consistency})


def test_the_first_consistency_listed_is_kept_first() -> None:
    assert QueryConfig(view="v", consistency=["committed", "latest"]).consistency[0] == "committed"


@pytest.mark.parametrize("view", ["Balances", "1st", "", "with space", "a" * 64])
def test_a_view_name_outside_the_url_pattern_is_refused(view: str) -> None:
    data = account_views_data()
    data["keyed"]["query"]["view"] = view
    assert "keyed.query.view" in config_error(data)


@pytest.mark.parametrize(
    ("serve", "field"),
    [
        ({"retry_bound_s": 0}, "serve.retry_bound_s"),
        ({"position_wait_s": -1}, "serve.position_wait_s"),
        ({"port": 65_536}, "serve.port"),
        ({"host": ""}, "serve.host"),
        ({"retry_bound": 3}, "serve.retry_bound"),
    ],
)
def test_serve_settings_out_of_range_or_unknown_are_refused(serve: dict[str, Any], field: str) -> None:
    data = account_views_data()
    data["serve"] = serve
    assert field in config_error(data)


def test_serve_defaults() -> None:
    serve = ServeConfig()
    assert (serve.host, serve.port, serve.retry_bound_s, serve.position_wait_s) == ("127.0.0.1", 8095, 10.0, 5.0)
    assert parse_config({**account_views_data(), "serve": {"port": 0}}).serve.port == 0


# config: the metadata columns in a schema


@pytest.mark.parametrize("column", ["_partition", "_offset", "_key", "_traceparent", "_event_id"])
def test_a_field_named_as_a_metadata_column_is_refused_naming_it(column: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SchemaConfig(fields={"amount": "int64", column: "string", "t": "int64"}, event_time_field="t")
    assert f"['{column}']" in str(caught.value)


def test_a_timestamp_field_is_allowed_as_the_event_time_field_only() -> None:
    schema = VIEWS.schema_
    assert schema is not None and schema.event_time_field == "_timestamp" and "_timestamp" in schema.fields
    with pytest.raises(ValidationError) as caught:
        SchemaConfig(fields={"_timestamp": "int64", "t": "int64"}, event_time_field="t")
    assert "['_timestamp']" in str(caught.value)


def test_a_timestamp_field_beside_another_metadata_column_is_refused_naming_both() -> None:
    with pytest.raises(ValidationError) as caught:
        SchemaConfig(fields={"_timestamp": "int64", "_offset": "int64"}, event_time_field="_timestamp")
    assert "['_offset', '_timestamp']" in str(caught.value)


def test_a_metadata_column_other_than_timestamp_is_refused_as_the_event_time_field() -> None:
    with pytest.raises(ValidationError) as caught:
        SchemaConfig(fields={"_partition": "int64"}, event_time_field="_partition")
    assert "_partition" in str(caught.value)


def test_parse_config_names_the_schema_field_path_of_a_metadata_column() -> None:
    data = account_views_data()
    data["schema"]["fields"]["_partition"] = "int64"
    message = config_error(data)
    assert "schema" in message and "_partition" in message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["keyed"]["query"]["position"].update(aggregate_column="nope"), "position.aggregate_column"),
        (lambda d: d["schema"]["fields"].update(version="string"), "position.version_column"),
        (lambda d: d["keyed"]["query"]["position"].update(version_column="absent"), "position.version_column"),
    ],
)
def test_read_your_writes_positions_name_integer_columns_of_the_stage_or_the_config_is_refused(
    change: Callable[[dict[str, Any]], None], field: str
) -> None:
    data = yaml.safe_load(ACCOUNT_VIEWS_YAML.read_text(encoding="utf-8"))
    change(data)
    with pytest.raises(ConfigError) as refused:
        compile_pipeline(parse_config(data))
    assert f"keyed.query.{field}" in str(refused.value)
