"""``op: upcast``: stored events of older schema versions brought to the version an aggregate reads, in a pipeline
that reads an events topic (a projection): the rows' ``event_type``, ``schema_version`` and ``data`` (JSON text)
go through the aggregate class's upcasters column-wise (:mod:`pipelines.state.upcasting`); rows already current
pass as they are, every other column untouched. A row that cannot be upcast (data that is not JSON, an upcaster
that raises on it, a version newer than the class knows) is dead-lettered with the reason and the others go on;
an upcaster chain with a missing step fails when the pipeline is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa

from pipelines.config.pipeline import UpcastOp
from pipelines.errors import ConfigError
from pipelines.state.event_sourced import load_aggregate
from pipelines.state.upcasting import upcast_events
from pipelines.transform.row_errors import RowValueError

__all__ = ["UPCAST_COLUMNS", "Upcast"]

UPCAST_COLUMNS = ("event_type", "schema_version", "data")


class Upcast:
    def __init__(self, config: UpcastOp) -> None:
        self._path = config.aggregate
        self._aggregate = load_aggregate(config.aggregate)

    @property
    def label(self) -> str:
        return f"upcast {self._path}"

    @property
    def expression_text(self) -> str | None:
        return None

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.num_rows == 0:
            return batch
        rows = batch.select(list(UPCAST_COLUMNS)).to_pylist()
        try:
            upcast = upcast_events(self._aggregate, rows)
        except Exception:  # noqa: BLE001 - user code or data: each row alone says which fail and why
            upcast = [self._upcast_one(row) for row in rows]
        if upcast is rows:
            return batch
        for name in UPCAST_COLUMNS:
            index = batch.schema.get_field_index(name)
            values = pa.array([row[name] for row in upcast], batch.schema.field(index).type)
            batch = batch.set_column(index, name, values)
        return batch

    def _upcast_one(self, row: dict[str, Any]) -> dict[str, Any]:
        """One row upcast alone; one that cannot be raises a value error (its row is dead-lettered with why)."""
        try:
            return upcast_events(self._aggregate, [row])[0]
        except msgspec.DecodeError:
            raise RowValueError("its data is not JSON, so it cannot be upcast") from None
        except Exception as error:  # noqa: BLE001 - an upcaster (user code) or an unknown version: this row's fault
            # the type and version name the chain; the error's text could quote the row's values, so it is left out
            raise RowValueError(f"{row['event_type']} of schema version {row['schema_version']} cannot be upcast "
                                f"({type(error).__name__})") from None  # fmt: skip

    def output_columns(self, input_columns: Sequence[str]) -> list[str]:
        missing = [name for name in UPCAST_COLUMNS if name not in input_columns]
        if missing:
            raise ConfigError(f"upcast needs the columns {list(UPCAST_COLUMNS)} of stored events; missing {missing}")
        return list(input_columns)
