"""msgspec types that read JSON values as pyarrow's JSON reader reads them into Arrow types.

For every column type of a schema, :func:`json_type` gives the msgspec type that accepts exactly the JSON values
pyarrow's reader (with an explicit schema, unexpected fields ignored) turns into a value of that type:

- int64 takes integers within int64 only; float64 integers and decimals; string and binary strings (a binary
  value is the string's UTF-8 bytes, no base64); bool ``true``/``false``;
- a struct takes an object: its members by name, a missing member is null, other keys are ignored;
- a list takes an array of its item type;
- a map takes an object whose keys are the key type (string, or an integer written as a string: ``{"7": …}``)
  and whose values are the value type (pyarrow's reader cannot read maps: msgspec's reading is the only one);
- ``null`` everywhere (a column, a member, an element, a map value), and no key at all for a column or member.

Structs are read into msgspec Structs whose fields are named ``f0, f1, …`` and renamed to the member names, so any
name works (a Python keyword, a hyphen, a leading digit); :func:`as_python` turns a read value into the dicts and
lists ``pyarrow.array`` converts.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pyarrow as pa

__all__ = ["as_python", "json_type", "row_struct"]

_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


def json_type(data_type: pa.DataType) -> Any:
    """The msgspec type reading a JSON value into ``data_type`` as pyarrow's reader does, null included."""
    return _non_null(data_type) | None


def row_struct(name: str, columns: dict[str, pa.DataType]) -> type[msgspec.Struct]:
    """A Struct with one optional field per column (see the module docstring for the field names)."""
    attributes = [(f"f{index}", json_type(kind), None) for index, kind in enumerate(columns.values())]
    rename = {f"f{index}": column for index, column in enumerate(columns)}
    return msgspec.defstruct(name, attributes, rename=rename, gc=False)


def as_python(value: Any) -> Any:
    """A value read with a :func:`json_type` as the dicts (member or key -> value), lists and scalars
    ``pyarrow.array`` converts to its Arrow type."""
    return msgspec.to_builtins(value)


def _non_null(data_type: pa.DataType) -> Any:  # noqa: PLR0911 - one branch per kind of type
    if pa.types.is_struct(data_type):
        return row_struct("Struct", {field.name: field.type for field in data_type})
    if pa.types.is_list(data_type):
        return list[json_type(data_type.value_type)]  # type: ignore[misc]
    if pa.types.is_map(data_type):
        return dict[_non_null(data_type.key_type), json_type(data_type.item_type)]  # type: ignore[misc]
    if pa.types.is_int64(data_type):
        return _Int64
    if pa.types.is_float64(data_type):
        return float
    if pa.types.is_boolean(data_type):
        return bool
    if pa.types.is_string(data_type) or pa.types.is_binary(data_type):
        return str
    raise TypeError(f"no JSON reading for the Arrow type {data_type}")
