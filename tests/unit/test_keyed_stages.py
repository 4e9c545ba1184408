"""Several keyed stages (``stages:``): config checks, the stage chain in process, and a Supervisor run with a kill.

The pipelines: revenue per customer per 10 s window, then per customer per minute the windows with orders, their
revenue and the best 10 s window (windows -> windows); and dedup by event id, then revenue per customer per
window (dedup -> windows) on files that deliver some events twice. Each is compared with a recomputation in
plain Python (tests/reference.py for the first stage).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pytest
import yaml

from actors import AggregateActor, SourceActor
from cluster.control.lag import ActorLoad, Observations
from cluster.control.supervisor import PipelineFailed, Supervisor
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.config.secrets import resolve_secrets
from pipelines.errors import ConfigError
from pipelines.examples.orders import orders_pipeline
from pipelines.io.generator import generate_events
from pipelines.io.records import RawBatch
from pipelines.io.sources import open_reader
from pipelines.stages.chain import NextStage
from pipelines.stages.plan import compile_pipeline
from pipelines.stages.topology import partition_limits
from pipelines.state.process_function import ProcessContext, TimeDomain
from pipelines.state.process_output import ProcessOutputError
from pipelines.testing import run_stages
from pipelines.verify.delivery_check import (
    check_verifiable,
    expected_run,
    recompute_windows,
    through_earlier_stages,
)
from tests.reference import (
    WindowsOfWindows,
    read_jsonl_dir,
    reference_windows_of_windows,
    windows_of_windows_stage,
    written_windows_of_windows,
)
from tests.unit.test_supervisor_in_process import (
    ActorDied,
    InProcessActors,
    InProcessAggregate,
    InProcessDownstream,
    InProcessSource,
    InProcessStageOwners,
)

EVENTS = 16_000
START_TIME_MS = 1_700_000_000_000
MINUTE_MS = 60_000
PER_MINUTE = windows_of_windows_stage(MINUTE_MS)


def two_stages(tmp_path: Path, **overrides: Any) -> PipelineConfig:
    """Orders per customer per 10 s window, then per customer per minute (the mask key resolved)."""
    settings: dict[str, Any] = {
        "runtime__max_events": EVENTS,
        "runtime__duration_s": None,
        "source__rate_per_s": None,
        "source__start_time_ms": START_TIME_MS,
        "tracing__enabled": False,
        "checkpoint__uri": str(tmp_path / "checkpoints"),
        "dead_letter__path": str(tmp_path / "dead"),
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
    }
    base = orders_pipeline(**{**settings, **overrides})
    data = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["stages"] = [{"aggregate": data.pop("aggregate")}, {"aggregate": PER_MINUTE}]
    return resolve_secrets(parse_config(data), os.environ)


def expected_per_minute(config: PipelineConfig) -> WindowsOfWindows:
    """(customer, minute) -> (windows, revenue, best window's revenue), from the 10 s windows' reference."""
    source = config.all_inputs[0].source
    assert isinstance(source, GeneratorSourceConfig)
    return reference_windows_of_windows(source, partition_limits(8, EVENTS), START_TIME_MS, 10_000, MINUTE_MS)


per_minute = written_windows_of_windows


@pytest.mark.parametrize(("senders", "owners"), [(1, 1), (2, 3), (3, 2)])
def test_two_window_stages_in_process_equal_the_recomputation(tmp_path: Path, senders: int, owners: int) -> None:
    config = two_stages(tmp_path)

    run = run_stages(config, senders=senders, owners=owners, batch_size=700)

    assert per_minute(run.results.rows()) == expected_per_minute(config)
    assert run.late.num_rows == 0, "a window result is never late for the next stage's windows"


def test_two_stages_on_the_supervisor_survive_a_kill_at_a_barrier_exactly_once(tmp_path: Path) -> None:
    """Both stages' actors restore from one checkpoint: each minute is written once and equals the recomputation."""
    config = two_stages(
        tmp_path,
        delivery="exactly_once",
        checkpoint__interval_ms=100,
        runtime__batch_size=256,
        runtime__aggregate_actors=2,
        source__rate_per_s=20_000,
    )
    actors = InProcessActors(die_at_checkpoint=7)  # a barrier of the second stage, in the second epoch

    summary = asyncio.run(Supervisor(config, "chain", actors).run())

    assert len(summary.recoveries_s) == 1 and actors.killed
    rows = read_jsonl_dir(tmp_path / "out")
    assert per_minute(rows) == expected_per_minute(config)
    assert summary.progress.windows_emitted == len(rows), "only the last stage's results are counted as output"
    stages = {entry.split()[1].split("-")[0] for entry in actors.log if entry.startswith("checkpoint")}
    assert stages == {"aggregate", "stage1"}, "both stages took part in the checkpoints"


def test_a_chain_rescaled_by_the_autoscaler_moves_every_stage_and_loses_nothing(tmp_path: Path) -> None:
    """2 actors per stage, bounds of 3: the first policy tick rescales both stages to 3 at a barrier (stage 0's
    actors then send to stage 1's new set); each minute is still written once and equal to the recomputation."""
    autoscale = {"min_source_actors": 2, "max_source_actors": 2, "min_aggregate_actors": 3, "max_aggregate_actors": 3,
                 "interval_s": 0.05}  # fmt: skip
    config = two_stages(
        tmp_path,
        runtime__aggregate_actors=2,
        runtime__autoscale=autoscale,
        runtime__batch_size=256,
        checkpoint__interval_ms=100,
        source__rate_per_s=20_000,  # about 0.8 s of input: the tick at 0.05 s comes well before its end
    )
    actors = InProcessActors()

    summary = asyncio.run(Supervisor(config, "rescaled-chain", actors).run())

    assert [(r.aggregates, r.sources) for r in summary.rescales] == [((2, 3), (2, 2))]
    assert len(actors.killed) == 0, "a scale-out keeps every actor"
    rows = read_jsonl_dir(tmp_path / "out")
    assert per_minute(rows) == expected_per_minute(config)
    assert summary.progress.events_in == EVENTS


RescalePoint = Literal["barrier", "regroup"]


class DyingDuringTheRescale(InProcessActors):
    """One actor dies during the rescale. ``at="barrier"``: a source, as the rescale's checkpoint commits (the
    layout is still dealt at the old counts); ``at="regroup"``: a first-stage aggregate, as it is regrouped (the
    layout is dealt at the new counts; the second stage, placed first, already has its new actor)."""

    def __init__(self, at: RescalePoint) -> None:
        super().__init__()
        self.at = at
        self.died: list[str] = []
        self.made: list[str] = []  # aggregates, in the order they were made
        self.made_before_death: list[str] = []

    def die_once(self, at: RescalePoint, actor_id: str) -> None:
        if at == self.at and not self.died:
            self.died.append(actor_id)
            self.made_before_death = list(self.made)
            raise ActorDied(f"{actor_id} was killed during the rescale ({at})")

    def source(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().source(*args, **kwargs)
        return SourceDyingAtTheHold(handle.actor, handle.actor_id, self)

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().aggregate(*args, **kwargs)
        self.made.append(handle.actor_id)
        return AggregateDyingWhenRegrouped(handle.actor, handle.actor_id, self, handle.stage)


class SourceDyingAtTheHold(InProcessSource):
    def __init__(self, actor: SourceActor, actor_id: str, owner: DyingDuringTheRescale) -> None:
        super().__init__(actor, actor_id, owner)
        self.dying = owner

    async def complete(self, epoch: int, resume: bool = True) -> Any:
        if not resume:  # only a rescale's epoch holds its sources
            self.dying.die_once("barrier", self.actor_id)
        return await super().complete(epoch, resume)


class AggregateDyingWhenRegrouped(InProcessAggregate):
    def __init__(self, actor: AggregateActor, actor_id: str, owner: DyingDuringTheRescale, stage: int) -> None:
        super().__init__(actor, actor_id, owner, stage)
        self.dying = owner

    async def regroup(self, key_groups: list[int], senders: int, snapshots: list[Any],
                      next_stage: NextStage | None = None) -> int:  # fmt: skip
        if self.stage == 0:  # regrouped after the second stage, whose new actor is made by then
            self.dying.die_once("regroup", self.actor_id)
        return await super().regroup(key_groups, senders, snapshots, next_stage)


@pytest.mark.parametrize("at", ["barrier", "regroup"])
def test_a_rescale_an_actor_dies_during_is_done_by_the_recovery_and_recorded_once(
    tmp_path: Path, at: RescalePoint
) -> None:
    """The autoscaler decides 2 -> 3 actors per stage; an actor dies during that rescale, before or after the
    layout is dealt at 3. The recovery starts the topology at 3 from the last checkpoint and records the rescale
    once (through the recovery); the cooldown does not leave the run at 2; every actor made before the death is
    killed, the one the rescale had just added too; each minute is written once and equals the recomputation."""
    autoscale = {"min_source_actors": 2, "max_source_actors": 2, "min_aggregate_actors": 3, "max_aggregate_actors": 3,
                 "interval_s": 0.05, "cooldown_s": 600}  # fmt: skip
    config = two_stages(
        tmp_path,
        delivery="exactly_once",
        runtime__aggregate_actors=2,
        runtime__autoscale=autoscale,
        runtime__batch_size=256,
        checkpoint__interval_ms=100,
        source__rate_per_s=20_000,
    )
    actors = DyingDuringTheRescale(at)

    summary = asyncio.run(Supervisor(config, f"rescale-dies-{at}", actors).run())

    assert actors.died, "an actor died during the rescale"
    assert len(summary.recoveries_s) == 1
    rescales = [(r.sources, r.aggregates, r.through_recovery) for r in summary.rescales]
    assert rescales == [((2, 2), (2, 3), True)], "the rescale was done by the recovery, and recorded once"
    assert summary.progress.aggregates == 6, "3 actors in each of the 2 stages ran to the end"
    assert len(actors.made_before_death) == 4 + (at == "regroup"), actors.made_before_death
    assert set(actors.made_before_death) <= set(actors.killed), "no actor of the interrupted rescale is left running"
    rows = read_jsonl_dir(tmp_path / "out")
    assert per_minute(rows) == expected_per_minute(config)
    assert summary.progress.events_in == EVENTS


@pytest.mark.parametrize("sizes", [(1, 3), (3, 1)])
def test_stages_of_other_sizes_equal_the_recomputation_in_process_and_under_a_kill(
    tmp_path: Path, sizes: tuple[int, int]
) -> None:
    """Each stage runs its own number of actors (stages[k].actors): its key groups dealt among them, the stage
    before sending to their owners; a kill at a barrier restores both stages from one checkpoint."""
    config = two_stages(tmp_path, delivery="exactly_once", checkpoint__interval_ms=100, runtime__batch_size=256,
                        source__rate_per_s=20_000)  # fmt: skip
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    for stage, size in zip(data["stages"], sizes, strict=True):
        stage["actors"] = size
    config = parse_config(data)
    assert config.stage_actors == sizes

    in_process = run_stages(config, senders=2, owners=5)  # the stages' own sizes win over owners
    assert per_minute(in_process.results.rows()) == expected_per_minute(config)

    actors = InProcessActors(die_at_checkpoint=sum(sizes) + 1)  # a barrier of the second epoch
    summary = asyncio.run(Supervisor(config, f"sized-{sizes[0]}-{sizes[1]}", actors).run())

    assert len(summary.recoveries_s) == 1
    assert per_minute(read_jsonl_dir(tmp_path / "out")) == expected_per_minute(config)
    stages = [entry.split()[1].split("-")[0] for entry in actors.log if entry.startswith("checkpoint")]
    assert stages[: sum(sizes)] == ["aggregate"] * sizes[0] + ["stage1"] * sizes[1], "each stage its own actors"


def test_dedup_then_windows_counts_an_event_delivered_twice_once(tmp_path: Path) -> None:
    """Files that deliver a fifth of the events again, in another file (another partition): dedup by event id
    first, so the windows count each order once."""
    source = GeneratorSourceConfig(partitions=2, seed=7, invalid_fraction=0.0, start_time_ms=START_TIME_MS)
    events = [json.loads(p) for part in range(2) for p in generate_events(source, part, 0, 3_000, START_TIME_MS)
              .payloads.to_pylist()]  # fmt: skip
    again = events[::5]
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "again.jsonl"]
    for path, rows in zip(files, [events[::2], events[1::2], again], strict=True):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = orders_pipeline(source={"type": "file", "paths": [str(path) for path in files]}, tracing__enabled=False,
                           runtime__duration_s=None, sinks=[{"type": "console"}])  # fmt: skip
    data = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["operators"][-1]["columns"].append("event_id")
    dedup = {"keyed": {"type": "dedup", "id_column": "event_id", "ttl_ms": 3_600_000, "max_out_of_order_ms": 60_000}}
    data["stages"] = [dedup, {"aggregate": data.pop("aggregate")}]
    config = resolve_secrets(parse_config(data), os.environ)

    run = run_stages(config, senders=2, owners=2, batch_size=500)

    expected: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for event in events:  # each once
        if event["event_type"] == "OrderCreated":
            entry = expected[(event["customer_id"], event["event_time_ms"] - event["event_time_ms"] % 10_000)]
            entry[0] += 1
            entry[1] += event["amount_cents"]
    actual = {(r["customer_id"], r["window_start_ms"]): [r["orders"], r["revenue_cents"]] for r in run.results.rows()}
    assert actual == dict(expected)
    assert sum(1 for event in again if event["event_type"] == "OrderCreated") > 0, "the test has duplicates"


def test_each_stage_is_checked_against_the_rows_of_the_stage_before(tmp_path: Path) -> None:
    config = two_stages(tmp_path)
    compiled = compile_pipeline(config)
    assert [stage.input_schema.names[-1] for stage in compiled.stages][1] == "_timestamp"
    assert compiled.result_columns[:6] == (
        "customer_id", "window_start_ms", "window_end_ms", "windows", "revenue_cents", "best_window_cents"
    )  # fmt: skip

    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["stages"][1]["aggregate"]["aggregations"]["amount"] = {"fn": "sum", "column": "amount_cents"}
    with pytest.raises(ConfigError, match=r"^stages\.1\.aggregate\.aggregations\.amount\.column: unknown column"):
        compile_pipeline(parse_config(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(aggregate=d["stages"][0]["aggregate"]), "stages is set, and so is aggregate"),
        (lambda d: d["stages"].append({}), "a stage is either aggregate"),
        (
            lambda d: (d["stages"][1].update(actors=2), d["runtime"].update(autoscale={})),
            "stages.1.actors is set, and runtime.autoscale sizes every stage alike",
        ),
        (lambda d: d["stages"][0].update(actors=200), r"stages.0.actors \(200\) exceeds runtime.max_key_groups"),
    ],
)
def test_a_stages_section_that_cannot_run_fails_when_read(tmp_path: Path, change: Any, message: str) -> None:
    data = two_stages(tmp_path).model_dump(mode="json", by_alias=True, exclude_none=True)
    change(data)
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_a_later_stages_watermark_settings_are_refused_since_it_takes_the_watermark_of_the_stage_before(
    tmp_path: Path,
) -> None:
    data = two_stages(tmp_path).model_dump(mode="json", by_alias=True, exclude_unset=True)
    data["stages"][1]["aggregate"]["max_out_of_order_ms"] = 5_000
    with pytest.raises(ConfigError, match=r"stages\.1\.aggregate\.max_out_of_order_ms: a later stage takes the wat"):
        parse_config(data)

    data["stages"][0]["aggregate"]["max_out_of_order_ms"] = 5_000
    del data["stages"][1]["aggregate"]["max_out_of_order_ms"]
    assert parse_config(data).keyed_stage.max_out_of_order_ms == 5_000  # type: ignore[union-attr]
    written_out = two_stages(tmp_path).to_yaml()  # every field, defaults included (as the CLI hands it on)
    assert parse_config(yaml.safe_load(written_out)).keyed_stages[1].aggregate is not None


def test_a_stage_that_emits_a_window_twice_or_unknown_rows_must_be_last(tmp_path: Path) -> None:
    data = two_stages(tmp_path).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["stages"][0]["aggregate"]["allowed_lateness_ms"] = 5_000
    with pytest.raises(ConfigError, match=r"^stages\.0\.aggregate: allowed_lateness_ms or early_update_ms"):
        compile_pipeline(parse_config(data))

    data = two_stages(tmp_path).model_dump(mode="json", by_alias=True, exclude_none=True)
    function = "tests.unit.test_keyed_stage:CountPerKey"  # declares no output_schema
    data["stages"][0] = {"keyed": {"type": "process", "key": "customer_id", "function": function}}
    refusal = r"^stages\.0\.keyed: a process function's rows are known only when it runs, so no stage can follow"
    with pytest.raises(ConfigError, match=refusal) as refused:
        compile_pipeline(parse_config(data))
    assert str(refused.value).endswith("make it the last stage, or declare output_schema on the function (the "
                                       "pyarrow.Schema of the rows it emits)")  # fmt: skip


ORDER_ROWS = pa.schema([("customer_id", pa.string()), ("amount_cents", pa.int64()), ("_timestamp", pa.int64())])


class PassOrders:
    """Passes each order on as it came: a table of more columns than it declares, so selected to ``ORDER_ROWS``."""

    output_schema = ORDER_ROWS

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> pa.Table:
        return rows

    def on_timer(self, key: Any, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> None:
        return None


class OrdersAsText(PassOrders):
    """Declares ``amount_cents`` int64 and emits it as text: a bug of the function."""

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> list[dict[str, Any]]:
        return [{"customer_id": key, "amount_cents": "a lot", "_timestamp": 0}]


class SchemaAsText(PassOrders):
    output_schema = "customer_id: string, amount_cents: int64"


def process_then_windows(tmp_path: Path, function: str) -> tuple[PipelineConfig, PipelineConfig]:
    """A process function by customer (``function`` of this module), then the 10 s windows; and the windows
    alone (which take the event-time settings the function's stage has in the first)."""
    data = two_stages(tmp_path).model_dump(mode="json", by_alias=True, exclude_none=True)
    windows = data["stages"][0]["aggregate"]
    alone = {**data, "stages": [{"aggregate": copy.deepcopy(windows)}]}
    watermark = {name: windows.pop(name) for name in ("max_out_of_order_ms", "idle_timeout_ms") if name in windows}
    process = {"type": "process", "key": "customer_id", "function": f"tests.unit.test_keyed_stages:{function}"}
    data["stages"] = [{"keyed": {**process, **watermark}}, {"aggregate": windows}]
    return parse_config(data), parse_config(alone)


def window_totals(rows: list[dict[str, Any]]) -> list[tuple[str, int, int, int]]:
    return sorted((r["customer_id"], r["window_start_ms"], r["orders"], r["revenue_cents"]) for r in rows)


def test_a_process_function_that_declares_its_output_schema_can_be_followed_by_another_stage(tmp_path: Path) -> None:
    chained, windows_alone = process_then_windows(tmp_path, "PassOrders")

    compiled = compile_pipeline(chained)
    assert compiled.stages[0].output_schema == ORDER_ROWS == compiled.stages[1].input_schema
    run = run_stages(chained, senders=2, owners=3, batch_size=700)

    expected = run_stages(windows_alone, senders=2, owners=3, batch_size=700).results.rows()
    assert window_totals(run.results.rows()) == window_totals(expected) and expected


def test_a_declaring_function_whose_rows_do_not_fit_stops_the_run_naming_itself_the_column_and_the_type(
    tmp_path: Path,
) -> None:
    chained, _ = process_then_windows(tmp_path, "OrdersAsText")
    compile_pipeline(chained)  # what it emits is known to be wrong only when it runs
    with pytest.raises(ProcessOutputError, match=r"^process function 'tests.unit.test_keyed_stages:OrdersAsText' "
                       r"emitted rows that do not fit its output_schema: column 'amount_cents' is declared int64, "
                       r"and row 0 of its output holds a str\. Operator action: "):  # fmt: skip
        run_stages(chained)


def test_an_output_schema_that_is_no_schema_fails_to_compile_naming_the_field_and_the_function(tmp_path: Path) -> None:
    chained, _ = process_then_windows(tmp_path, "SchemaAsText")
    with pytest.raises(ConfigError, match=r"^stages\.0\.keyed\.function: process function "
                       r"'tests.unit.test_keyed_stages:SchemaAsText' declares output_schema as str, not a "
                       r"pyarrow\.Schema"):  # fmt: skip
        compile_pipeline(chained)


def test_one_stage_under_stages_runs_as_the_aggregate_form(tmp_path: Path) -> None:
    written = orders_pipeline(runtime__max_events=EVENTS, runtime__duration_s=None, source__rate_per_s=None,
                              source__start_time_ms=START_TIME_MS, tracing__enabled=False)  # fmt: skip
    data = written.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["stages"] = [{"aggregate": data.pop("aggregate")}]
    staged = parse_config(data)

    assert staged.keyed_stage is not None and written.keyed_stage is not None
    assert replace(staged.keyed_stage, key_field="aggregate.key") == written.keyed_stage
    assert staged.keyed_stage.key_field == "stages.0.aggregate.key", "errors name the field where it is written"
    assert compile_pipeline(staged).result_columns == compile_pipeline(written).result_columns
    expected = run_stages(written, senders=2, owners=2).results.rows()
    assert run_stages(staged, senders=2, owners=2).results.rows() == expected


def test_verify_recomputes_chains_ending_in_windows_or_a_join_and_says_so_of_others(
    tmp_path: Path,
) -> None:
    check_verifiable(compile_pipeline(two_stages(tmp_path)))  # windows -> windows

    data = two_stages(tmp_path).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["stages"][1] = {"keyed": {"type": "dedup", "id_column": "customer_id", "ttl_ms": MINUTE_MS}}
    with pytest.raises(ConfigError, match=r"ends in windows or a join, and this one is windows -> dedup \(stages\)"):
        check_verifiable(compile_pipeline(parse_config(data)))


async def read_everything(source: GeneratorSourceConfig) -> list[RawBatch]:
    batches = []
    for partition, limit in partition_limits(8, EVENTS).items():
        reader = open_reader(source, partition, 0, limit, 0.0, START_TIME_MS)
        while (raw := await reader.fetch(4_096)) is not None:
            batches.append(raw)
    return batches


def test_the_checkers_recomputation_of_a_chain_equals_the_plain_python_one(tmp_path: Path) -> None:
    """verify's columnar recomputation (through_earlier_stages, then the last stage's windows) against this
    file's row-by-row one, on the same transformed events."""
    config = two_stages(tmp_path)
    compiled = compile_pipeline(config)
    source = config.all_inputs[0].source
    assert isinstance(source, GeneratorSourceConfig)
    expected = expected_run(compiled, asyncio.run(read_everything(source)))
    last = config.last_stage.aggregate
    assert last is not None

    windows = recompute_windows(through_earlier_stages(expected.events, compiled), last)

    assert per_minute(windows.to_pylist()) == expected_per_minute(config)


def test_the_autoscaler_sizes_aggregates_by_the_busiest_stage_and_counts_them_per_stage() -> None:
    def load(actor_id: str, stage: int, busy: float) -> ActorLoad:
        return ActorLoad(actor_id, "aggregate", 1_000.0, busy, 1_000.0 / busy, stage)

    actors = (load("a0", 0, 0.2), load("a1", 0, 0.3), load("b0", 1, 0.9), load("b1", 1, 0.8))
    observations = Observations(at_s=1.0, partitions=(), actors=actors, key_groups=128)

    assert observations.actor_count("aggregate") == 2
    assert observations.total_busy_ratio("aggregate") == pytest.approx(1.7)


class SlowFinish(InProcessDownstream):
    """A downstream whose end of input takes a while (a chain of stages flushing on Ray), recording what ran."""

    def __init__(self, aggregates: list[AggregateActor], log: list[str]) -> None:
        super().__init__(aggregates)
        self.log = log
        self.finishing = asyncio.Event()

    async def finish(self, sender: int) -> None:
        self.finishing.set()
        self.log.append("finish begins")
        await asyncio.sleep(0.05)  # another call to the source runs here if nothing holds it off
        await super().finish(sender)
        self.log.append("finish ends")


async def test_a_checkpoint_barrier_never_cuts_through_the_end_of_input(tmp_path: Path) -> None:
    """The end of input and everything it makes the stages emit fall on one side of a barrier: a checkpoint
    asked for while a source's finish is under way waits for it (else stage 1's snapshot could hold rows that
    stage 0's does not, and a restore would emit them again)."""
    config = two_stages(tmp_path)
    log: list[str] = []
    stage1 = AggregateActor(config, "b", list(range(128)), senders=1, slot="stage1-aggregate-0", stage=1)
    owners = NextStage(InProcessStageOwners([stage1]), [0] * 128, 0)
    stage0 = AggregateActor(config, "a", list(range(128)), senders=1, slot="aggregate-0", next_stage=owners)
    downstream = SlowFinish([stage0], log)
    limits: dict[int, int | None] = dict(partition_limits(8, 800))
    source = SourceActor(config, "s", 0, list(range(8)), limits, 0.0, START_TIME_MS, downstream, {0: [0] * 128})

    async def barrier_during_the_finish() -> None:
        await downstream.finishing.wait()
        await source.checkpoint(1)
        log.append("barrier")
        await source.complete(1)

    await asyncio.gather(source.run(), barrier_during_the_finish())

    assert log == ["finish begins", "finish ends", "barrier"]
    assert stage1.done, "the end of input reached the second stage"


class WaitingOwners(InProcessStageOwners):
    """The next stage's actors behind a send that waits (backpressure on Ray), counting the wait."""

    def __init__(self, aggregates: list[AggregateActor]) -> None:
        super().__init__(aggregates)
        self.waited = 0.0

    @property
    def waited_s(self) -> float:
        return self.waited

    def send(self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None) -> None:
        started = time.perf_counter()
        time.sleep(0.05)
        super().send(owner, sender, batch, watermark_ms)
        self.waited += time.perf_counter() - started


def test_an_actors_busy_time_leaves_out_its_waits_on_the_next_stage(tmp_path: Path) -> None:
    """The autoscaler sizes a stage by its own work: busy time plus the waits fit in the call's time, where a busy
    time that counted the waits would not (it would hold them twice)."""
    config = two_stages(tmp_path)
    stage1 = AggregateActor(config, "b", list(range(128)), senders=1, slot="stage1-aggregate-0", stage=1)
    owners = WaitingOwners([stage1])
    stage0 = AggregateActor(config, "a", list(range(128)), senders=1, slot="aggregate-0",
                            next_stage=NextStage(owners, [0] * 128, 0))  # fmt: skip
    minute = [{"customer_id": "c1", "amount_cents": 100, "_timestamp": START_TIME_MS + i * 2_000} for i in range(40)]
    batch = pa.RecordBatch.from_pylist(minute, schema=compile_pipeline(config).stage_schema)

    started = time.perf_counter()
    stage0.process(0, batch, START_TIME_MS + 80_000)  # closes windows: their results go to stage 1
    elapsed = time.perf_counter() - started

    assert owners.waited > 0, "stage 0 sent to stage 1"
    assert stage0.progress().busy_s + owners.waited <= elapsed


class Wrapped(Exception):
    """Ray's wrapping of an actor's error (a RayTaskError keeps the original as ``cause``)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"wrapped: {cause}")
        self.cause = cause


def test_an_error_of_a_later_stage_reaches_the_user_unwrapped_through_every_stage() -> None:
    original = ConfigError("keyed.function: the user's function raised")
    through_two_stages_and_a_source = Wrapped(Wrapped(Wrapped(original)))

    config = orders_pipeline(checkpoint=None, runtime__duration_s=None, runtime__max_events=10)  # no restore
    supervisor = Supervisor(resolve_secrets(config, os.environ), "unwrap", InProcessActors())

    with pytest.raises(PipelineFailed) as failed:
        supervisor._verdict(through_two_stages_and_a_source)

    assert str(failed.value) == "pipeline 'orders' failed: keyed.function: the user's function raised"
