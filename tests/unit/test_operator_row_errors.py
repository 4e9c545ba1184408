"""Value-dependent expression errors are data errors: the rows an operator or a schema check cannot compute are
taken out with a reason that names the expression but never the value; the other rows go on as if the failed
ones had not been there. The cost is counted in operator runs, never in wall-clock time."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from actors import SourceActor, SourceProgress
from pipelines.config.pipeline import (
    DeriveOp,
    FilterOp,
    GeneratorSourceConfig,
    MaskOp,
    OperatorConfig,
    PipelineConfig,
    SchemaConfig,
    SelectOp,
)
from pipelines.decode.schema import EventSchema
from pipelines.errors import ExpressionError
from pipelines.examples.orders import orders_pipeline
from pipelines.io.generator import generate_events
from pipelines.io.records import RawBatch
from pipelines.stages.plan import compile_pipeline
from pipelines.transform.operators import ChainOutcome, Operator, apply_all, apply_all_isolating_rows, build_operators
from pipelines.transform.row_errors import classify

FETCH = 4_096
FIRST_OFFSET = 70_000
BIG = 9_876_543_210  # times 10**12 overflows int64; its digits must never reach a reason
OVERFLOWING = "amount_cents * 1000000000000"
DERIVE_REASON = (
    f"operators.2 (derive amount_x): expression {OVERFLOWING!r} cannot be computed for this event: integer overflow"
)
BAD_ROWS = [5, 2_000, 4_095]


def events(amounts: Sequence[int | None], codes: Sequence[str | None] | None = None) -> pa.RecordBatch:
    """Decoded events as the operators see them: payload columns, then metadata columns."""
    count = len(amounts)
    return pa.record_batch(
        {
            "amount_cents": pa.array(amounts, pa.int64()),
            "code": pa.array(codes if codes is not None else [str(i % 7) for i in range(count)], pa.string()),
            "email": pa.array([f"user{i % 13}@example.com" for i in range(count)], pa.string()),
            "_partition": pa.array([3] * count, pa.int32()),
            "_offset": pa.array(range(FIRST_OFFSET, FIRST_OFFSET + count), pa.int64()),
        }
    )


def fetch_with_bad_rows(bad_rows: Sequence[int] = BAD_ROWS, count: int = FETCH) -> pa.RecordBatch:
    amounts: list[int | None] = [(i * 37) % 5_000 - 100 for i in range(count)]
    for row in bad_rows:
        amounts[row] = BIG if row % 2 else -BIG
    return events(amounts)


def chain_of(configs: Sequence[OperatorConfig], batch: pa.RecordBatch) -> list[Operator]:
    chain, _ = build_operators(configs, batch.schema.names)
    return chain


def without_rows(batch: pa.RecordBatch, rows: Sequence[int]) -> pa.RecordBatch:
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[list(rows)] = False
    return batch.filter(pa.array(keep))


def failed_offsets(batch: pa.RecordBatch, outcome: ChainOutcome) -> list[int]:
    return cast("list[int]", batch.column("_offset").take(outcome.failed_positions).to_pylist())


DERIVE_CHAIN: list[OperatorConfig] = [
    MaskOp(op="mask", column="email", method="hash").model_copy(update={"key": SecretStr("k" * 32)}),
    FilterOp(op="filter", expr="is_valid(amount_cents)"),
    DeriveOp(op="derive", column="amount_x", expr=OVERFLOWING),
]


def test_a_derive_that_overflows_for_3_rows_takes_out_those_3_and_computes_the_others() -> None:
    batch = fetch_with_bad_rows()
    chain = chain_of(DERIVE_CHAIN, batch)

    outcome = apply_all_isolating_rows(chain, batch)

    assert failed_offsets(batch, outcome) == [FIRST_OFFSET + row for row in BAD_ROWS]
    assert outcome.failed_reasons.to_pylist() == [DERIVE_REASON] * 3
    assert outcome.events.equals(apply_all(chain, without_rows(batch, BAD_ROWS)))
    assert outcome.events.num_rows == FETCH - 3


def test_a_clean_batch_fails_nothing() -> None:
    batch = fetch_with_bad_rows(bad_rows=[])
    chain = chain_of(DERIVE_CHAIN, batch)

    outcome = apply_all_isolating_rows(chain, batch)

    assert outcome.events.equals(apply_all(chain, batch))
    assert len(outcome.failed_positions) == len(outcome.failed_reasons) == 0


def test_a_filter_over_an_overflowing_expression_takes_out_the_rows_it_cannot_decide() -> None:
    batch = fetch_with_bad_rows()
    configs: list[OperatorConfig] = [FilterOp(op="filter", expr=f"{OVERFLOWING} > 0")]
    chain = chain_of(configs, batch)

    outcome = apply_all_isolating_rows(chain, batch)

    assert failed_offsets(batch, outcome) == [FIRST_OFFSET + row for row in BAD_ROWS]
    reason = f"operators.0 (filter): expression '{OVERFLOWING} > 0' cannot be computed for this event: integer overflow"
    assert outcome.failed_reasons.to_pylist() == [reason] * 3
    assert outcome.events.equals(apply_all(chain, without_rows(batch, BAD_ROWS)))
    assert 0 < outcome.events.num_rows < FETCH - 3, "the filter still decides the other rows"


def test_rows_are_mapped_back_through_filters_and_a_select_that_drops_offset() -> None:
    batch = fetch_with_bad_rows()
    configs: list[OperatorConfig] = [
        FilterOp(op="filter", expr="amount_cents > 0"),  # drops rows before the failure: positions shift
        SelectOp(op="select", columns=["amount_cents", "code"], rename={"code": "_row"}),  # no _offset from here
        DeriveOp(op="derive", column="amount_x", expr=OVERFLOWING),
        FilterOp(op="filter", expr="amount_x > 0"),
    ]
    chain = chain_of(configs, batch)

    outcome = apply_all_isolating_rows(chain, batch)

    positive_bad_rows = [row for row in BAD_ROWS if row % 2]  # the negative ones were filtered out first
    assert failed_offsets(batch, outcome) == [FIRST_OFFSET + row for row in positive_bad_rows]
    assert outcome.failed_reasons.to_pylist() == [
        f"operators.2 (derive amount_x): expression {OVERFLOWING!r} cannot be computed for this event: integer overflow"
    ] * len(positive_bad_rows)
    assert outcome.events.schema.names == ["amount_cents", "_row", "amount_x"]
    assert outcome.events.equals(apply_all(chain, without_rows(batch, positive_bad_rows)))


def test_failures_at_several_operators_come_back_in_input_order() -> None:
    codes: list[str | None] = [str(i) for i in range(64)]
    codes[40] = "4111x1111"  # fails to_int at operator 0
    amounts: list[int | None] = [i for i in range(64)]
    amounts[9] = BIG  # fails the derive at operator 1
    batch = events(amounts, codes)
    configs: list[OperatorConfig] = [
        DeriveOp(op="derive", column="code_number", expr="to_int(code)"),
        DeriveOp(op="derive", column="amount_x", expr=OVERFLOWING),
    ]

    outcome = apply_all_isolating_rows(chain_of(configs, batch), batch)

    assert outcome.failed_positions.to_pylist() == [9, 40]
    assert outcome.failed_reasons.to_pylist() == [
        f"operators.1 (derive amount_x): expression {OVERFLOWING!r} cannot be computed for this event: "
        "integer overflow",
        "operators.0 (derive code_number): expression 'to_int(code)' cannot be computed for this event: a failed cast",
    ]
    assert not any("4111" in reason for reason in outcome.failed_reasons.to_pylist())


@pytest.mark.parametrize(
    ("expression", "amount", "code", "why"),
    [
        (OVERFLOWING, BIG, "2", "integer overflow"),
        ("-amount_cents", -(1 << 63), "2", "integer overflow"),
        ("amount_cents + 9223372036854775000", 987_654_321, "2", "integer overflow"),
        ("to_int(code)", 2, "918273645x", "a failed cast"),
        ("to_int(to_float(amount_cents) / 7)", 918_273_645, "2", "a failed cast"),  # Arrow quotes 131181949.28
    ],
)
def test_reasons_never_contain_the_value(expression: str, amount: int, code: str, why: str) -> None:
    batch = events([7, amount, 14], ["1", code, "3"])
    outcome = apply_all_isolating_rows(chain_of([DeriveOp(op="derive", column="x", expr=expression)], batch), batch)

    (reason,) = outcome.failed_reasons.to_pylist()
    assert outcome.failed_positions.to_pylist() == [1]
    assert reason == f"operators.0 (derive x): expression {expression!r} cannot be computed for this event: {why}"
    for value in (str(abs(amount)), code, "131181949"):
        assert value not in reason or value in expression


def test_classification_falls_back_to_its_own_words() -> None:
    assert classify(pa.ArrowInvalid("Invalid: something new about 12345")) == "an invalid value for the operation"
    assert classify(OverflowError("Python int too large")) == "integer overflow"
    # an ExpressionError is classified by the library error it was raised from, not by the expression's text
    try:
        try:
            raise pa.ArrowInvalid("divide by zero")
        except pa.ArrowInvalid:
            raise ExpressionError("expression 'overflow_count / cast_total' cannot be evaluated") from None
    except ExpressionError as error:
        assert classify(error) == "an invalid value for the operation"


def test_a_type_error_still_raises_without_searching_rows() -> None:
    batch = fetch_with_bad_rows()
    counter = Counted(chain_of([FilterOp(op="filter", expr="amount_cents + 1")], batch)[0])

    with pytest.raises(ExpressionError, match="must be true/false"):
        apply_all_isolating_rows([counter], batch)
    assert counter.applications <= 3, "a type error fails on no rows at all: there is nothing to bisect"


class Counted:
    """An operator that counts how often it runs."""

    def __init__(self, operator: Operator) -> None:
        self._operator = operator
        self.applications = 0
        self.label = operator.label
        self.expression_text = operator.expression_text

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        self.applications += 1
        return self._operator.apply(batch)

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        return self._operator.output_columns(input_columns)


@pytest.mark.parametrize("bad_rows", [[0], [7], [5, 2_000, 4_095], list(range(3, FETCH, 401)), [100, 101, 102]])
def test_bad_rows_cost_about_2k_log_n_operator_runs(bad_rows: list[int]) -> None:
    batch = fetch_with_bad_rows(bad_rows)
    chain = [Counted(operator) for operator in chain_of(DERIVE_CHAIN, batch)]

    outcome = apply_all_isolating_rows(chain, batch)

    assert failed_offsets(batch, outcome) == [FIRST_OFFSET + row for row in bad_rows]
    mask, keep_valid, derive = chain
    k = len(bad_rows)
    # the first run, the tracked run, one run on no rows (types), then the bisection, then the survivors
    assert derive.applications <= 2 * k * (math.log2(FETCH) + 1) + 5
    assert mask.applications == keep_valid.applications == 2, "operators before the failing one run twice"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.integers(-2_000, 2_000), st.sampled_from([BIG, -BIG, -(1 << 63), (1 << 63) - 1])),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["filter-select-derive", "derive-filter", "negate-filter"]),
)
def test_the_result_for_a_batch_equals_the_result_of_each_row_alone(amounts: list[int | None], shape: str) -> None:
    batch = events(amounts)
    configs: dict[str, list[OperatorConfig]] = {
        "filter-select-derive": [
            FilterOp(op="filter", expr="amount_cents * 3 > -3000"),
            SelectOp(op="select", columns=["amount_cents", "code"]),
            DeriveOp(op="derive", column="amount_x", expr=OVERFLOWING),
        ],
        "derive-filter": [
            DeriveOp(op="derive", column="amount_x", expr=OVERFLOWING),
            FilterOp(op="filter", expr="amount_x + amount_cents >= 0"),
        ],
        "negate-filter": [
            FilterOp(op="filter", expr="-amount_cents <= 1000"),
            MaskOp(op="mask", column="email", method="keep_last"),
        ],
    }
    chain = chain_of(configs[shape], batch)

    whole = apply_all_isolating_rows(chain, batch)

    alone = [apply_all_isolating_rows(chain, batch.slice(row, 1)) for row in range(batch.num_rows)]
    expected_failed = [row for row, outcome in enumerate(alone) if len(outcome.failed_positions)]
    assert whole.failed_positions.to_pylist() == expected_failed
    assert whole.failed_reasons.to_pylist() == [alone[row].failed_reasons[0].as_py() for row in expected_failed]
    expected_events = pa.Table.from_batches([outcome.events for outcome in alone], schema=whole.events.schema)
    assert pa.Table.from_batches([whole.events]).equals(expected_events)


# --- schema checks -------------------------------------------------------------------------------------------------

CHECK = f"{OVERFLOWING} < 4000000000000000"
SCHEMA = EventSchema(
    SchemaConfig(
        fields={"amount_cents": "int64", "code": "string", "email": "string"},
        required=["code"],
        checks=[CHECK, "amount_cents != 13"],
    )
)


def test_a_check_that_overflows_for_some_rows_marks_those_rows_invalid() -> None:
    codes: list[str | None] = [str(i) for i in range(FETCH)]
    codes[2_000] = None  # fails `required` first: keeps that reason although its check cannot be computed either
    batch = events(fetch_with_bad_rows().column("amount_cents").to_pylist(), codes)
    amounts = batch.column("amount_cents").to_pylist()

    outcome = SCHEMA.validate(batch)

    reasons = dict(zip(outcome.invalid_indices.to_pylist(), outcome.invalid_reasons.to_pylist(), strict=True))
    assert reasons[5] == reasons[4_095] == f"check could not be evaluated: {CHECK} (integer overflow)"
    assert reasons[2_000] == "required field 'code' is missing or null"
    assert reasons[amounts.index(13)] == "check failed: amount_cents != 13"
    assert reasons[amounts.index(4_500)] == f"check failed: {CHECK}"
    assert not any(str(BIG) in reason for reason in reasons.values())
    # the other rows get the verdicts they get without the bad rows
    kept = [row for row in range(FETCH) if row not in BAD_ROWS]
    alone = SCHEMA.validate(without_rows(batch, BAD_ROWS))
    assert {row: reason for row, reason in reasons.items() if row not in BAD_ROWS} == {
        kept[row]: reason
        for row, reason in zip(alone.invalid_indices.to_pylist(), alone.invalid_reasons.to_pylist(), strict=True)
    }
    assert outcome.valid_indices.to_pylist() == [kept[row] for row in alone.valid_indices.to_pylist()]


def test_a_check_with_a_type_error_still_fails_to_run() -> None:
    schema = EventSchema(SchemaConfig(fields={"amount_cents": "int64", "code": "string"}, checks=["code > 1"]))
    with pytest.raises(ExpressionError, match="schema check failed to run"):
        schema.validate(events([1, 2, 3]))


# --- the compiled pipeline and the source actor --------------------------------------------------------------------

START_TIME_MS = 1_700_000_000_000
MULTIPLIER = 188_300_000_000_000  # amounts are 100..50,000 cents: the largest few percent overflow
DERIVED = f"amount_cents * {MULTIPLIER}"


def orders_with_derive(tmp_path: Path) -> PipelineConfig:
    return orders_pipeline(
        runtime__max_events=None,
        runtime__duration_s=None,
        source__rate_per_s=None,
        source__start_time_ms=START_TIME_MS,
        tracing__enabled=False,
        checkpoint__uri=str(tmp_path / "checkpoints"),
        dead_letter__path=str(tmp_path / "dead"),
        aggregate=None,
        operators=[
            {"op": "filter", "expr": 'event_type == "OrderCreated"'},
            {"op": "select", "columns": ["customer_id", "amount_cents", "_partition", "_event_id"]},
            {"op": "derive", "column": "amount_x", "expr": DERIVED},
        ],
        sinks=[{"type": "jsonl", "path": str(tmp_path / "out")}],
    )


def generated_fetch(config: PipelineConfig, partition: int, count: int) -> tuple[RawBatch, list[dict[str, Any] | None]]:
    assert isinstance(config.source, GeneratorSourceConfig)
    generated = generate_events(config.source, partition, 0, count, START_TIME_MS)
    raw = RawBatch(
        topic="generator",
        partition=partition,
        offsets=pa.array(generated.offsets),
        payloads=generated.payloads,
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )
    records = [
        None if kind else json.loads(payload)  # the generator's invalid events are left out
        for kind, payload in zip(generated.invalid_kind.tolist(), generated.payloads.to_pylist(), strict=True)
    ]
    return raw, records


def overflowing_offsets(raw: RawBatch, records: list[dict[str, Any] | None]) -> list[int]:
    """Offsets of valid orders whose amount times MULTIPLIER does not fit in int64."""
    offsets = raw.offsets.to_pylist()
    return [
        offsets[index]
        for index, record in enumerate(records)
        if record is not None
        and record["event_type"] == "OrderCreated"
        and record["amount_cents"] * MULTIPLIER >= 1 << 63
    ]


def test_transform_returns_the_failed_offsets_and_their_dead_letters(tmp_path: Path) -> None:
    config = orders_with_derive(tmp_path)
    compiled = compile_pipeline(config)
    raw, records = generated_fetch(config, partition=2, count=FETCH)
    decoded = compiled.decode(raw)

    transformed = compiled.transform(decoded.events)

    expected = overflowing_offsets(raw, records)
    assert 0 < len(expected) < 200
    assert transformed.failed_offsets.to_pylist() == expected
    reason = (
        f"operators.2 (derive amount_x): expression {DERIVED!r} cannot be computed for this event: integer overflow"
    )
    assert set(transformed.failed_reasons.to_pylist()) == {reason}
    (dead,) = transformed.failures_as_dead_letters(raw)
    assert dead.column("offset").to_pylist() == expected
    assert set(dead.column("error_type").to_pylist()) == {"invalid"}
    by_offset = dict(zip(raw.offsets.to_pylist(), raw.payloads.to_pylist(), strict=True))
    assert dead.column("payload").to_pylist() == [by_offset[offset] for offset in expected]
    assert transformed.events.num_rows + len(expected) == apply_all(compiled.operators[:2], decoded.events).num_rows, (
        "every order either passes or is dead-lettered"
    )


def test_the_source_actor_dead_letters_operator_failures_and_counts_only_survivors_out(tmp_path: Path) -> None:
    config = orders_with_derive(tmp_path)
    limits: dict[int, int | None] = {0: 1_500, 1: 1_500}
    actor = SourceActor(config, "s", 0, [0, 1], limits, 0.0, START_TIME_MS)

    async def run() -> SourceProgress:
        await actor.run()
        return await actor.close()

    progress = asyncio.run(run())

    dead = [json.loads(line) for path in (tmp_path / "dead").glob("*.jsonl") for line in path.read_text().splitlines()]
    out = [json.loads(line) for path in (tmp_path / "out").glob("*.jsonl") for line in path.read_text().splitlines()]
    operator_failures = {(row["partition"], row["offset"]) for row in dead if row["reason"].startswith("operators.2")}
    expected = set()
    for partition in (0, 1):
        raw, records = generated_fetch(config, partition, 1_500)
        expected |= {(partition, offset) for offset in overflowing_offsets(raw, records)}
    assert operator_failures == expected
    assert all(row["error_type"] == "invalid" for row in dead if row["reason"].startswith("operators."))
    assert progress.events_out == len(out)
    assert progress.dead_lettered == len(dead)
    assert progress.events_in == 3_000
