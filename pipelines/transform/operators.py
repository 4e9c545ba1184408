"""Stateless operators on record batches: filter, select/rename, derive, mask.

Contract: :meth:`Operator.apply` takes a batch and returns a batch; it never blocks and raises only
:class:`~pipelines.errors.ExpressionError` (or a ``pyarrow`` error) for an expression that cannot run on the
batch's types or on some rows' values. Each row's result depends on that row alone. Metadata columns
(``_partition``, ``_offset`` ...) pass through unless a ``select`` drops them. Column names are checked when the
chain is built (:func:`build_operators`), so a typo fails before anything starts.

:func:`apply_all_isolating_rows` runs a chain so that rows whose values an operator cannot compute are taken
out with their reasons (:mod:`pipelines.transform.row_errors`) while the other rows go on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import DeriveOp, FilterOp, MaskOp, OperatorConfig, SelectOp, UpcastOp
from pipelines.errors import ConfigError, ExpressionError
from pipelines.transform.expressions import compile_expression
from pipelines.transform.row_errors import VALUE_ERRORS, rows_failing_alone
from pipelines.transform.upcast import Upcast

__all__ = [
    "ChainOutcome",
    "Derive",
    "Filter",
    "Mask",
    "Operator",
    "Select",
    "apply_all",
    "apply_all_isolating_rows",
    "build_operators",
]

_Rows = npt.NDArray[np.int64]


class Operator(Protocol):
    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...

    @property
    def label(self) -> str:
        """How messages name this operator: its kind and what it targets (``derive amount_eur``)."""
        ...

    @property
    def expression_text(self) -> str | None:
        """The config's text of the expression it evaluates, if it evaluates one."""
        ...

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        """The columns this operator emits for the given input columns; raises ConfigError if one is unknown."""
        ...


class Filter:
    """Keeps the rows for which the expression is true (null counts as false).

    The expression's type is only known from the batch: one that is not true/false raises ExpressionError.
    """

    label = "filter"

    def __init__(self, config: FilterOp) -> None:
        self._expression = compile_expression(config.expr)

    @property
    def expression_text(self) -> str:
        return self._expression.text

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        keep = self._expression.evaluate(batch)
        if keep.type == pa.null():  # e.g. `None`: unknown for every row
            keep = keep.cast(pa.bool_())
        if keep.type != pa.bool_():
            raise ExpressionError(f"filter expression {self._expression.text!r} must be true/false, got {keep.type}")
        return batch.filter(keep, null_selection_behavior="drop")

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        self._expression.check_columns(input_columns)
        return list(input_columns)


class Select:
    """Keeps the listed columns, in that order, then renames some of them."""

    label = "select"
    expression_text = None

    def __init__(self, config: SelectOp) -> None:
        self._columns = list(config.columns)
        self._rename = dict(config.rename)

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        selected = batch.select(self._columns)
        return selected.rename_columns([self._rename.get(name, name) for name in self._columns])

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        missing = [name for name in self._columns if name not in input_columns]
        if missing:
            members = [name for name in missing if name.split(".")[0] in input_columns]
            hint = f" ({members[0]} is a struct member? derive it as a column first)" if members else ""
            raise ConfigError(f"select names unknown column(s) {missing}; available: {list(input_columns)}{hint}")
        unknown_renames = sorted(set(self._rename) - set(self._columns))
        if unknown_renames:
            raise ConfigError(f"select renames {unknown_renames}, which it does not select: {self._columns}")
        output = [self._rename.get(name, name) for name in self._columns]
        duplicates = sorted({name for name in output if output.count(name) > 1})
        if duplicates:
            raise ConfigError(f"select (after rename) outputs {duplicates} more than once; output: {output}")
        return output


class Derive:
    """Adds (or replaces) a column computed from an expression."""

    def __init__(self, config: DeriveOp) -> None:
        self._column = config.column
        self._expression = compile_expression(config.expr)

    @property
    def label(self) -> str:
        return f"derive {self._column}"

    @property
    def expression_text(self) -> str:
        return self._expression.text

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        values = self._expression.evaluate(batch)
        index = batch.schema.get_field_index(self._column)
        if index >= 0:
            return batch.set_column(index, self._column, values)
        return batch.append_column(self._column, values)

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        self._expression.check_columns(input_columns)
        return list(input_columns) if self._column in input_columns else [*input_columns, self._column]


class Mask:
    """Masks personal data in a string column: ``redact`` (``***``), ``hash`` (HMAC-SHA256 under the key the
    driver resolved, 32 hex digits: stable and joinable under one key, not recomputable without it), or
    ``keep_last`` (``***`` + the last N characters). Nulls stay null.

    A binary column, such as ``_key`` (the Kafka record key, which outputs without a ``key_column`` carry on), is
    masked byte-wise and stays binary: ``hash`` of the bytes as they are, ``redact``; ``keep_last`` needs text."""

    expression_text = None

    def __init__(self, config: MaskOp) -> None:
        self._column = config.column
        self._method = config.method
        self._keep_last = config.keep_last
        self._key_env = config.key_env
        self._key = config.key.get_secret_value().encode() if config.key is not None else None

    @property
    def label(self) -> str:
        return f"mask {self._column}"

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        index = batch.schema.get_field_index(self._column)
        column = batch.column(index)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            return batch.set_column(index, batch.schema.field(index), self._mask_bytes(column))
        values = pc.cast(column, pa.string())
        return batch.set_column(index, self._column, self._mask(values))

    def _mask_bytes(self, values: pa.Array) -> pa.Array:
        if self._method == "keep_last":
            raise ConfigError(
                f"mask {self._column}: keep_last keeps characters, and {self._column} is binary; use hash or redact"
            )
        if self._method == "redact":
            return pc.if_else(pc.is_valid(values), pa.scalar(b"***", values.type), pa.scalar(None, values.type))
        digests = self._mask(values.cast(pa.binary()))
        return digests.cast(values.type)

    def _mask(self, values: pa.Array) -> pa.Array:
        if self._method == "redact":
            return pc.if_else(pc.is_valid(values), pa.scalar("***"), pa.scalar(None, pa.string()))
        if self._method == "keep_last":
            length = pc.utf8_length(values)
            tail = pc.utf8_slice_codeunits(values, start=-self._keep_last) if self._keep_last else pa.scalar("")
            masked = pc.binary_join_element_wise("***", tail, "")
            return pc.if_else(pc.greater(length, self._keep_last), masked, pc.binary_join_element_wise("***", "", ""))
        if self._key is None:
            if not len(values):
                return values  # compile-time checks run on an empty batch, before the driver resolves the key
            raise ConfigError(
                f"mask {self._column}: method hash has no key (resolved from {self._key_env} by the driver). "
                "Operator action: run through eventray (which resolves it), or resolve_secrets(config) first"
            )
        return _hmac_strings(values, self._key)

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        if self._column not in input_columns:
            raise ConfigError(f"mask names unknown column {self._column!r}; available: {list(input_columns)}")
        return list(input_columns)


def _hmac_strings(values: pa.Array, key: bytes) -> pa.Array:
    """HMAC-SHA256 of each distinct value (computed once per distinct value, not once per row): of its UTF-8 for
    text, of the bytes themselves for binary; 32 hex digits either way."""
    encoded = pc.dictionary_encode(values)
    digests = [
        None if value is None else hmac.new(key, _bytes(value), hashlib.sha256).hexdigest()[:32]
        for value in encoded.dictionary.to_pylist()
    ]
    return pa.array(digests, pa.string()).take(encoded.indices)  # a null index gives a null


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


_OPERATORS: dict[type, type] = {FilterOp: Filter, SelectOp: Select, DeriveOp: Derive, MaskOp: Mask, UpcastOp: Upcast}


def build_operators(
    configs: Sequence[OperatorConfig], input_columns: Sequence[str]
) -> tuple[list[Operator], list[str]]:
    """Build the chain and check every column name along it; return the chain and its output columns.

    Raises :class:`ConfigError` (:class:`ExpressionError` for an expression) prefixed ``operators.N (op):``.
    """
    chain: list[Operator] = []
    columns = list(input_columns)
    for position, config in enumerate(configs):
        try:
            operator: Operator = _OPERATORS[type(config)](config)
            columns = operator.output_columns(columns)
        except ConfigError as error:  # each error type takes one message: keep the type, add the position
            raise type(error)(f"operators.{position} ({config.op}): {error}") from None
        chain.append(operator)
    return chain, columns


def apply_all(chain: Sequence[Operator], batch: pa.RecordBatch) -> pa.RecordBatch:
    for operator in chain:
        batch = operator.apply(batch)
    return batch


@dataclass(frozen=True)
class ChainOutcome:
    """What a chain made of a batch: the output of the rows every operator could compute, and each other row's
    position in the input batch (increasing) with its reason (same order)."""

    events: pa.RecordBatch
    failed_positions: pa.Array
    failed_reasons: pa.Array


def apply_all_isolating_rows(chain: Sequence[Operator], batch: pa.RecordBatch) -> ChainOutcome:
    """Run ``chain`` on ``batch``; rows whose values an operator cannot compute are taken out, the rest go on.

    The output equals :func:`apply_all` of the rows that are not taken out. A row's reason names the operator's
    position, its label and its expression, and why in eventray's words
    (:func:`pipelines.transform.row_errors.classify`), never the row's values. A batch no operator fails on costs what
    :func:`apply_all` costs; one that fails is run again keeping track of rows, and k failing rows cost about ``2 k
    (log2(n) + 1)`` more operator runs.
    Raises what an operator raises when no row fails on its own, or when it fails on no rows (a type error).
    """
    try:
        events = apply_all(chain, batch)
    except VALUE_ERRORS:  # some rows' values, found in a second run (which raises a type error again)
        return _apply_all_tracking_rows(chain, batch)
    return ChainOutcome(events, pa.array([], pa.int64()), pa.array([], pa.string()))


def _apply_all_tracking_rows(chain: Sequence[Operator], batch: pa.RecordBatch) -> ChainOutcome:
    input_rows: _Rows = np.arange(batch.num_rows, dtype=np.int64)  # of each row of ``batch``, as it goes
    failed_rows: list[int] = []
    failed_reasons: list[str] = []
    for position, operator in enumerate(chain):
        batch, kept, failures = _apply_dropping_failures(operator, batch)
        failed_rows += input_rows[list(failures)].tolist()
        failed_reasons += [_reason(position, operator, why) for why in failures.values()]
        input_rows = input_rows[kept]
    order = np.argsort(np.array(failed_rows, dtype=np.int64), kind="stable")
    return ChainOutcome(
        events=batch,
        failed_positions=pa.array(np.array(failed_rows, dtype=np.int64)[order], pa.int64()),
        failed_reasons=pa.array([failed_reasons[index] for index in order.tolist()], pa.string()),
    )


def _apply_dropping_failures(operator: Operator, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, _Rows, dict[int, str]]:
    """``operator`` applied to the rows of ``batch`` it can compute; for each output row its row in ``batch``;
    and the rows it cannot compute, each with why."""
    try:
        output, kept = _apply_tracking_rows(operator, batch)
    except VALUE_ERRORS:
        failures = rows_failing_alone(
            batch.num_rows, lambda start, stop: operator.apply(batch.slice(start, stop - start))
        )
        if not failures:
            raise  # no row fails on its own: the error is not about values
    else:
        return output, kept, {}
    survivors: _Rows = np.setdiff1d(np.arange(batch.num_rows, dtype=np.int64), list(failures))
    output, kept = _apply_tracking_rows(operator, batch.take(pa.array(survivors)))
    return output, survivors[kept], failures


def _apply_tracking_rows(operator: Operator, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, _Rows]:
    """``operator`` applied to ``batch``, and for each output row its row in ``batch``.

    The row numbers ride along as a column named unlike any column of the input or of the operator's output
    (so a derive cannot overwrite it): a filter keeps it on the rows it keeps; a select drops it, but keeps
    every row in order.
    """
    names = batch.schema.names
    row_column = _unused_name([*names, *operator.output_columns(names)])
    rows = np.arange(batch.num_rows, dtype=np.int64)
    output = operator.apply(batch.append_column(row_column, pa.array(rows)))
    index = output.schema.get_field_index(row_column)
    if index < 0:
        assert output.num_rows == batch.num_rows, f"{operator.label} dropped the row numbers and rows"
        return output, rows
    return output.remove_column(index), output.column(index).to_numpy()


def _unused_name(taken: Sequence[str]) -> str:
    name = "_row"
    while name in taken:
        name = f"_{name}"
    return name


def _reason(position: int, operator: Operator, why: str) -> str:
    """A failed row's reason: the operator's place and config, and why; never the row's values."""
    where = f"operators.{position} ({operator.label})"
    if operator.expression_text is None:
        return f"{where}: this event cannot be processed: {why}"
    return f"{where}: expression {operator.expression_text!r} cannot be computed for this event: {why}"
