"""What a process function emits, as Arrow rows: conformed to the schema it declares, when it declares one.

A process function class may declare ``output_schema`` (a class attribute, a ``pyarrow.Schema``): a promise that
every row it emits has exactly that schema. The promise is what lets another keyed stage follow it (the plan
checks the next stage against the schema before anything runs), and it is kept here, on every call's output:

- a list of dicts is built with the schema: a key the schema does not name is left out, a missing one is null,
  and a column of nulls keeps its declared type (a list built without a schema would make it ``null``);
- a table or record batch is reduced to the schema's columns, in its order, each cast (safely: no value may
  change) to its declared type within its kind (an int32 column to int64; text is not cast to a number, nor a
  number, a flag or a time to another kind); a column it lacks is null.

A row that cannot be made to fit (a value of another type, a float in an integer column, which Arrow would
truncate, a null in a column declared not nullable) is a bug of the function, not of the data: the same rows
would fail again after any restart, and the rows a next stage folds into its state cannot be dropped
quietly. So it is not dead-lettered: :class:`ProcessOutputError` (a :class:`~pipelines.errors.FatalError`)
propagates out of the operator, as every exception a process function raises does, and stops the pipeline
with a message naming the function, the column and the declared type (never the value: it is event data). The
last checkpoint is kept; once the function is fixed, a run resumes from it.

A function that declares nothing emits what it returns as it is (types inferred, promoted across calls), and
no stage can follow it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import pyarrow as pa

from pipelines.errors import ConfigError, FatalError

__all__ = ["Output", "ProcessOutput", "ProcessOutputError", "declared_output_schema"]

Output: TypeAlias = list[dict[str, Any]] | pa.Table | pa.RecordBatch | None  # rows user code emits

# what building or casting a column raises when a value does not fit its type
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


class ProcessOutputError(FatalError):
    """A process function emitted rows that do not fit the ``output_schema`` it declares.

    Operator action: fix the function (or its ``output_schema``) and run again: the run resumes from the last
    checkpoint.
    """


def declared_output_schema(function: object, name: str) -> pa.Schema | None:
    """The ``output_schema`` the process function ``function`` (named ``name``, ``module:Class``) declares, None
    when it declares none; raise :class:`ConfigError` naming the function when it is not a ``pyarrow.Schema``."""
    declared = getattr(function, "output_schema", None)
    if declared is None or isinstance(declared, pa.Schema):
        return declared
    raise ConfigError(
        f"process function {name!r} declares output_schema as {type(declared).__name__}, not a pyarrow.Schema; "
        "declare the rows it emits, e.g. output_schema = pa.schema([('customer_id', pa.string()), "
        "('_timestamp', pa.int64())]), or leave it out (then no stage can follow the function)"
    )


class ProcessOutput:
    """Turns what one process function (``function_name``, ``module:Class``) returns into Arrow rows, conformed
    to its ``schema`` when it declares one (see the module docstring)."""

    def __init__(self, function_name: str, schema: pa.Schema | None) -> None:
        self._function = function_name
        self.schema = schema

    def collect(self, outputs: list[Output]) -> pa.Table | None:
        """The rows of several calls as one table (None when there are none). Raise :class:`ProcessOutputError`
        for rows that do not fit the declared schema, ``TypeError`` for a return value that is no rows at all."""
        tables = [self.table(output) for output in self._merged(outputs) if output is not None]
        tables = [table for table in tables if table.num_rows]
        if not tables:
            return None
        if self.schema is not None:
            return pa.concat_tables(tables)
        return pa.concat_tables(tables, promote_options="permissive")

    def _merged(self, outputs: list[Output]) -> list[Output]:
        """``outputs`` with each run of lists of dicts made one list, when the schema is declared: rows are
        converted once per batch, not once per key (a table per key cost more than the function itself)."""
        if self.schema is None:
            return outputs
        merged: list[Output] = []
        for output in outputs:
            last = merged[-1] if merged else None
            if isinstance(output, list) and isinstance(last, list):
                last.extend(output)  # a copy of the function's list (below): never the function's own
            else:
                merged.append(list(output) if isinstance(output, list) else output)
        return merged

    def table(self, output: list[dict[str, Any]] | pa.Table | pa.RecordBatch) -> pa.Table:
        """The rows of one call."""
        if isinstance(output, pa.RecordBatch):
            output = pa.Table.from_batches([output])
        if isinstance(output, pa.Table):
            return output if self.schema is None else self._conformed_table(output, self.schema)
        if isinstance(output, list) and all(isinstance(row, dict) for row in output):
            return pa.Table.from_pylist(output) if self.schema is None else self._conformed_rows(output, self.schema)
        raise TypeError(
            f"process function {self._function!r} returned {type(output).__name__}; return a list of dicts, a "
            "table, a record batch or None"
        )

    def _conformed_rows(self, rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
        try:
            table = pa.Table.from_pylist(rows, schema=schema)
        except _CONVERSION_ERRORS:
            raise self._unfit_value(rows, schema) from None
        for field in schema:  # Arrow converts a float to an integer by truncating it: a silent change of value
            if pa.types.is_integer(field.type) and (row := _first_float(rows, field.name)) is not None:
                raise self._error(field, f"row {row} of its output holds a float")
        return self._checked_nulls(table)

    def _conformed_table(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        columns = []
        for field in schema:
            index = table.schema.get_field_index(field.name)
            if index < 0:
                columns.append(pa.nulls(table.num_rows, field.type))
                continue
            column = table.column(index)
            if column.type != field.type and _kind(column.type) not in (_kind(field.type), "null"):
                why = (f"the column it returned is {column.type}, whose values do not convert to it without a change "
                       "of kind (text to number, number to text, a flag or a time to a number); convert them in the "
                       "function")  # fmt: skip
                raise self._error(field, why)
            try:
                columns.append(column if column.type == field.type else column.cast(field.type))
            except _CONVERSION_ERRORS:
                why = f"the column it returned is {column.type}, whose values do not all cast to it"
                raise self._error(field, why) from None
        return self._checked_nulls(pa.Table.from_arrays(columns, schema=schema))

    def _checked_nulls(self, table: pa.Table) -> pa.Table:
        """``table``, once every column declared not nullable is found to have no null (Arrow does not check)."""
        for field, column in zip(table.schema, table.columns, strict=True):
            if not field.nullable and column.null_count:
                row = column.is_null().index(True).as_py()
                raise self._error(field, f"row {row} of its output has no value in it (null or missing)")
        return table

    def _unfit_value(self, rows: list[dict[str, Any]], schema: pa.Schema) -> ProcessOutputError:
        """The error naming the first column (and the first row in it) whose value does not convert."""
        for field in schema:
            values = [row.get(field.name) for row in rows]
            try:
                pa.array(values, field.type)
            except _CONVERSION_ERRORS:
                row = next((index for index, value in enumerate(values) if not _converts(value, field.type)), None)
                if row is None:  # no value fails alone: the column as a whole does not fit (too large, say)
                    return self._error(field, "its values do not convert to it together")
                return self._error(field, f"row {row} of its output holds {_a(type(values[row]).__name__)}")
        return ProcessOutputError(  # not reached: when a table of rows fails, some column fails on its own
            f"process function {self._function!r} emitted rows that do not fit its output_schema. Operator action: "
            "fix the function (or its output_schema) and run again; the run resumes from the last checkpoint"
        )

    def _error(self, field: pa.Field, why: str) -> ProcessOutputError:
        return ProcessOutputError(
            f"process function {self._function!r} emitted rows that do not fit its output_schema: column "
            f"{field.name!r} is declared {field.type}{'' if field.nullable else ' not null'}, and {why}. Operator "
            "action: fix the function (or its output_schema) and run again; the run resumes from the last checkpoint"
        )


def _kind(data_type: pa.DataType) -> str:
    """What a value of ``data_type`` is, beyond its width: a cast within a kind keeps values (or fails safely);
    one across kinds (``"12"`` to 12, ``True`` to 1, a time to its ticks) changes what they mean."""
    kinds: list[tuple[str, Callable[[pa.DataType], bool]]] = [
        ("null", pa.types.is_null),
        ("integer", pa.types.is_integer),
        ("floating", pa.types.is_floating),
        ("decimal", pa.types.is_decimal),
        ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("binary", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
        ("boolean", pa.types.is_boolean),
        ("time", pa.types.is_temporal),
        ("list", lambda t: pa.types.is_list(t) or pa.types.is_large_list(t)),
        ("struct", pa.types.is_struct),
    ]
    return next((name for name, test in kinds if test(data_type)), str(data_type))


def _converts(value: Any, kind: pa.DataType) -> bool:
    try:
        pa.array([value], kind)
    except _CONVERSION_ERRORS:
        return False
    return True


def _first_float(rows: list[dict[str, Any]], name: str) -> int | None:
    return next((index for index, row in enumerate(rows) if isinstance(row.get(name), float)), None)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"
