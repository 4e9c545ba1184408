"""The local Avro compatibility checker: every pair of the corpus (tests/data/avro_compatibility_corpus.json, the
verdicts of Java's SchemaCompatibility) gives its verdict; findings name the field and say what each side has;
the Confluent modes compare the versions they should, and say which side deploys first; recursive types
terminate; invalid schemas are refused with the problem named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest

from pipelines.schemas import Compatibility, Incompatibility, check_against_versions, check_can_read

CORPUS_PATH = Path(__file__).resolve().parents[1] / "data" / "avro_compatibility_corpus.json"
CORPUS: list[dict[str, Any]] = json.loads(CORPUS_PATH.read_text())["cases"]
CASES = {case["name"]: case for case in CORPUS}


def record(name: str, *fields: dict[str, Any], namespace: str = "com.shop", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": namespace, **extra, "fields": list(fields)}


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def case_findings(name: str) -> list[Incompatibility]:
    return check_can_read(CASES[name]["reader"], CASES[name]["writer"])


def only(findings: list[Incompatibility]) -> Incompatibility:
    assert len(findings) == 1, findings
    return findings[0]


# the corpus


def test_corpus_is_large_named_and_explained() -> None:
    assert len(CORPUS) >= 40
    assert len(CASES) == len(CORPUS), "case names are unique"
    assert all(case["why"] and isinstance(case["compatible"], bool) for case in CORPUS)
    assert {True, False} == {case["compatible"] for case in CORPUS}


@pytest.mark.parametrize("case", CORPUS, ids=[case["name"] for case in CORPUS])
def test_corpus_verdict(case: dict[str, Any]) -> None:
    findings = check_can_read(case["reader"], case["writer"])
    assert (not findings) == case["compatible"], f"{case['why']}: {[str(f) for f in findings]}"


# paths and messages


def test_nested_field_type_change_names_the_field_path() -> None:
    finding = only(case_findings("nested_record_field_type_changed"))
    assert finding.kind == "type_mismatch"
    assert finding.path == "$.customer.address.zip"
    assert finding.message == ("the reader expects int, but the writer wrote string, which Avro does not convert to it")
    assert str(finding) == f"$.customer.address.zip: {finding.message}"


def test_missing_default_names_the_reader_field_and_the_writer_record() -> None:
    finding = only(case_findings("add_field_without_default"))
    assert (finding.kind, finding.path) == ("missing_default", "$.channel")
    assert "'channel'" in finding.message
    assert "com.shop.OrderCreated" in finding.message
    assert "no default" in finding.message


def test_missing_enum_symbols_lists_them() -> None:
    finding = only(case_findings("enum_symbol_added_writer_side_no_default"))
    assert (finding.kind, finding.path) == ("missing_enum_symbols", "$.status")
    assert "['DELIVERED']" in finding.message
    assert "no default symbol" in finding.message


@pytest.mark.parametrize(
    ("name", "kind", "path"),
    [
        ("array_of_records_item_field_added_without_default", "missing_default", "$.lines[*].qty"),
        ("array_items_changed", "type_mismatch", "$.quantities[*]"),
        ("map_values_changed", "type_mismatch", "$.attributes.*"),
        ("union_branch_added_writer_side", "missing_union_branch", "$.currency"),
        ("union_reader_no_branch", "missing_union_branch", "$"),
        ("fixed_size_changed", "fixed_size_mismatch", "$.hash"),
        ("fixed_renamed_without_alias", "name_mismatch", "$.hash"),
        ("enum_renamed_without_alias", "name_mismatch", "$.status"),
        ("record_renamed_without_alias", "name_mismatch", "$"),
        ("recursive_linked_list_field_added_without_default", "missing_default", "$.label"),
    ],
)
def test_kind_and_path(name: str, kind: str, path: str) -> None:
    finding = only(case_findings(name))
    assert (finding.kind, finding.path) == (kind, path)


def test_messages_say_what_each_side_has() -> None:
    union = only(case_findings("union_branch_added_writer_side")).message
    assert union == "the writer may write int, which no branch of the reader's union [null, string] reads"
    fixed = only(case_findings("fixed_size_changed")).message
    assert fixed == "the reader expects fixed com.shop.Sha256 of 16 bytes, but the writer wrote 32 bytes"
    renamed = only(case_findings("record_renamed_without_alias")).message
    assert renamed == (
        "the reader expects record OrderPlaced (and has no alias for it), but the writer wrote record "
        "com.shop.OrderCreated"
    )
    required = only(case_findings("make_field_required")).message
    assert required.startswith("the reader expects string, but the writer wrote null")
    assert required.endswith("(a branch of the writer's union [null, string])")
    decimal = only(case_findings("decimal_bytes_read_as_decimal_fixed")).message
    assert "the writer wrote bytes (decimal)" in decimal


def test_a_named_type_used_twice_is_reported_where_first_met() -> None:
    finding = only(case_findings("named_reference_changed"))
    assert (finding.kind, finding.path) == ("type_mismatch", "$.from.zip")


def test_field_matching_two_writer_fields_is_ambiguous() -> None:
    reader = record("X", field("a", "int", aliases=["b"]))
    writer = record("X", field("a", "int"), field("b", "int"))
    finding = only(check_can_read(reader, writer))
    assert (finding.kind, finding.path) == ("ambiguous_field_alias", "$.a")
    assert "['a', 'b']" in finding.message


def test_a_single_pair_carries_no_deployment_context() -> None:
    finding = only(case_findings("add_field_without_default"))
    assert (finding.direction, finding.existing_version, finding.deploy_first) == (None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.path = "$"  # type: ignore[misc]


# modes

V1 = record("OrderCreated", field("order_id", "string"), field("amount_cents", "int"))
WITH_CHANNEL_DEFAULT = record(
    "OrderCreated", field("order_id", "string"), field("amount_cents", "int"), field("channel", "string", default="web")
)
WITH_CHANNEL_REQUIRED = record(
    "OrderCreated", field("order_id", "string"), field("amount_cents", "int"), field("channel", "string")
)
WITHOUT_AMOUNT = record("OrderCreated", field("order_id", "string"))
AMOUNT_AS_STRING = record("OrderCreated", field("order_id", "string"), field("amount_cents", "string"))


def verdicts(new: Any, existing: list[Any]) -> dict[Compatibility, bool]:
    return {mode: not check_against_versions(new, existing, mode) for mode in Compatibility}


def test_adding_a_required_field_breaks_backward_only() -> None:
    assert verdicts(WITH_CHANNEL_REQUIRED, [V1]) == {
        Compatibility.NONE: True,
        Compatibility.BACKWARD: False,
        Compatibility.BACKWARD_TRANSITIVE: False,
        Compatibility.FORWARD: True,
        Compatibility.FORWARD_TRANSITIVE: True,
        Compatibility.FULL: False,
        Compatibility.FULL_TRANSITIVE: False,
    }
    finding = only(check_against_versions(WITH_CHANNEL_REQUIRED, [V1], Compatibility.FULL))
    assert (finding.kind, finding.path, finding.direction) == ("missing_default", "$.channel", "backward")
    assert (finding.existing_version, finding.deploy_first) == (0, "producers")


def test_removing_a_required_field_breaks_forward_only() -> None:
    result = verdicts(WITHOUT_AMOUNT, [V1])
    assert result[Compatibility.BACKWARD]
    assert not result[Compatibility.FORWARD]
    assert not result[Compatibility.FULL]
    finding = only(check_against_versions(WITHOUT_AMOUNT, [V1], "FORWARD"))
    assert (finding.path, finding.direction, finding.deploy_first) == ("$.amount_cents", "forward", "consumers")


def test_a_change_neither_side_reads_has_no_safe_deploy_order() -> None:
    findings = check_against_versions(AMOUNT_AS_STRING, [V1], Compatibility.FULL)
    assert [(f.direction, f.path, f.deploy_first) for f in findings] == [
        ("backward", "$.amount_cents", "no_safe_order"),
        ("forward", "$.amount_cents", "no_safe_order"),
    ]


def test_adding_a_field_with_default_is_fully_compatible() -> None:
    assert all(verdicts(WITH_CHANNEL_DEFAULT, [V1]).values())


def test_only_backward_transitive_sees_the_oldest_version() -> None:
    history = [V1, WITH_CHANNEL_DEFAULT]  # v3 drops channel's default: v2 data has channel, v1 data has not
    assert not check_against_versions(WITH_CHANNEL_REQUIRED, history, Compatibility.BACKWARD)
    assert not check_against_versions(WITH_CHANNEL_REQUIRED, history, Compatibility.FULL)
    for mode in (Compatibility.BACKWARD_TRANSITIVE, Compatibility.FULL_TRANSITIVE):
        finding = only(check_against_versions(WITH_CHANNEL_REQUIRED, history, mode))
        assert (finding.path, finding.direction, finding.existing_version) == ("$.channel", "backward", 0)
        assert finding.deploy_first == "producers"


def test_only_forward_transitive_sees_the_oldest_version() -> None:
    history = [WITH_CHANNEL_REQUIRED, WITH_CHANNEL_DEFAULT]  # v3 drops channel: v2 readers default it, v1 cannot
    assert not check_against_versions(V1, history, Compatibility.FORWARD)
    assert not check_against_versions(V1, history, Compatibility.FULL)
    finding = only(check_against_versions(V1, history, Compatibility.FORWARD_TRANSITIVE))
    assert (finding.path, finding.direction, finding.existing_version) == ("$.channel", "forward", 0)
    assert finding.deploy_first == "consumers"


def test_non_transitive_modes_compare_the_latest_version_only() -> None:
    history = [AMOUNT_AS_STRING, V1]
    assert not check_against_versions(V1, history, Compatibility.FULL)
    assert {f.existing_version for f in check_against_versions(V1, history, Compatibility.FULL_TRANSITIVE)} == {0}


def test_no_history_or_mode_none_checks_nothing() -> None:
    assert check_against_versions(AMOUNT_AS_STRING, [], Compatibility.FULL_TRANSITIVE) == []
    assert check_against_versions(AMOUNT_AS_STRING, [V1], Compatibility.NONE) == []


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="SIDEWAYS"):
        check_against_versions(V1, [V1], "SIDEWAYS")


# recursion


@pytest.mark.timeout(10)
def test_mutually_recursive_types_terminate() -> None:
    def tree(leaf_type: str) -> dict[str, Any]:
        forest = {"type": "record", "name": "Forest", "fields": [field("trees", {"type": "array", "items": "Tree"})]}
        return record("Tree", field("leaf", leaf_type), field("children", forest), field("parent", ["null", "Tree"]))

    assert check_can_read(tree("long"), tree("int")) == []
    finding = only(check_can_read(tree("int"), tree("long")))
    assert finding.path == "$.leaf"


@pytest.mark.timeout(10)
def test_shared_named_types_are_compared_once_per_pair() -> None:
    def chain(depth: int, leaf_type: str) -> dict[str, Any]:
        """Each level uses the one below twice: 2**depth paths to the leaf, depth + 1 named pairs."""
        schema: dict[str, Any] = record("Level0", field("value", leaf_type))
        for level in range(1, depth + 1):
            schema = record(f"Level{level}", field("left", schema), field("right", f"com.shop.Level{level - 1}"))
        return schema

    assert check_can_read(chain(40, "long"), chain(40, "int")) == []
    finding = only(check_can_read(chain(40, "int"), chain(40, "long")))
    assert finding.path == "$" + ".left" * 40 + ".value"


# inputs and invalid schemas


def test_json_text_type_names_and_parsed_schemas_are_accepted() -> None:
    assert check_can_read('"long"', "int") == []
    assert check_can_read(json.dumps(WITH_CHANNEL_DEFAULT), json.dumps(V1)) == []
    linked = CASES["recursive_linked_list_same"]["reader"]
    assert check_can_read(fastavro.parse_schema(linked), fastavro.parse_schema(linked)) == []
    assert only(check_can_read("null", "string")).kind == "type_mismatch"


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "recrod", "name": "X", "fields": []}, "unknown type"),
        (record("X", field("a", "Missing")), "Missing"),
        ({"type": "record", "fields": []}, '"name" is a required field'),
        ({"type": "fixed", "name": "F"}, "'size'"),
        ({"type": "enum", "name": "E", "symbols": ["A", "A"]}, "unique"),
        ({"type": "enum", "name": "E", "symbols": ["A", "not-a-symbol"]}, "Every symbol must match"),
        (record("X", field("a", "int", default="zero")), "must match"),
        (record("X", field("a", "int"), field("a", "long")), "field 'a' of record com.shop.X is duplicated"),
        (record("X", field("a-b", "int")), "not a valid name"),
        (record("1X"), "invalid name 'com.shop.1X'"),
        (["null", ["int"]], "holds another union"),
        (["null", "int", {"type": "int", "logicalType": "date"}], "two branches of type int"),
        ("{not json", "not JSON"),
        (42, "wrong JSON type"),
    ],
)
def test_invalid_schema_is_refused_naming_the_problem(schema: Any, problem: str) -> None:
    with pytest.raises(ValueError, match="the writer schema is not a valid Avro schema") as raised:
        check_can_read("int", schema)
    assert problem in str(raised.value)


def test_invalid_schema_names_its_side() -> None:
    with pytest.raises(ValueError, match="the reader schema"):
        check_can_read("nosuch", "int")
    with pytest.raises(ValueError, match="existing version 0"):
        check_against_versions(V1, [{"type": "record"}], Compatibility.BACKWARD)
