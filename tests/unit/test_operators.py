"""Stateless operators: filter, select/rename, derive, mask, and the checks build_operators makes up front."""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
import pytest
from pydantic import SecretStr

from pipelines.config.pipeline import DeriveOp, FilterOp, MaskOp, OperatorConfig, SelectOp
from pipelines.errors import ConfigError, ExpressionError
from pipelines.transform.operators import Derive, Filter, Mask, Select, apply_all, build_operators

BATCH = pa.record_batch(
    {
        "event_type": ["OrderCreated", "PaymentProcessed", None, "OrderCreated", "OrderCreated"],
        "amount_cents": pa.array([500, 700, 900, None, 20_000], pa.int64()),
        "email": ["ann@example.com", None, "bob@example.com", "ann@example.com", "x@y"],
        "_offset": pa.array([10, 11, 12, 13, 14], pa.int64()),
    }
)
COLUMNS = BATCH.schema.names


KEY = "a-test-key-of-enough-bytes-0123456789"


def sha16(text: str, key: str = KEY) -> str:
    """The independent recomputation: HMAC-SHA256 under ``key``, 32 hex digits."""
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]


def hashing(column: str, key: str = KEY) -> Mask:
    return Mask(MaskOp(op="mask", column=column, method="hash").model_copy(update={"key": SecretStr(key)}))


def test_filter_keeps_true_rows_and_drops_nulls() -> None:
    out = Filter(FilterOp(op="filter", expr="event_type == 'OrderCreated' and amount_cents > 600")).apply(BATCH)
    # row 3 has a null amount: the condition is null, and a null drops the row
    assert out.column("_offset").to_pylist() == [14]
    assert out.schema == BATCH.schema


def test_filter_with_null_condition_drops_the_row() -> None:
    out = Filter(FilterOp(op="filter", expr="event_type == 'OrderCreated'")).apply(BATCH)
    assert out.column("_offset").to_pylist() == [10, 13, 14]


def test_filter_can_keep_nothing() -> None:
    out = Filter(FilterOp(op="filter", expr="amount_cents < 0")).apply(BATCH)
    assert out.num_rows == 0
    assert out.schema == BATCH.schema


def test_non_boolean_filter_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError):
        Filter(FilterOp(op="filter", expr="amount_cents + 1")).apply(BATCH)


def test_non_boolean_filter_error_names_the_expression_and_type() -> None:
    with pytest.raises(ExpressionError, match=r"filter expression 'amount_cents \+ 1' must be true/false, got int64"):
        Filter(FilterOp(op="filter", expr="amount_cents + 1")).apply(BATCH)


def test_filter_of_constant_none_keeps_nothing() -> None:
    assert Filter(FilterOp(op="filter", expr="None")).apply(BATCH).num_rows == 0


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("amount_cents >", "is not valid"),
        ("sqrt(amount_cents) > 1", "unknown function 'sqrt'"),
        ("lower() == 'x'", "lower takes (value)"),
    ],
)
def test_expression_errors_when_built_carry_the_position(expr: str, message: str) -> None:
    configs: list[OperatorConfig] = [MaskOp(op="mask", column="email"), FilterOp(op="filter", expr=expr)]
    with pytest.raises(ExpressionError) as caught:
        build_operators(configs, COLUMNS)
    assert str(caught.value).startswith("operators.1 (filter): expression ")
    assert message in str(caught.value)


def test_select_keeps_listed_columns_in_order_and_renames() -> None:
    select = Select(SelectOp(op="select", columns=["_offset", "amount_cents"], rename={"amount_cents": "cents"}))
    out = select.apply(BATCH)
    assert out.schema.names == ["_offset", "cents"]
    assert out.column("cents").to_pylist() == [500, 700, 900, None, 20_000]
    assert select.output_columns(COLUMNS) == ["_offset", "cents"]


def test_select_unknown_column_names_the_available_ones() -> None:
    select = Select(SelectOp(op="select", columns=["_offset", "nope"]))
    with pytest.raises(ConfigError) as caught:
        select.output_columns(COLUMNS)
    assert "['nope']" in str(caught.value)
    assert str(COLUMNS) in str(caught.value)


def test_select_rename_of_unselected_column_fails() -> None:
    select = Select(SelectOp(op="select", columns=["_offset"], rename={"email": "mail"}))
    with pytest.raises(ConfigError, match=r"renames \['email'\]"):
        select.output_columns(COLUMNS)


def test_select_rename_onto_an_existing_name_fails_when_built() -> None:
    configs: list[OperatorConfig] = [
        SelectOp(op="select", columns=["event_type", "email"], rename={"event_type": "email"}),
        MaskOp(op="mask", column="email"),
    ]
    with pytest.raises(ConfigError):
        build_operators(configs, COLUMNS)


@pytest.mark.parametrize(
    ("columns", "rename"), [(["event_type", "email"], {"event_type": "email"}), (["email", "email"], {})]
)
def test_select_duplicate_output_names_are_named(columns: list[str], rename: dict[str, str]) -> None:
    select = Select(SelectOp(op="select", columns=columns, rename=rename))
    with pytest.raises(ConfigError, match=r"outputs \['email'\] more than once"):
        select.output_columns(COLUMNS)


def test_select_may_swap_names_by_renaming() -> None:
    select = Select(
        SelectOp(op="select", columns=["event_type", "email"], rename={"event_type": "email", "email": "x"})
    )
    assert select.output_columns(COLUMNS) == ["email", "x"]


def test_derive_adds_a_new_column() -> None:
    derive = Derive(DeriveOp(op="derive", column="amount_eur", expr="amount_cents / 100"))
    out = derive.apply(BATCH)
    assert out.schema.names == [*COLUMNS, "amount_eur"]
    assert out.column("amount_eur").to_pylist() == [5.0, 7.0, 9.0, None, 200.0]
    assert derive.output_columns(COLUMNS) == [*COLUMNS, "amount_eur"]


def test_derive_replaces_an_existing_column_in_place() -> None:
    derive = Derive(DeriveOp(op="derive", column="amount_cents", expr="coalesce(amount_cents, 0) * 2"))
    out = derive.apply(BATCH)
    assert out.schema.names == COLUMNS
    assert out.column("amount_cents").to_pylist() == [1_000, 1_400, 1_800, 0, 40_000]
    assert derive.output_columns(COLUMNS) == COLUMNS


def test_derive_constant_is_broadcast() -> None:
    out = Derive(DeriveOp(op="derive", column="source", expr="'web'")).apply(BATCH)
    assert out.column("source").to_pylist() == ["web"] * 5


def test_mask_redact_keeps_nulls() -> None:
    out = Mask(MaskOp(op="mask", column="email", method="redact")).apply(BATCH)
    assert out.column("email").to_pylist() == ["***", None, "***", "***", "***"]
    assert out.schema.names == COLUMNS


def test_mask_hash_is_a_keyed_hmac_deterministic_and_joinable() -> None:
    mask = hashing("email")
    out = mask.apply(BATCH).column("email").to_pylist()
    assert out == [sha16("ann@example.com"), None, sha16("bob@example.com"), sha16("ann@example.com"), sha16("x@y")]
    assert out[0] == out[3]  # same input, same hash: still joinable
    again = mask.apply(BATCH.slice(2)).column("email").to_pylist()
    assert again == out[2:]  # independent of the batch it came in


def test_mask_hash_of_all_null_column() -> None:
    batch = pa.record_batch({"email": pa.nulls(3, pa.string())})
    out = hashing("email").apply(batch)
    assert out.column("email").to_pylist() == [None, None, None]
    assert out.column("email").type == pa.string()


def test_mask_hash_of_empty_batch() -> None:
    batch = pa.record_batch({"email": pa.array([], pa.string())})
    out = hashing("email").apply(batch)
    assert out.num_rows == 0


def test_mask_hash_of_a_non_string_column_hashes_its_text() -> None:
    out = hashing("amount_cents").apply(BATCH)
    assert out.column("amount_cents").to_pylist() == [sha16("500"), sha16("700"), sha16("900"), None, sha16("20000")]


def test_the_kafka_key_is_masked_byte_wise_and_stays_binary() -> None:
    keys = pa.record_batch({"_key": pa.array([b"\xff\x00cust-1", None, b"cust-2"], pa.binary())})
    hashed = hashing("_key").apply(keys).column("_key")
    digest = hmac.new(KEY.encode(), b"\xff\x00cust-1", hashlib.sha256).hexdigest()[:32].encode()
    assert hashed.type == pa.binary() and hashed.to_pylist() == [digest, None, sha16("cust-2").encode()]
    redacted = Mask(MaskOp(op="mask", column="_key", method="redact")).apply(keys).column("_key")
    assert redacted.type == pa.binary() and redacted.to_pylist() == [b"***", None, b"***"]
    with pytest.raises(ConfigError, match=r"mask _key: keep_last keeps characters, and _key is binary"):
        Mask(MaskOp(op="mask", column="_key", method="keep_last")).apply(keys.slice(0, 0))


def test_another_key_gives_other_hashes_and_the_plain_sha256_of_a_value_is_not_its_hash() -> None:
    ours = hashing("email").apply(BATCH).column("email").to_pylist()
    theirs = hashing("email", key="another-key-of-enough-bytes-0123").apply(BATCH).column("email").to_pylist()
    assert ours[0] != theirs[0]
    assert ours[0] not in (
        hashlib.sha256(b"ann@example.com").hexdigest()[:32],
        hashlib.sha256(b"ann@example.com").hexdigest()[:16],
    )


def test_hashing_without_a_key_refuses_data_but_passes_the_compile_time_empty_batch() -> None:
    keyless = Mask(MaskOp(op="mask", column="email", method="hash"))
    assert keyless.apply(BATCH.slice(0, 0)).num_rows == 0
    with pytest.raises(ConfigError, match="method hash has no key"):
        keyless.apply(BATCH)


def test_a_mask_key_written_in_a_config_is_refused() -> None:
    with pytest.raises(ValueError, match="a key never goes in a config"):
        MaskOp.model_validate({"op": "mask", "column": "email", "method": "hash", "key": "in-the-file"})


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (4, ["***.com", None, "***.com", "***.com", "***"]),  # "x@y" is not longer than 4: fully masked
        (2, ["***om", None, "***om", "***om", "***@y"]),
        (0, ["***", None, "***", "***", "***"]),
    ],
)
def test_mask_keep_last(keep: int, expected: list[str | None]) -> None:
    out = Mask(MaskOp(op="mask", column="email", method="keep_last", keep_last=keep)).apply(BATCH)
    assert out.column("email").to_pylist() == expected


def test_mask_keep_last_of_all_null_column() -> None:
    batch = pa.record_batch({"email": pa.nulls(2, pa.string())})
    out = Mask(MaskOp(op="mask", column="email", method="keep_last")).apply(batch)
    assert out.column("email").to_pylist() == [None, None]


def test_build_operators_chains_and_reports_output_columns() -> None:
    configs: list[OperatorConfig] = [
        FilterOp(op="filter", expr="event_type == 'OrderCreated'"),
        DeriveOp(op="derive", column="eur", expr="amount_cents / 100"),
        MaskOp(op="mask", column="email", method="redact"),
        SelectOp(op="select", columns=["_offset", "eur", "email"], rename={"_offset": "offset"}),
    ]
    chain, columns = build_operators(configs, COLUMNS)
    assert columns == ["offset", "eur", "email"]
    assert len(chain) == 4
    out = apply_all(chain, BATCH)
    assert out.schema.names == columns
    assert out.to_pylist() == [
        {"offset": 10, "eur": 5.0, "email": "***"},
        {"offset": 13, "eur": None, "email": "***"},
        {"offset": 14, "eur": 200.0, "email": "***"},
    ]


def test_apply_all_of_no_operators_is_identity() -> None:
    assert apply_all([], BATCH) is BATCH


@pytest.mark.parametrize(
    ("configs", "position", "op", "unknown"),
    [
        ([FilterOp(op="filter", expr="nope > 1")], 0, "filter", "nope"),
        (
            [DeriveOp(op="derive", column="x", expr="1"), DeriveOp(op="derive", column="y", expr="z + 1")],
            1,
            "derive",
            "z",
        ),
        ([MaskOp(op="mask", column="phone")], 0, "mask", "phone"),
        (
            [SelectOp(op="select", columns=["email"]), FilterOp(op="filter", expr="amount_cents > 1")],
            1,
            "filter",
            "amount_cents",
        ),
        ([FilterOp(op="filter", expr="email != ''"), SelectOp(op="select", columns=["mail"])], 1, "select", "mail"),
    ],
)
def test_build_operators_rejects_unknown_columns_naming_the_position(
    configs: list[OperatorConfig], position: int, op: str, unknown: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_operators(configs, COLUMNS)
    message = str(caught.value)
    assert message.startswith(f"operators.{position} ({op}):")
    assert unknown in message
    assert "available:" in message


def test_build_operators_names_columns_available_at_that_point() -> None:
    configs: list[OperatorConfig] = [
        SelectOp(op="select", columns=["email", "_offset"]),
        FilterOp(op="filter", expr="amount_cents > 1"),
    ]
    with pytest.raises(ConfigError) as caught:
        build_operators(configs, COLUMNS)
    assert "available: ['_offset', 'email']" in str(caught.value)  # sorted


def test_derived_columns_are_visible_to_later_operators() -> None:
    configs: list[OperatorConfig] = [
        DeriveOp(op="derive", column="big", expr="amount_cents > 1000"),
        FilterOp(op="filter", expr="big"),
    ]
    chain, columns = build_operators(configs, COLUMNS)
    assert columns == [*COLUMNS, "big"]
    assert apply_all(chain, BATCH).column("_offset").to_pylist() == [14]
