"""Event schemas: the Arrow schema of decoded events, the metadata columns, and columnar validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.field_types import arrow_type
from pipelines.config.pipeline import SchemaConfig
from pipelines.errors import ExpressionError
from pipelines.transform.expressions import CompiledExpression, compile_expression
from pipelines.transform.row_errors import VALUE_ERRORS, rows_failing_alone

__all__ = [
    "METADATA_FIELDS",
    "METADATA_NAMES",
    "EventSchema",
    "ValidationOutcome",
]

#: Columns every batch carries (ARCHITECTURE.md section 2); operators keep them unless they aggregate.
METADATA_FIELDS: tuple[pa.Field, ...] = (
    pa.field("_partition", pa.int32(), nullable=False),
    pa.field("_offset", pa.int64(), nullable=False),
    pa.field("_timestamp", pa.int64()),
    pa.field("_key", pa.binary()),
    pa.field("_traceparent", pa.string()),
    pa.field("_event_id", pa.string()),
)

METADATA_NAMES = frozenset(field.name for field in METADATA_FIELDS)


@dataclass(frozen=True)
class ValidationOutcome:
    """Row indices that passed, and for each failed row its index and reason (same order)."""

    valid_indices: pa.Array
    invalid_indices: pa.Array
    invalid_reasons: pa.Array


class EventSchema:
    """The decoded shape of events and the rules (required columns, checks) that make one valid."""

    def __init__(self, config: SchemaConfig) -> None:
        self.config = config
        self.payload_schema = pa.schema([pa.field(name, arrow_type(kind)) for name, kind in config.fields.items()])
        self._checks: list[CompiledExpression] = [compile_expression(text) for text in config.checks]
        for check in self._checks:
            check.check_columns(self.payload_schema.names)

    @property
    def batch_schema(self) -> pa.Schema:
        """Payload columns followed by the metadata columns (a payload ``_timestamp``, the event time of records
        eventray wrote, is the metadata column)."""
        payload = [field for field in self.payload_schema if field.name not in METADATA_NAMES]
        return pa.schema(payload + list(METADATA_FIELDS))

    def validate(self, batch: pa.RecordBatch) -> ValidationOutcome:
        """Evaluate required columns, then checks, in order; a row's reason is the first rule it fails.

        A check that cannot be computed for a row's values (a checked overflow, a failed cast) fails that row,
        with a reason naming the check but not the value; the other rows get the check's verdict. Raises
        :class:`ExpressionError` for a check that fails to run for no single row (e.g. on the column types).
        """
        reasons = np.full(batch.num_rows, None, dtype=object)
        failed = np.zeros(batch.num_rows, dtype=bool)
        for name in self.config.required:
            missing = pc.is_null(batch.column(name)).to_numpy(zero_copy_only=False)
            self._mark(reasons, failed, missing, f"required field {name!r} is missing or null")
        for check in self._checks:
            try:
                passed, unevaluable = _check_verdicts(check, batch)
            except VALUE_ERRORS as error:
                raise ExpressionError(f"schema check failed to run: {error}") from None
            for why, rows in unevaluable.items():
                self._mark(reasons, failed, rows, f"check could not be evaluated: {check.text} ({why})")
            self._mark(reasons, failed, ~passed, f"check failed: {check.text}")
        invalid = np.flatnonzero(failed)
        return ValidationOutcome(
            valid_indices=pa.array(np.flatnonzero(~failed), type=pa.int64()),
            invalid_indices=pa.array(invalid, type=pa.int64()),
            invalid_reasons=pa.array(reasons[invalid].tolist(), type=pa.string()),
        )

    @staticmethod
    def _mark(reasons: np.ndarray, failed: np.ndarray, failing: np.ndarray, reason: str) -> None:
        newly = failing & ~failed
        if newly.any():
            reasons[newly] = reason
            failed |= newly


_Mask = npt.NDArray[np.bool_]


def _check_verdicts(check: CompiledExpression, batch: pa.RecordBatch) -> tuple[_Mask, dict[str, _Mask]]:
    """Which rows pass ``check`` (null: no), and the rows it cannot be computed for (masks, by why); those
    count as passing here, so that only their own reason marks them."""
    try:
        return _passes(check, batch), {}
    except VALUE_ERRORS:
        failures = rows_failing_alone(
            batch.num_rows, lambda start, stop: check.evaluate(batch.slice(start, stop - start))
        )
        if not failures:
            raise  # no row fails on its own: the error is not about values
    computable = np.ones(batch.num_rows, dtype=bool)
    computable[list(failures)] = False
    passed = np.ones(batch.num_rows, dtype=bool)
    passed[computable] = _passes(check, batch.filter(pa.array(computable)))
    unevaluable: dict[str, _Mask] = {}
    for row, why in failures.items():
        unevaluable.setdefault(why, np.zeros(batch.num_rows, dtype=bool))[row] = True
    return passed, unevaluable


def _passes(check: CompiledExpression, batch: pa.RecordBatch) -> _Mask:
    passed: _Mask = pc.fill_null(check.evaluate(batch), False).to_numpy(zero_copy_only=False)
    return passed
