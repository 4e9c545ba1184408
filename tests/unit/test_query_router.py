"""The CQRS request side in cluster/cqrs without Ray or Kafka: the key-group routing of queries (it must agree
with the shuffle's), the query router driven with fake owner actors (statuses, retries through a dead owner's
replacement, the 503 past the retry bound), and the command gateway's pure parts (what it needs of a pipeline,
its reply, matching a reply row to the command waiting for it)."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
import ray
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.control.remote import QUERY_GROUP
from cluster.cqrs.gateway import CommandGateway, Reply, _Waiting, aggregate_of
from cluster.cqrs.rebuild import rebuild_config
from cluster.cqrs.router import Lookup, QueryError, QueryRouter, SwitchRefused, served_as
from cluster.cqrs.routing import StageOwners, ViewTable
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.config.query import Consistency
from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError
from pipelines.examples.account_views import ACCOUNT_VIEWS_YAML, account_views_on_kafka
from pipelines.examples.accounts import ACCOUNTS_YAML, accounts_on_kafka
from pipelines.state.event_sourced import EventSourced
from pipelines.state.keygroups import KeyGroupRouter, assign_key_groups, owner_of_group
from pipelines.state.queryable import KeyedValues, ViewAnswer

BOUND_S = 0.3  # serve.retry_bound_s of the router under test: the 503 path takes this long
PATIENT_S = 30.0  # a bound no test should reach: reaching it means the router missed a new table
START_MS = 1_767_225_600_000
TEXT = pa.string()


def views_config(retry_bound_s: float = BOUND_S, position: bool = True, key_type: str = "string") -> PipelineConfig:
    data: dict[str, Any] = yaml.safe_load(ACCOUNT_VIEWS_YAML.read_text(encoding="utf-8"))
    data["serve"] = {"retry_bound_s": retry_bound_s, "position_wait_s": 0.5}
    data["schema"]["fields"]["aggregate_id"] = key_type
    if not position:
        data["keyed"]["query"].pop("position")
    return parse_config(data)


MAX_KEY_GROUPS = views_config().runtime.max_key_groups
OWNER_OF_GROUP = tuple(owner_of_group(assign_key_groups(MAX_KEY_GROUPS, 2), MAX_KEY_GROUPS))


# routing: the router's key groups are the shuffle's


def shuffle_owners(keys: list[Any], key_type: pa.DataType, owners: tuple[int, ...]) -> list[int]:
    """The owner the shuffle sends each key's rows to."""
    batch = pa.record_batch({"k": pa.array(keys, key_type)})
    return [owners[group] for group in KeyGroupRouter("k", len(owners), owners).key_groups(batch).tolist()]


def stage_owners(actors: int, max_key_groups: int) -> StageOwners:
    groups = owner_of_group(assign_key_groups(max_key_groups, actors), max_key_groups)
    return StageOwners(tuple(f"actor-{index}" for index in range(actors)), tuple(groups))


texts = st.text(st.characters(codec="utf-8"), max_size=20)  # UTF-8 encodable, as keys arrive in a URL


@settings(max_examples=200, deadline=None)
@given(st.lists(texts, min_size=1, max_size=40), st.integers(1, 8), st.sampled_from([8, 128, 1000]))
def test_a_text_key_is_asked_of_the_actor_the_shuffle_sent_its_rows_to(
    keys: list[str], actors: int, max_key_groups: int
) -> None:
    owners = stage_owners(actors, max_key_groups)
    assert [owners.owner_index(key) for key in keys] == shuffle_owners(keys, TEXT, owners.owner_of_group)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40), st.integers(1, 8))
def test_an_int64_key_written_as_its_text_is_asked_of_the_actor_the_shuffle_sent_its_rows_to(
    keys: list[int], actors: int
) -> None:
    owners = stage_owners(actors, MAX_KEY_GROUPS)
    routed = [owners.owner_index(str(key)) for key in keys]
    assert routed == shuffle_owners(keys, pa.int64(), owners.owner_of_group)


@settings(max_examples=100, deadline=None)
@given(st.lists(texts, min_size=1, max_size=40), st.integers(1, 6))
def test_split_gives_each_owner_the_positions_of_the_rows_the_shuffle_gives_it_in_order(
    keys: list[str], actors: int
) -> None:
    owners = stage_owners(actors, MAX_KEY_GROUPS)
    split = owners.split(keys)
    shuffled = KeyGroupRouter("k", MAX_KEY_GROUPS, owners.owner_of_group).split(pa.record_batch({"k": keys}))
    assert {index: [keys[p] for p in positions] for index, positions in split.items()} == {
        index: part.column("k").to_pylist() for index, part in shuffled.items()
    }
    assert sorted(p for positions in split.values() for p in positions) == list(range(len(keys)))


# the query router, with fake owners


class FakeQuery:
    """``actor.query`` of a fake owner: ``.options(concurrency_group=...)`` then ``.remote(...)``, as Ray's."""

    def __init__(self, owner: FakeOwner, concurrency_group: str | None = None) -> None:
        self._owner = owner
        self._group = concurrency_group

    def options(self, concurrency_group: str) -> FakeQuery:
        return FakeQuery(self._owner, concurrency_group)

    def remote(
        self, keys: list[str], mode: str, position: str | None, wait_s: float
    ) -> Coroutine[Any, Any, ViewAnswer]:
        self._owner.groups.append(self._group)
        self._owner.waits.append(wait_s)
        return self._owner.answer(keys, mode, position)


class FakeAlive:
    """``actor.alive`` of a fake owner: ``.remote()`` answers, or raises as a dead actor's call does."""

    def __init__(self, dead: bool) -> None:
        self._dead = dead

    async def remote(self) -> bool:
        if self._dead:
            raise ray.exceptions.RayActorError()
        return True


class FakeOwner:
    """An aggregate actor of the ``balances`` stage as the router sees it: it answers from the values it holds
    (read as an owner reads them), or fails as ``fails_with`` says (a dead actor: ``RayActorError``)."""

    def __init__(
        self,
        values: dict[Any, Any] | None = None,
        key_type: pa.DataType = TEXT,
        fails_with: BaseException | None = None,
        reached: bool = True,
        applied_version: int | None = None,
        epoch: int | None = None,
    ) -> None:
        encoded = {key: msgspec.msgpack.encode(value) for key, value in (values or {}).items()}
        self._reader = KeyedValues(encoded, key_type)
        self._fails_with = fails_with
        self._reached = reached
        self._applied_version = applied_version
        self._epoch = epoch
        self.calls: list[tuple[list[str], str, str | None]] = []
        self.groups: list[str | None] = []
        self.waits: list[float] = []
        self.called = asyncio.Event()

    @property
    def query(self) -> FakeQuery:
        return FakeQuery(self)

    @property
    def alive(self) -> FakeAlive:
        return FakeAlive(isinstance(self._fails_with, ray.exceptions.RayActorError))

    async def answer(self, keys: list[str], mode: str, position: str | None) -> ViewAnswer:
        self.calls.append((keys, mode, position))
        self.called.set()
        if self._fails_with is not None:
            raise self._fails_with
        consistency: Consistency = "committed" if mode == "committed" else "latest"
        epoch = self._epoch if consistency == "committed" else None
        return ViewAnswer(self._reader.values(keys), consistency, self._reached, self._applied_version, epoch)


def dead() -> FakeOwner:
    return FakeOwner(fails_with=ray.exceptions.RayActorError())


def table(generation: int, *owners: FakeOwner, pipeline: str = "account-views") -> ViewTable:
    groups = owner_of_group(assign_key_groups(MAX_KEY_GROUPS, len(owners)), MAX_KEY_GROUPS)
    return ViewTable(generation, {"balances": StageOwners(owners, tuple(groups))}, pipeline)


ACCOUNTS = [f"acc-{index:05d}" for index in range(12)]


def placed(keys: list[str]) -> list[dict[str, Any]]:
    """Each key's balance (its index) at the one of two owners the shuffle placed it on."""
    held: list[dict[str, Any]] = [{}, {}]
    for index, (key, owner) in enumerate(zip(keys, shuffle_owners(keys, TEXT, OWNER_OF_GROUP), strict=True)):
        held[owner][key] = {"balance_cents": index}
    return held


async def test_values_come_back_in_key_order_from_the_owners_of_their_key_groups() -> None:
    first_held, second_held = placed(ACCOUNTS)
    assert first_held and second_held, "the accounts are on both owners"
    first, second = FakeOwner(first_held), FakeOwner(second_held)
    router = QueryRouter(views_config())
    await router.update(table(1, first, second))
    keys = [*reversed(ACCOUNTS), "acc-missing"]

    found = await router.lookup("balances", keys)

    assert found.values == [{"balance_cents": ACCOUNTS.index(key)} for key in reversed(ACCOUNTS)] + [None]
    assert (found.view, found.keys, found.consistency, found.position) == ("balances", keys, "latest", None)
    assert len(first.calls) == len(second.calls) == 1, "one call per owner"
    assert {*first.calls[0][0], *second.calls[0][0]} == set(keys)
    assert set(first.calls[0][0]).isdisjoint(second_held) and set(second.calls[0][0]).isdisjoint(first_held)
    assert first.groups == second.groups == [QUERY_GROUP], "queries run beside batches, not behind them"
    assert (router.retries, router.unavailable) == (0, 0)


async def test_a_committed_lookup_says_per_key_which_checkpoint_its_owner_answered_from() -> None:
    first_held, second_held = placed(ACCOUNTS)
    router = QueryRouter(views_config())
    await router.update(table(1, FakeOwner(first_held, epoch=4), FakeOwner(second_held, epoch=5)))

    committed = await router.lookup("balances", ACCOUNTS, "committed")
    latest = await router.lookup("balances", ACCOUNTS, "latest")

    assert committed.consistency == "committed"
    assert committed.epochs == [4 if key in first_held else 5 for key in ACCOUNTS]
    assert committed.batch()["epochs"] == committed.epochs
    assert latest.epochs is None and "epochs" not in latest.batch()


async def test_an_unknown_view_is_404_and_asks_no_owner() -> None:
    owner = FakeOwner()
    router = QueryRouter(views_config())
    await router.update(table(1, owner))
    with pytest.raises(QueryError) as caught:
        await router.lookup("balance", ["acc-1"])
    assert caught.value.status == 404 and "balances" in str(caught.value)
    assert owner.calls == []


@pytest.mark.parametrize(
    ("keys", "consistency", "min_position", "names"),
    [
        (["acc-1"], "strong", None, "strong"),
        (["acc-1", "acc-2"], None, "acc-1@1", "min_position"),
        (["acc-1"], None, "acc-1", "min_position"),
        (["acc-1"], None, "acc-1@x", "min_position"),
        (["acc-1"], None, "@3", "min_position"),
    ],
    ids=["unknown consistency", "min_position on a batch", "no version", "version not a number", "no aggregate"],
)
async def test_a_bad_query_is_400_and_asks_no_owner(
    keys: list[str], consistency: str | None, min_position: str | None, names: str
) -> None:
    owner = FakeOwner()
    router = QueryRouter(views_config())
    await router.update(table(1, owner))
    with pytest.raises(QueryError) as caught:
        await router.lookup("balances", keys, consistency, min_position)
    assert caught.value.status == 400 and names in str(caught.value)
    assert owner.calls == []


async def test_min_position_on_a_view_without_query_position_is_400() -> None:
    router = QueryRouter(views_config(position=False))
    await router.update(table(1, FakeOwner()))
    with pytest.raises(QueryError) as caught:
        await router.lookup("balances", ["acc-1"], None, "acc-1@1")
    assert caught.value.status == 400 and "query.position" in str(caught.value)


async def test_a_reached_position_is_answered_with_it() -> None:
    owner = FakeOwner({"acc-1": {"balance_cents": 5}}, reached=True, applied_version=6)
    router = QueryRouter(views_config())
    await router.update(table(1, owner))

    found = await router.lookup("balances", ["acc-1"], "latest", "acc-1@5")

    assert owner.calls == [(["acc-1"], "latest", "acc-1@5")], "the owner is the one that waits"
    assert found.position == "acc-1@5"
    assert found.point() == {"view": "balances", "key": "acc-1", "found": True, "value": {"balance_cents": 5},
                             "consistency": "latest", "position": "acc-1@5"}  # fmt: skip


async def test_a_position_the_owner_did_not_reach_is_504_with_the_wanted_and_the_applied_version() -> None:
    router = QueryRouter(views_config())
    await router.update(table(1, FakeOwner({"acc-1": {"balance_cents": 5}}, reached=False, applied_version=3)))
    with pytest.raises(QueryError) as caught:
        await router.lookup("balances", ["acc-1"], None, "acc-1@5")
    assert caught.value.status == 504
    assert caught.value.detail == {"wanted": "acc-1@5", "applied": 3}
    assert caught.value.as_json()["wanted"] == "acc-1@5" and caught.value.as_json()["applied"] == 3


async def test_with_no_owners_pushed_a_query_is_503_after_the_retry_bound() -> None:
    router = QueryRouter(views_config())
    started_s = time.monotonic()
    with pytest.raises(QueryError) as caught:
        await router.lookup("balances", ["acc-1"])
    waited_s = time.monotonic() - started_s

    assert caught.value.status == 503 and caught.value.retry_after_s == 1.0
    assert waited_s >= BOUND_S, "it retried up to the bound before answering 503"
    assert router.unavailable == 1 and router.retries > 0
    assert await router.stats() == {"retries": router.retries, "unavailable": 1}


async def test_a_suspended_router_holds_queries_until_the_bound() -> None:
    owner = FakeOwner({"acc-1": 1})
    router = QueryRouter(views_config())
    await router.update(table(1, owner))
    await router.suspend()
    with pytest.raises(QueryError) as caught:
        await router.lookup("balances", ["acc-1"])
    assert caught.value.status == 503 and owner.calls == []


# rebuilds: a second pipeline's owners stand by until the view is switched to them


REBUILD = "account-views-rebuild-1"


async def test_a_rebuild_standing_by_is_not_asked_until_the_view_is_switched_to_it() -> None:
    serving, rebuilt = FakeOwner({"acc-1": {"balance_cents": 1}}), FakeOwner({"acc-1": {"balance_cents": 2}})
    router = QueryRouter(views_config())
    await router.update(table(1, serving))
    await router.update(table(1, rebuilt, pipeline=REBUILD), claim=False)

    before = await router.lookup("balances", ["acc-1"])
    switched = await router.switch("balances", REBUILD)
    after = await router.lookup("balances", ["acc-1"])

    assert before.values == [{"balance_cents": 1}] and after.values == [{"balance_cents": 2}]
    assert switched == ("account-views", ["balances"]) and await router.serving() == {"balances": REBUILD}
    assert len(serving.calls) == 1 and len(rebuilt.calls) == 1


async def test_a_query_waiting_out_a_recovery_is_answered_by_the_rebuild_switched_to_meanwhile() -> None:
    rebuilt = FakeOwner({"acc-1": {"balance_cents": 2}})
    router = QueryRouter(views_config(retry_bound_s=PATIENT_S))
    await router.update(table(1, FakeOwner()))
    await router.update(table(1, rebuilt, pipeline=REBUILD), claim=False)
    await router.suspend("account-views")
    asking = asyncio.create_task(router.lookup("balances", ["acc-1"]))
    for _ in range(int(PATIENT_S / 0.01)):  # until the query is waiting for owners
        if router.retries:
            break
        await asyncio.sleep(0.01)
    assert router.retries > 0

    await router.switch("balances", REBUILD)

    assert (await asyncio.wait_for(asking, PATIENT_S)).values == [{"balance_cents": 2}]


async def test_the_pipeline_switched_from_does_not_take_the_view_back_when_it_publishes_again() -> None:
    old, rebuilt = FakeOwner({"acc-1": 1}), FakeOwner({"acc-1": 2})
    router = QueryRouter(views_config())
    await router.update(table(1, old))
    await router.update(table(1, rebuilt, pipeline=REBUILD), claim=False)
    await router.switch("balances", REBUILD)

    await router.update(table(2, old))  # its recovery, or a rescale, after the switch

    assert (await router.lookup("balances", ["acc-1"])).values == [2] and old.calls == []


async def test_a_switch_moves_every_view_of_the_replaced_pipeline_that_the_rebuild_publishes_at_once() -> None:
    router = QueryRouter(views_config())

    def both(pipeline: str, owner: FakeOwner) -> ViewTable:
        owners = table(1, owner).views["balances"]
        return ViewTable(1, {"balances": owners, "ledger": owners}, pipeline)

    assert await router.update(both("account-views", FakeOwner())) == ["balances", "ledger"]
    assert await router.update(both(REBUILD, FakeOwner()), claim=False) == [], "it stands by"

    assert await router.switch("balances", REBUILD) == ("account-views", ["balances", "ledger"])
    assert await router.update(both("account-views", FakeOwner())) == [], "the replaced pipeline serves nothing"


async def test_a_claim_takes_a_view_from_a_pipeline_whose_owners_died_and_not_from_a_live_or_recovering_one() -> None:
    router = QueryRouter(views_config())
    await router.update(table(1, FakeOwner()))
    await router.update(table(1, FakeOwner(), pipeline=REBUILD), claim=False)
    await router.switch("balances", REBUILD)

    assert await router.update(table(2, FakeOwner())) == [], "the rebuild's owners live: it keeps the view"
    await router.suspend(REBUILD)
    assert await router.update(table(3, FakeOwner())) == [], "a recovering rebuild keeps it too"

    await router.update(table(2, dead(), pipeline=REBUILD), claim=False)  # its driver was killed, say
    answer = FakeOwner({"acc-1": 7})
    assert await router.update(table(4, answer)) == ["balances"], "the pipeline run again takes it back"
    assert (await router.lookup("balances", ["acc-1"])).values == [7]


async def test_a_suspension_after_a_withdrawal_leaves_nothing_behind() -> None:
    router = QueryRouter(views_config())
    await router.update(table(1, FakeOwner()))
    assert await router.withdraw("account-views") is True
    await router.suspend("account-views")  # a late one, from a topology that failed as the run ended
    assert await router.withdraw(REBUILD) is True, "the router is free: no table is left on it"


@pytest.mark.parametrize("published", [None, "standing by without the view"])
async def test_a_switch_to_a_pipeline_that_publishes_no_owners_of_the_view_is_refused(published: str | None) -> None:
    router = QueryRouter(views_config())
    await router.update(table(1, FakeOwner()))
    if published is not None:
        await router.update(ViewTable(1, {}, REBUILD), claim=False)
    with pytest.raises(SwitchRefused, match="publishes no owners"):
        await router.switch("balances", REBUILD)
    with pytest.raises(SwitchRefused, match="this router serves"):
        await router.switch("no-such-view", "account-views")
    assert await router.serving() == {"balances": "account-views"}


async def test_a_withdrawn_view_waits_for_a_pipeline_to_claim_it_and_the_last_withdrawal_frees_the_router() -> None:
    router = QueryRouter(views_config())
    await router.update(table(1, FakeOwner({"acc-1": 1})))
    await router.update(table(1, FakeOwner({"acc-1": 2}), pipeline=REBUILD), claim=False)

    assert await router.withdraw("account-views") is False, "the rebuild still publishes"
    assert await router.serving() == {"balances": None}
    with pytest.raises(QueryError) as caught:
        await router.lookup("balances", ["acc-1"])
    assert caught.value.status == 503
    assert await router.withdraw(REBUILD) is True


def test_a_router_made_with_another_view_or_port_is_told_apart_from_this_config() -> None:
    config = views_config()
    moved = parse_config({**config.model_dump(mode="json", by_alias=True), "serve": {"port": 9999}})
    assert served_as(config) == served_as(views_config())
    assert served_as(moved) != served_as(config)


# rebuild_config: the rebuild is the pipeline under another name, group and checkpoint location


def rebuildable(tmp_path: Path) -> PipelineConfig:
    return parse_config(account_views_on_kafka("account-views", "localhost:9092", "account-events", tmp_path))


def test_a_rebuild_reads_from_the_start_in_its_own_group_and_publishes_to_the_router_serving_the_view(
    tmp_path: Path,
) -> None:
    config = rebuildable(tmp_path)
    rebuild = rebuild_config(config, "balances", "20261207")

    assert rebuild.name == "account-views-rebuild-20261207"
    assert rebuild.group_id == "account-views-rebuild-20261207" and config.group_id == "account-views"
    assert rebuild.source is not None and rebuild.source.start == "earliest"  # type: ignore[union-attr]
    assert rebuild.serve.rebuild_of == "account-views" and rebuild.checkpoint == config.checkpoint
    assert rebuild.query_views == config.query_views
    assert rebuild.runtime.duration_s is None and rebuild.runtime.max_events is None, "it runs until stopped"
    assert rebuild.dead_letter.path == f"{config.dead_letter.path}-rebuild-20261207"  # type: ignore[union-attr]
    again = rebuild_config(rebuild, "balances", "20261208")
    assert again.serve.rebuild_of == "account-views", "a rebuild of a rebuild publishes to the same router"
    assert len(rebuild_config(config.model_copy(update={"name": "v" * 63}), "balances", "1").name) == 63


def test_a_rebuild_keeps_secrets_and_writes_its_file_sinks_apart_from_the_running_pipeline(tmp_path: Path) -> None:
    data = account_views_on_kafka("account-views", "localhost:9092", "account-events", tmp_path)
    data["kafka"].update(security_protocol="SASL_PLAINTEXT", allow_plaintext_sasl=True,
                         sasl={"mechanism": "PLAIN", "username": "views", "password": "s3cret"})  # fmt: skip
    data["source"].update(start="timestamp", start_timestamp_ms=START_MS)
    data["sinks"] = [{"type": "jsonl", "path": str(tmp_path / "out")}, {"type": "console"}]
    rebuild = rebuild_config(parse_config(data), "balances", "7")

    assert rebuild.kafka is not None and rebuild.kafka.sasl is not None and rebuild.kafka.sasl.password is not None
    assert rebuild.kafka.sasl.password.get_secret_value() == "s3cret"
    assert rebuild.source.start == "earliest" and rebuild.source.start_timestamp_ms is None  # type: ignore[union-attr]
    assert rebuild.sinks[0].path == f"{tmp_path / 'out'}-rebuild-7"  # type: ignore[union-attr]


def test_a_rebuild_of_a_view_the_pipeline_does_not_serve_names_the_views_it_does(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"serves no view 'ledger': its views are \['balances'\]"):
        rebuild_config(rebuildable(tmp_path), "ledger", "1")


def test_a_rebuild_needs_kafka_inputs_and_checkpoints(tmp_path: Path) -> None:
    config = rebuildable(tmp_path)
    with pytest.raises(ConfigError, match="checkpoint"):
        rebuild_config(config.model_copy(update={"checkpoint": None}), "balances", "1")
    data = config.model_dump(mode="json", by_alias=True)
    data["source"] = {"type": "file", "paths": [str(tmp_path / "events.jsonl")]}
    with pytest.raises(ConfigError, match=r"every input must be a kafka source \(this pipeline reads \['file'\]\)"):
        rebuild_config(parse_config(data), "balances", "1")


async def test_a_dead_owner_replaced_by_a_new_table_during_the_retries_is_answered_by_its_replacement() -> None:
    router = QueryRouter(views_config(retry_bound_s=PATIENT_S))
    gone, replacement = dead(), FakeOwner({"acc-1": {"balance_cents": 7}})
    await router.update(table(1, gone))
    asking = asyncio.create_task(router.lookup("balances", ["acc-1"]))
    await asyncio.wait_for(gone.called.wait(), PATIENT_S)

    await router.update(table(2, replacement))
    found = await asyncio.wait_for(asking, PATIENT_S)

    assert found.values == [{"balance_cents": 7}]
    assert replacement.calls == [(["acc-1"], "latest", None)]
    assert router.retries > 0 and router.unavailable == 0


async def test_a_dead_owner_never_replaced_is_retried_then_503() -> None:
    gone = dead()
    router = QueryRouter(views_config())
    await router.update(table(1, gone))
    with pytest.raises(QueryError) as caught:
        await router.lookup("balances", ["acc-1"])
    assert caught.value.status == 503
    assert len(gone.calls) > 1 and router.unavailable == 1


async def test_an_owner_that_fails_without_dying_is_500_at_once() -> None:
    failing = FakeOwner(fails_with=ray.exceptions.RayTaskError("query", "Traceback ...", ValueError("no view")))
    router = QueryRouter(views_config(retry_bound_s=PATIENT_S))
    await router.update(table(1, failing))
    with pytest.raises(QueryError) as caught:
        await router.lookup("balances", ["acc-1"])
    assert caught.value.status == 500
    assert len(failing.calls) == 1 and router.retries == 0


async def test_an_int64_key_written_with_a_leading_zero_is_asked_of_its_owner() -> None:
    owners = shuffle_owners([7], pa.int64(), OWNER_OF_GROUP)
    held: list[dict[Any, Any]] = [{}, {}]
    held[owners[0]][7] = {"balance_cents": 7}
    router = QueryRouter(views_config(key_type="int64"))
    await router.update(table(1, FakeOwner(held[0], pa.int64()), FakeOwner(held[1], pa.int64())))
    assert (await router.lookup("balances", ["7"])).values == [{"balance_cents": 7}]
    assert (await router.lookup("balances", ["007"])).values == [{"balance_cents": 7}]
    assert (await router.lookup("balances", ["seven"])).values == [None], "no int64: no key, no owner asked"


# the router's answers as HTTP and Arrow


async def test_http_answers_carry_the_status_and_a_503_its_retry_after() -> None:
    router = QueryRouter(views_config())
    unknown = await router._http_point(point_request("nope", "acc-1"))
    unavailable = await router._http_point(point_request("balances", "acc-1"))

    assert unknown.status == 404 and "error" in json_body(unknown)
    assert unavailable.status == 503 and unavailable.headers["Retry-After"] == "1"


async def test_an_http_point_query_answers_found_and_value() -> None:
    router = QueryRouter(views_config())
    await router.update(table(1, FakeOwner({"acc-1": {"balance_cents": 3}})))
    found = json_body(await router._http_point(point_request("balances", "acc-1")))
    missing = json_body(await router._http_point(point_request("balances", "acc-2")))
    assert (found["found"], found["value"]) == (True, {"balance_cents": 3})
    assert (missing["found"], missing["value"]) == (False, None)


def point_request(view: str, key: str) -> web.Request:
    return make_mocked_request("GET", f"/views/{view}/{key}", match_info={"view": view, "key": key})


def json_body(response: web.Response) -> dict[str, Any]:
    assert isinstance(response.body, bytes)
    body: dict[str, Any] = msgspec.json.decode(response.body)
    return body


def arrow_of(lookup: Lookup) -> pa.Table:
    return pa.ipc.open_stream(lookup.arrow()).read_all()


def test_an_arrow_answer_has_each_keys_found_and_value_as_json_text() -> None:
    answer = arrow_of(Lookup("balances", ["a", "b"], [{"balance_cents": 1}, None], "latest"))
    assert answer.column("key").to_pylist() == ["a", "b"]
    assert answer.column("found").to_pylist() == [True, False]
    assert answer.column("value").to_pylist() == ['{"balance_cents":1}', None]


def test_an_arrow_answer_that_found_nothing_has_the_same_schema_as_one_that_found_something() -> None:
    found = arrow_of(Lookup("balances", ["a"], [{"balance_cents": 1}], "latest"))
    nothing = arrow_of(Lookup("balances", ["b"], [None], "latest"))
    assert nothing.schema == found.schema


def test_a_query_error_survives_a_pickle_round_trip() -> None:
    error = QueryError(status=504, message="not applied", wanted="acc-1@5", applied=3)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.status, str(copy), copy.detail) == (504, "not applied", {"wanted": "acc-1@5", "applied": 3})


# the command gateway


def accounts_on_kafka_config(tmp_path: Path) -> PipelineConfig:
    return parse_config(accounts_on_kafka("accounts", "127.0.0.1:9", "cmds", tmp_path))


def test_the_gateway_takes_an_event_sourced_pipeline_reading_kafka(tmp_path: Path) -> None:
    aggregate = aggregate_of(accounts_on_kafka_config(tmp_path), "bank")
    assert (aggregate.name, aggregate.commands_topic, aggregate.replies_topic) == ("bank", "cmds", "accounts.replies")
    assert (aggregate.key, aggregate.command_id_column, aggregate.time_column) == (
        "aggregate_id", "command_id", "issued_ms",
    )  # fmt: skip
    assert aggregate_of(accounts_on_kafka_config(tmp_path)).name == "accounts", "named as the pipeline by default"


def test_the_gateway_refuses_a_pipeline_that_is_not_event_sourced(tmp_path: Path) -> None:
    views = parse_config(account_views_on_kafka("views", "127.0.0.1:9", "events", tmp_path))
    with pytest.raises(ConfigError, match="event_sourced") as caught:
        aggregate_of(views)
    assert "'views'" in str(caught.value)


def test_the_gateway_refuses_an_event_sourced_pipeline_not_reading_kafka() -> None:
    data: dict[str, Any] = yaml.safe_load(ACCOUNTS_YAML.read_text(encoding="utf-8"))
    with pytest.raises(ConfigError, match="Kafka") as caught:
        aggregate_of(parse_config(data))
    assert "'accounts'" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "version", "first_version", "duplicate", "events"),
    [
        ("accepted", 5, 3, False, 3),
        ("accepted", 1, 1, False, 1),
        ("accepted", 5, 3, True, 0),
        ("accepted", 4, None, False, 0),
        ("rejected", 4, None, False, 0),
    ],
    ids=["three events", "one event", "a duplicate", "no events decided", "rejected"],
)
def test_a_reply_counts_the_events_its_command_stored(
    status: str, version: int, first_version: int | None, duplicate: bool, events: int
) -> None:
    reply = Reply(status, version, first_version, None, duplicate, "c1", "acc-7")
    assert reply.events == events
    assert reply.read_token == f"acc-7@{version}"
    assert reply.body() == {"status": status, "version": version, "first_version": first_version, "events": events,
                            "reason": None, "duplicate": duplicate, "command_id": "c1",
                            "read_token": f"acc-7@{version}"}  # fmt: skip


def decided_rows(config: PipelineConfig, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the accounts pipeline writes for ``commands``: events, then the reply, per command."""
    assert isinstance(config.keyed, EventSourcedConfig)
    output = EventSourced.from_config(config.keyed).add(pa.RecordBatch.from_pylist(commands)).output
    assert output is not None
    rows: list[dict[str, Any]] = output.to_pylist()
    return rows


def account_command(command_id: str, kind: str, amount: int | None = None) -> dict[str, Any]:
    return {"aggregate_id": "acc-7", "command_id": command_id, "expected_version": None, "command_type": kind,
            "amount_cents": amount, "issued_ms": START_MS, "_timestamp": START_MS}  # fmt: skip


async def test_a_reply_row_resolves_the_command_waiting_for_it_and_other_rows_resolve_nothing(tmp_path: Path) -> None:
    config = accounts_on_kafka_config(tmp_path)
    gateway = CommandGateway({"accounts": config})
    rows = decided_rows(config, [account_command("c1", "Open"), account_command("c2", "Deposit", 500),
                                 account_command("c3", "Withdraw", 900)])  # fmt: skip
    loop = asyncio.get_running_loop()
    waiting = {command_id: loop.create_future() for command_id in ("c2", "c3", "c4")}
    other_account: asyncio.Future[Reply] = loop.create_future()
    gateway._pending.update(
        {("accounts", "acc-7", command_id): _Waiting(reply) for command_id, reply in waiting.items()}
    )
    gateway._pending[("accounts", "acc-8", "c2")] = _Waiting(other_account)
    accounts = gateway._aggregates["accounts"]

    for row in rows:
        gateway._resolve(accounts, msgspec.json.encode(row))
    for noise in (None, b"not json", b"[1, 2]", msgspec.json.encode({"command_id": "c4", "aggregate_id": "acc-7"})):
        gateway._resolve(accounts, noise)

    deposited, refused = waiting["c2"].result(), waiting["c3"].result()
    assert (deposited.status, deposited.version, deposited.first_version, deposited.events) == ("accepted", 2, 2, 1)
    assert deposited.read_token == "acc-7@2" and deposited.command_id == "c2"
    assert (refused.status, refused.version, refused.events) == ("rejected", 2, 0)
    assert refused.reason is not None and "insufficient funds" in refused.reason
    assert not waiting["c4"].done(), "a row without a status is no reply"
    assert not other_account.done(), "the same command id for another account is another command"


async def test_a_second_reply_to_a_command_already_answered_is_ignored(tmp_path: Path) -> None:
    config = accounts_on_kafka_config(tmp_path)
    gateway = CommandGateway({"accounts": config})
    (reply_row,) = [row for row in decided_rows(config, [account_command("c1", "Open")]) if row["status"]]
    waiting: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    gateway._pending[("accounts", "acc-7", "c1")] = _Waiting(waiting)
    accounts = gateway._aggregates["accounts"]

    gateway._resolve(accounts, msgspec.json.encode(reply_row))
    gateway._resolve(accounts, msgspec.json.encode({**reply_row, "duplicate": True, "version": 9}))

    assert (waiting.result().version, waiting.result().duplicate) == (1, False)


async def test_point_queries_arriving_while_a_call_is_in_flight_go_to_their_owner_together() -> None:
    first_held, second_held = placed(ACCOUNTS)
    first, second = FakeOwner(first_held), FakeOwner(second_held)
    router = QueryRouter(views_config())
    await router.update(table(1, first, second))
    queries = [ACCOUNTS[index % len(ACCOUNTS)] for index in range(60)]

    found = await asyncio.gather(*(router.lookup("balances", [key]) for key in queries))

    expected = {**first_held, **second_held}
    assert [lookup.values[0] for lookup in found] == [expected[key] for key in queries]
    calls = len(first.calls) + len(second.calls)
    assert calls < len(queries), f"{len(queries)} queries took {calls} owner calls: they were gathered"
    assert router.gathered_calls == calls


async def test_queries_waiting_for_a_position_are_asked_alone() -> None:
    first_held, second_held = placed(ACCOUNTS)
    first, second = FakeOwner(first_held, applied_version=1), FakeOwner(second_held, applied_version=1)
    router = QueryRouter(views_config())
    await router.update(table(1, first, second))

    await asyncio.gather(*(router.lookup("balances", [key], min_position=f"{key}@1") for key in ACCOUNTS))

    assert len(first.calls) + len(second.calls) == len(ACCOUNTS)
    assert all(position is not None and len(keys) == 1 for keys, _, position in first.calls + second.calls)


async def test_a_cancelled_query_does_not_hold_the_others_gathered_with_it() -> None:
    first_held, second_held = placed(ACCOUNTS)
    first, second = FakeOwner(first_held), FakeOwner(second_held)
    router = QueryRouter(views_config())
    await router.update(table(1, first, second))
    keys = [key for key in ACCOUNTS if key in first_held][:3]
    lookups = [asyncio.ensure_future(router.lookup("balances", [key])) for key in keys * 4]
    lookups[1].cancel()  # a client gone while its query waits in the queue

    answered = await asyncio.gather(*lookups, return_exceptions=True)

    assert isinstance(answered[1], asyncio.CancelledError)
    rest = [lookup for index, lookup in enumerate(answered) if index != 1]
    assert all(isinstance(lookup, Lookup) for lookup in rest), rest
    assert [lookup.values[0] for lookup in rest if isinstance(lookup, Lookup)] == [
        first_held[key] for index, key in enumerate(keys * 4) if index != 1
    ]
