"""Expressions on nested columns: struct member paths (``customer.address.zip``), ``list_size`` and ``map_get``,
in filters, derived columns, selects and schema checks; a wrong path fails naming it and what is there."""

from __future__ import annotations

from typing import Any, cast

import pyarrow as pa
import pytest

from pipelines.config.field_types import arrow_type
from pipelines.config.pipeline import DeriveOp, FilterOp, SchemaConfig, SelectOp
from pipelines.decode.schema import EventSchema
from pipelines.errors import ConfigError, ExpressionError
from pipelines.transform.expressions import compile_expression
from pipelines.transform.operators import Derive, Filter, Select

FIELDS = {
    "id": "string",
    "customer": "struct<name: string, address: struct<zip: string, floor: int64>>",
    "items": "list<struct<sku: string, qty: int64>>",
    "scores": "map<string, float64>",
    "counts": "map<int64, string>",
}
ROWS: list[dict[str, Any]] = [
    {
        "id": "a",
        "customer": {"name": "Ann", "address": {"zip": "10115", "floor": 3}},
        "items": [{"sku": "s", "qty": 1}, None],
        "scores": {"x": 1.5, "y": None},
        "counts": {7: "seven"},
    },
    {"id": "b", "customer": {"name": "Bo", "address": None}, "items": [], "scores": {}, "counts": {}},
    {"id": "c", "customer": None, "items": None, "scores": None, "counts": None},
    {"id": "d", "customer": {"name": None, "address": {"zip": None, "floor": None}}},
]
BATCH = pa.RecordBatch.from_pylist(
    ROWS, schema=pa.schema([pa.field(name, arrow_type(kind)) for name, kind in FIELDS.items()])
)


def run(text: str) -> list[Any]:
    return cast("list[Any]", compile_expression(text).evaluate(BATCH).to_pylist())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("customer.name", ["Ann", "Bo", None, None]),
        ("customer.address.zip", ["10115", None, None, None]),
        ("customer.address.floor + 1", [4, None, None, None]),
        ('customer.address.zip == "10115"', [True, None, None, None]),
        ("is_null(customer.address)", [False, True, True, False]),
        ("coalesce(customer.address.zip, customer.name, id)", ["10115", "Bo", "c", "d"]),
        ("list_size(items)", [2, 0, None, None]),
        ("list_size(scores)", [2, 0, None, None]),
        ('map_get(scores, "x")', [1.5, None, None, None]),
        ('map_get(scores, "y")', [None, None, None, None]),
        ("map_get(counts, 7)", ["seven", None, None, None]),
        ("map_get(counts, -7)", [None, None, None, None]),
    ],
)
def test_paths_and_functions_evaluate_with_null_wherever_a_level_is_null(text: str, expected: list[Any]) -> None:
    assert run(text) == expected


def test_a_path_reads_its_root_column() -> None:
    assert compile_expression("customer.address.zip == id").columns == {"customer", "id"}
    compile_expression("customer.address.zip").check_columns(list(FIELDS))
    with pytest.raises(ExpressionError, match=r"unknown column\(s\) \['custmer'\]"):
        compile_expression("custmer.address.zip").check_columns(list(FIELDS))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "customer.adress.zip",
            "'customer.adress': 'customer' has no member 'adress'; its members: ['name', 'address']",
        ),
        ("customer.address.city", "'customer.address' has no member 'city'; its members: ['zip', 'floor']"),
        ("customer.name.first", "'customer.name.first' names a member of 'customer.name', which is of type string"),
        ("items.sku", "'items.sku' names a member of 'items', which is of type list<item: struct<sku: string"),
        ("scores.x", "which is of type map<string, double>, not a struct; paths reach struct members only"),
        ("list_size(id)", "list_size takes a list or a map, not a value of type string"),
        ('map_get(items, "x")', "map_get takes a map, not a value of type list"),
        ('map_get(counts, "7")', "map_get: the key '7' is not a int64, the map's key type"),
        ("map_get(scores, 1)", "map_get: the key 1 is not a string, the map's key type"),
    ],
)
def test_a_wrong_path_or_argument_names_it_and_what_is_there(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        run(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lower(id).x", "'lower(id).x' is not a path; a path starts at a column"),
        ('"abc".x', "is not a path"),
        ("map_get(scores, id)", "argument 2 of map_get must be a string or integer constant"),
        ("map_get(scores, True)", "argument 2 of map_get must be a string or integer constant"),
        ("map_get(scores, 2 ** 64)", "argument 2 of map_get must be a string or integer constant"),
        ("items[0]", "Subscript is not supported"),
    ],
)
def test_what_is_not_a_path_or_a_constant_key_fails_when_compiled(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        compile_expression(text)


def test_filter_derive_and_select_on_nested_columns() -> None:
    kept = Filter(FilterOp(op="filter", expr='customer.address.zip == "10115" or list_size(items) == 0')).apply(BATCH)
    derived = Derive(DeriveOp(op="derive", column="zip", expr="customer.address.zip")).apply(kept)
    selected = Select(SelectOp(op="select", columns=["id", "zip", "customer", "scores"])).apply(derived)

    assert selected.schema.field("customer").type == BATCH.schema.field("customer").type
    assert selected.to_pylist(maps_as_pydicts="strict") == [
        {"id": "a", "zip": "10115", "customer": ROWS[0]["customer"], "scores": {"x": 1.5, "y": None}},
        {"id": "b", "zip": None, "customer": ROWS[1]["customer"], "scores": {}},
    ]


def test_select_of_a_member_path_suggests_deriving_it() -> None:
    with pytest.raises(ConfigError, match=r"customer\.name is a struct member\? derive it as a column first"):
        Select(SelectOp(op="select", columns=["id", "customer.name"])).output_columns(list(FIELDS))


def test_schema_checks_on_member_paths_make_dead_letter_reasons() -> None:
    schema = EventSchema(
        SchemaConfig(
            fields=FIELDS,
            required=["customer"],
            checks=[
                "is_null(customer.address.floor) or customer.address.floor >= 0",
                "is_null(items) or list_size(items) < 2",
            ],
        )
    )
    batch = pa.RecordBatch.from_pylist(
        [*ROWS, {"id": "e", "customer": {"address": {"floor": -1}}}], schema=schema.payload_schema
    )

    outcome = schema.validate(batch)

    assert outcome.valid_indices.to_pylist() == [1, 3]
    assert dict(zip(outcome.invalid_indices.to_pylist(), outcome.invalid_reasons.to_pylist(), strict=True)) == {
        0: "check failed: is_null(items) or list_size(items) < 2",
        2: "required field 'customer' is missing or null",
        4: "check failed: is_null(customer.address.floor) or customer.address.floor >= 0",
    }


def test_a_check_naming_an_unknown_member_fails_on_the_first_batch_naming_it() -> None:
    schema = EventSchema(SchemaConfig(fields=FIELDS, checks=["customer.adress.zip != ''"]))
    with pytest.raises(ExpressionError, match=r"'customer' has no member 'adress'; its members: \['name', 'address'\]"):
        schema.validate(pa.RecordBatch.from_pylist([], schema=schema.payload_schema))
