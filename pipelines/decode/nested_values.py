"""Whether a decoded Python value (an Avro record's field, as fastavro reads it) fits a nested Arrow type.

``pyarrow.array(values, type)`` converts too much to be the judge of nested values: a string into
``list<string>`` becomes a list of its characters, bytes into ``list<int64>`` a list of byte values, ``1.5``
into int64 (at any depth) is truncated to ``1``, a tuple fills a struct by position. :func:`misfit_path` says
what fits, strictly, as fastavro reads Avro values:

- a struct is a dict: its members by name (a missing one is null, other keys are ignored);
- a list is a list; a map is a dict whose keys are of the key type (Avro map keys are strings, so only
  ``map<string, …>`` takes Avro maps);
- int64 takes an int within int64 (not a bool, not a float); float64 an int or a float (not a bool); bool a
  bool; string a str; binary bytes;
- None fits everywhere (every nested value may be null), but a map key.

Flat columns are judged by ``pyarrow.array`` as before (:func:`pipelines.decode.binary_codecs.fitted_columns`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

__all__ = ["is_nested", "misfit_path"]

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def is_nested(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_struct(data_type) or pa.types.is_list(data_type) or pa.types.is_map(data_type))


def misfit_path(value: Any, data_type: pa.DataType) -> str | None:
    """None if ``value`` fits ``data_type``; else where in it the first misfit is: ``""`` (the value itself),
    ``.address.zip`` (struct members), ``[3]`` (a list position), ``[...]`` (a map key or value: keys are data,
    never named)."""
    if value is None:
        return None
    if pa.types.is_struct(data_type):
        return _struct_misfit(value, data_type)
    if pa.types.is_list(data_type):
        return "" if type(value) is not list else _items_misfit(value, data_type.value_type)
    if pa.types.is_map(data_type):
        return _map_misfit(value, data_type)
    return None if _leaf_check(data_type)(value) else ""


def _struct_misfit(value: Any, data_type: pa.StructType) -> str | None:
    if type(value) is not dict:
        return ""
    for field in data_type:
        inner = misfit_path(value.get(field.name), field.type)
        if inner is not None:
            return f".{field.name}{inner}"
    return None


def _map_misfit(value: Any, data_type: pa.MapType) -> str | None:
    if type(value) is not dict:
        return ""
    key_fits = _leaf_check(data_type.key_type)
    if not all(key_fits(key) for key in value):
        return "[...]"
    inner = _items_misfit(list(value.values()), data_type.item_type)
    return None if inner is None else "[...]" + inner[inner.index("]") + 1 :]  # the key, not the position


def _items_misfit(value: list[Any], item_type: pa.DataType) -> str | None:
    if not is_nested(item_type):  # the common case, a list of scalars: one predicate per item, no recursion
        fits = _leaf_check(item_type)
        return next((f"[{index}]" for index, item in enumerate(value) if item is not None and not fits(item)), None)
    for index, item in enumerate(value):
        inner = misfit_path(item, item_type)
        if inner is not None:
            return f"[{index}]{inner}"
    return None


def _leaf_check(data_type: pa.DataType) -> Callable[[Any], bool]:
    if pa.types.is_int64(data_type):
        return _is_int64
    if pa.types.is_float64(data_type):
        return _is_number
    if pa.types.is_boolean(data_type):
        return lambda value: type(value) is bool
    if pa.types.is_string(data_type):
        return lambda value: type(value) is str
    if pa.types.is_binary(data_type):
        return lambda value: type(value) is bytes
    raise TypeError(f"no check for the Arrow type {data_type}")


def _is_int64(value: Any) -> bool:
    return type(value) is int and _INT64_MIN <= value <= _INT64_MAX


def _is_number(value: Any) -> bool:
    return type(value) is float or (type(value) is int and _INT64_MIN <= value <= _INT64_MAX)
