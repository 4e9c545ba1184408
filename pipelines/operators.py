"""Stateless operators on record batches: filter, select/rename, derive, mask.

Contract: :meth:`Operator.apply` takes a batch and returns a batch; it never blocks and raises only
:class:`~pipelines.errors.ExpressionError` for an expression that cannot run on the batch's types. Metadata
columns (``_partition``, ``_offset`` ...) pass through unless a ``select`` drops them. Column names are
checked when the chain is built (:func:`build_operators`), so a typo fails before anything starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import DeriveOp, FilterOp, MaskOp, OperatorConfig, SelectOp
from pipelines.errors import ConfigError, ExpressionError
from pipelines.expressions import compile_expression

__all__ = ["Derive", "Filter", "Mask", "Operator", "Select", "apply_all", "build_operators"]


class Operator(Protocol):
    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        """The columns this operator emits for the given input columns; raises ConfigError if one is unknown."""
        ...


class Filter:
    """Keeps the rows for which the expression is true (null counts as false).

    The expression's type is only known from the batch: one that is not true/false raises ExpressionError.
    """

    def __init__(self, config: FilterOp) -> None:
        self._expression = compile_expression(config.expr)

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

    def __init__(self, config: SelectOp) -> None:
        self._columns = list(config.columns)
        self._rename = dict(config.rename)

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        selected = batch.select(self._columns)
        return selected.rename_columns([self._rename.get(name, name) for name in self._columns])

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        missing = [name for name in self._columns if name not in input_columns]
        if missing:
            raise ConfigError(f"select names unknown column(s) {missing}; available: {list(input_columns)}")
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
    """Masks personal data in a string column: ``redact`` (``***``), ``hash`` (sha256, stable, joinable),
    or ``keep_last`` (``***`` + the last N characters). Nulls stay null."""

    def __init__(self, config: MaskOp) -> None:
        self._column = config.column
        self._method = config.method
        self._keep_last = config.keep_last

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        index = batch.schema.get_field_index(self._column)
        values = pc.cast(batch.column(index), pa.string())
        return batch.set_column(index, self._column, self._mask(values))

    def _mask(self, values: pa.Array) -> pa.Array:
        if self._method == "redact":
            return pc.if_else(pc.is_valid(values), pa.scalar("***"), pa.scalar(None, pa.string()))
        if self._method == "keep_last":
            length = pc.utf8_length(values)
            tail = pc.utf8_slice_codeunits(values, start=-self._keep_last) if self._keep_last else pa.scalar("")
            masked = pc.binary_join_element_wise("***", tail, "")
            return pc.if_else(pc.greater(length, self._keep_last), masked, pc.binary_join_element_wise("***", "", ""))
        return _hash_strings(values)

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        if self._column not in input_columns:
            raise ConfigError(f"mask names unknown column {self._column!r}; available: {list(input_columns)}")
        return list(input_columns)


def _hash_strings(values: pa.Array) -> pa.Array:
    """sha256 of each distinct value (hashed once per distinct value, not once per row)."""
    encoded = pc.dictionary_encode(values)
    digests = [
        None if value is None else hashlib.sha256(value.encode()).hexdigest()[:16]
        for value in encoded.dictionary.to_pylist()
    ]
    return pa.array(digests, pa.string()).take(encoded.indices)  # a null index gives a null


_OPERATORS: dict[type, type] = {FilterOp: Filter, SelectOp: Select, DeriveOp: Derive, MaskOp: Mask}


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
