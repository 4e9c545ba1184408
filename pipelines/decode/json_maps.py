"""The JSON columns pyarrow's reader cannot read: those whose type holds a map, at any depth.

pyarrow's JSON reader refuses an explicit schema with a map type (``JSON conversion to map<…> is not
supported``), so :class:`pipelines.decode.codecs.JsonDecoder` reads the other columns with it and these with
:class:`MapColumnReader`: msgspec's typed reading of the records (:mod:`pipelines.decode.typed_json`, the same
typed reading that judges the other columns' bad lines), whose values ``pyarrow.array`` then converts, one
conversion per column. A record whose value does not fit is judged by the typed reading of all columns
(:meth:`~pipelines.decode.json_verdicts.TypedLines.verdict`): the same verdict and reason whichever fetch holds it.
This path costs Python objects per record (about 2 µs a record, more for large values): a schema without maps
never takes it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pyarrow as pa

from pipelines.decode.json_verdicts import LineVerdict, TypedLines, undecodable_reason
from pipelines.decode.typed_json import as_python, row_struct

__all__ = ["MapColumnReader", "holds_map"]

_TOO_DEEP = "undecodable JSON: nested too deeply to decode"


def holds_map(data_type: pa.DataType) -> bool:
    """Whether ``data_type`` is a map or has one inside (a struct member, a list item, a map value)."""
    if pa.types.is_map(data_type):
        return True
    if pa.types.is_struct(data_type):
        return any(holds_map(field.type) for field in data_type)
    if pa.types.is_list(data_type):
        return holds_map(data_type.value_type)
    return False


class MapColumnReader:
    """Reads ``columns`` (the map-holding fields of a payload schema) from JSON object payloads."""

    def __init__(self, columns: list[pa.Field], typed: TypedLines) -> None:
        self._columns = columns
        self._typed = typed
        self._decoder = msgspec.json.Decoder(row_struct("MapColumns", {field.name: field.type for field in columns}))

    def read(self, payloads: pa.Array) -> tuple[dict[str, pa.Array], list[LineVerdict]]:
        """The columns' values of the ``payloads`` (binary, each one JSON object) that fit, in order, and the
        others (their index in ``payloads``, error type, reason)."""
        values: list[list[Any]] = [[] for _ in self._columns]
        bad: list[LineVerdict] = []
        for index, payload in enumerate(payloads.to_pylist()):
            try:
                row = self._decoder.decode(payload)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                bad.append((index, *self._verdict(payload)))
                continue
            for position, column in enumerate(values):
                column.append(as_python(getattr(row, f"f{position}")))
        arrays = {field.name: pa.array(column, field.type) for field, column in zip(self._columns, values, strict=True)}
        return arrays, bad

    def _verdict(self, payload: bytes) -> tuple[str, str]:
        """Why the typed reading refuses ``payload``; the typed reading of all columns accepts what this one
        refuses only when msgspec cannot go as deep as the record (no nesting limit): undecodable then."""
        return self._typed.verdict(payload) or ("undecodable", undecodable_reason(payload) or _TOO_DEEP)
