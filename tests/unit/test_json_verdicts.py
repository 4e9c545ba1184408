"""msgspec's typed reading (the dirty path's judge) accepts exactly what pyarrow's reader accepts, value by value,
and its cost grows with the fetch once and with the bad lines, not with their product."""

from __future__ import annotations

from typing import Any, cast, get_args

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
import pytest

from pipelines.config.pipeline import FieldType, SchemaConfig
from pipelines.decode import json_verdicts
from pipelines.decode.json_verdicts import TypedLines
from pipelines.decode.schema import EventSchema
from tests.unit.test_codecs import SCHEMA, event

# every JSON kind, and the numbers and strings at the edges of the column types
VALUES = [
    '"x"', '""', '"5"', '"\\u00e9"', '"\\ud800"', '"aGVsbG8="', "5", "-5", "0", "-0", "5.0", "5.5", "1e3", "0.1e1",
    "1E400", "-1e400", "1e-400", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "-9223372036854775809", "18446744073709551616", "true", "false", "null", "[]", "{}", "[1]", '{"a":1}',
]  # fmt: skip
SHAPES = ['{"v":%s}', '{"\\u0076":%s}', '{"w":1,"v":%s,"x":[{"v":"nested"}]}', '{ "v" : %s }']


def pyarrow_reads(line: bytes, kind: FieldType) -> bool:
    schema = EventSchema(SchemaConfig(fields={"v": kind})).payload_schema  # the column type eventray reads
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(pa.BufferReader(line + b"\n"), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return cast(bool, table.num_rows == 1)


@pytest.mark.parametrize("kind", list(get_args(FieldType)))
def test_the_typed_reading_accepts_what_pyarrow_accepts(kind: FieldType) -> None:
    typed = TypedLines(SchemaConfig(fields={"v": kind}))
    disagreements = []
    for value in VALUES:
        for shape in SHAPES:
            line = (shape % value).encode()
            if (typed.verdict(line) is None) != pyarrow_reads(line, kind):
                disagreements.append(line)
    assert disagreements == []


def test_a_column_given_twice_is_the_one_known_difference() -> None:
    """The decoder's general path catches it: see test_codecs_dirty's "column-twice"."""
    line = b'{"v":1,"v":2}'
    assert TypedLines(SchemaConfig(fields={"v": "int64"})).verdict(line) is None
    assert not pyarrow_reads(line, "int64")


def test_verdicts_name_the_first_bad_column_in_schema_order_and_tell_syntax_from_types() -> None:
    typed = TypedLines(SCHEMA.config)
    assert typed.verdict(event(1, amount_cents="x", event_id=5)) == (
        "invalid",
        "a value does not match the schema's column type: 'event_id' must be string",
    )
    kind, reason = typed.verdict(event(1, amount_cents="x")[:-1] + b",}") or ("", "")
    assert (kind, reason.startswith("undecodable JSON: ")) == ("undecodable", True)


def test_a_column_name_with_a_backtick_is_named_in_its_own_verdict() -> None:
    """msgspec's error path is quoted in backticks, so a hint read from it can name another column; the
    verdict checks the hint before it trusts it."""
    typed = TypedLines(SchemaConfig(fields={"a": "int64", "a`b": "string"}))
    assert typed.verdict(b'{"a`b":5}') == (
        "invalid",
        "a value does not match the schema's column type: 'a`b' must be string",
    )


def _lines(payloads: list[bytes]) -> pa.Array:
    """As the decoder gives them: each followed by a newline."""
    return pa.array([payload + b"\n" for payload in payloads], pa.binary())


@pytest.mark.parametrize("columns", [None, ["amount_cents"]])
def test_bad_lines_are_found_wherever_they_are(columns: list[str] | None) -> None:
    payloads = [event(number) for number in range(1_000)]
    bad = [0, 63, 64, 65, 500, 998, 999]
    for position in bad:
        payloads[position] = event(position, amount_cents="n/a")
    payloads[300] = event(300) + b" " + event(301)  # two objects on one line: undecodable
    found = TypedLines(SCHEMA.config).bad_lines(_lines(payloads), 0, columns)
    assert [(line, kind) for line, kind, _ in found] == sorted(
        [(position, "invalid") for position in bad] + [(300, "undecodable")]
    )
    assert TypedLines(SCHEMA.config).bad_lines(_lines(payloads), 501, columns)[0][0] == 998


class _Counted:
    """Counts the typed reads of runs of lines and of single lines."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs = 0
        self.lines = 0
        decode, verdict = json_verdicts._Lines.decode, TypedLines.verdict

        def counted_decode(lines: Any, decoder: Any, start: int, stop: int) -> list[Any]:
            self.runs += 1
            return decode(lines, decoder, start, stop)

        def counted_verdict(typed: TypedLines, line: bytes) -> tuple[str, str] | None:
            self.lines += 1
            return verdict(typed, line)

        monkeypatch.setattr(json_verdicts._Lines, "decode", counted_decode)
        monkeypatch.setattr(TypedLines, "verdict", counted_verdict)


@pytest.mark.parametrize("bad_count", [0, 1, 41, 400])
def test_the_cost_is_one_pass_plus_a_few_reads_per_bad_line(monkeypatch: pytest.MonkeyPatch, bad_count: int) -> None:
    fetch = 4_096
    payloads = [event(number) for number in range(fetch)]
    for position in np.random.default_rng(7).choice(fetch, size=bad_count, replace=False).tolist():
        payloads[position] = event(position, amount_cents="n/a")
    counted = _Counted(monkeypatch)
    found = TypedLines(SCHEMA.config).bad_lines(_lines(payloads), 0, ["amount_cents"])
    assert len(found) == bad_count
    chunks = fetch // json_verdicts._CHUNK_LINES
    assert counted.runs <= chunks + bad_count, (counted.runs, bad_count)
    assert counted.lines == bad_count  # each bad line judged alone once, no good line
