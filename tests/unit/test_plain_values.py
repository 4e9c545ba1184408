"""The dirty path's pre-check clears only lines whose column value the typed reading (and pyarrow's reader)
accept, and clears the usual lines of a fetch, so that they are not read typed."""

from __future__ import annotations

from typing import cast, get_args

import msgspec
import pyarrow as pa
import pyarrow.json as pa_json
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config.pipeline import FieldType, SchemaConfig
from pipelines.decode.json_verdicts import TypedLines
from pipelines.decode.plain_values import plain_lines
from tests.unit.test_json_verdicts import VALUES, pyarrow_reads

KINDS: list[FieldType] = list(get_args(FieldType))
# how a key and its value may be written, around the other keys; "v" is the column
PIECES = [
    '"v":%s', '"v": %s', '"v" :%s', '"\\u0076":%s', '"w":%s', '"vv":%s', '"x":{"v":%s}', '"x":["v",%s]',
    '"x":"v"', '"x":"\\"v\\":1"', '"note":"say \\"v":%s', '"v":%s,"v":1', '"x":[{"v":%s}]',
]  # fmt: skip
PADDING = '"pad":"' + "x" * 40 + '"'  # a value is looked at with the bytes after it: a fetch has them


def _lines(texts: list[str]) -> pa.Array:
    return pa.array([text.encode() + b"\n" for text in texts], pa.binary())


def _one_object(line: str) -> bool:
    try:
        return isinstance(msgspec.json.decode(line), dict)
    except msgspec.DecodeError:
        return False


def _readers_accept(kind: FieldType, line: str) -> bool:
    """The typed reading of the column accepts the line, and so does pyarrow's reader where it reads the rest of
    the line (other members can fail it on their own, 1e400 say: not the pre-check's business)."""
    if not _column_accepts(kind, line):
        return False
    return pyarrow_reads(line.encode(), kind) or not _pyarrow_reads_the_rest(line)


def _pyarrow_reads_the_rest(line: str) -> bool:
    """pyarrow's reader reads the line when asked for another column."""
    options = pa_json.ParseOptions(
        explicit_schema=pa.schema([("unrelated", pa.string())]), unexpected_field_behavior="ignore"
    )
    try:
        return cast(
            bool, pa_json.read_json(pa.BufferReader(line.encode() + b"\n"), parse_options=options).num_rows == 1
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False


def _column_accepts(kind: FieldType, line: str) -> bool:
    """msgspec's typed reading of the one column accepts the line's value for it."""
    typed = TypedLines(SchemaConfig(fields={"v": kind}))
    try:
        typed._decoder(("v",)).decode(line.encode())
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    pieces=st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(VALUES)), min_size=0, max_size=4),
    space=st.sampled_from(["", " "]),
)
def test_a_line_is_cleared_only_if_its_value_for_the_column_is_read(
    kind: FieldType, pieces: list[tuple[str, str]], space: str
) -> None:
    members = [piece % value if "%s" in piece else piece for piece, value in pieces]
    line = "{" + ("," + space).join([PADDING, *members, PADDING.replace("pad", "end")]) + "}"
    if not _one_object(line):
        return  # out of scope: the decoder asks only about lines of one JSON object each
    [plain] = plain_lines(_lines([line]), "v", kind).tolist()
    if plain:
        assert _readers_accept(kind, line), line


@pytest.mark.parametrize("kind", KINDS)
def test_every_value_and_shape_cleared_is_one_the_readers_accept(kind: FieldType) -> None:
    cleared = []
    for value in VALUES:
        for piece in PIECES:
            member = piece % value if "%s" in piece else piece
            line = "{" + PADDING + "," + member + "," + PADDING.replace("pad", "end") + "}"
            [plain] = plain_lines(_lines([line]), "v", kind).tolist()
            if plain:
                cleared.append(line)
                assert _readers_accept(kind, line), line
    assert cleared, "some lines are cleared"


CLEARED: list[tuple[FieldType, str]] = [
    ("int64", '{"a":1,"v":5,"b":"x"}'),
    ("int64", '{"a": 1, "v": -42, "b": "x"}'),  # json.dumps's separators
    ("int64", '{"a":1,"v":null}'),
    ("int64", '{"a":1,"b":"no such column here"}'),  # absent: null
    ("int64", '{"a":1,"v":123456789012345678}'),
    ("timestamp_ms", '{"v":1767225600000,"b":2}'),
    ("float64", '{"v":5,"b":2}'),
    ("float64", '{"v":-0.25}'),
    ("bool", '{"v":true,"b":2}'),
    ("bool", '{"v":false}'),
    ("string", '{"v":"x, with a comma","b":2}'),
    ("binary", '{"v":"aGVsbG8="}'),
]
NOT_CLEARED: list[tuple[FieldType, str]] = [
    ("int64", '{"a":1,"v":"n/a","b":"x"}'),
    ("int64", '{"a":1,"v":5.0}'),
    ("int64", '{"a":1,"v":1234567890123456789}'),  # 19 digits: maybe past int64, read typed
    ("int64", '{"a":1,"v":05}'),
    ("int64", '{"a":1,"v":-}'),
    ("int64", '{"a":1,"v":5 }'),
    ("int64", '{"a":"\\n","v":5}'),  # a backslash anywhere
    ("int64", '{"a":{"v":1},"v":"x"}'),  # the name twice
    ("int64", '{"a":"v","v":5}'),  # the name twice, once in a string
    ("float64", '{"v":1e400}'),
    ("float64", '{"v":5.}'),
    ("bool", '{"v":1}'),
    ("bool", '{"v":"true"}'),
    ("string", '{"v":5}'),
    ("string", '{"v":["x"]}'),
]


@pytest.mark.parametrize(("kind", "line"), CLEARED)
def test_the_usual_lines_are_cleared(kind: FieldType, line: str) -> None:
    padded = line[:-1] + "," + PADDING + "}"
    assert plain_lines(_lines([padded]), "v", kind).tolist() == [True]


@pytest.mark.parametrize(("kind", "line"), NOT_CLEARED)
def test_lines_that_are_not_plainly_right_are_read_typed(kind: FieldType, line: str) -> None:
    padded = line[:-1] + "," + PADDING + "}"
    assert plain_lines(_lines([padded]), "v", kind).tolist() == [False]


def test_a_fetch_is_judged_line_by_line_in_place() -> None:
    texts = [f'{{"v":{number},{PADDING}}}' for number in range(100)]
    texts[7] = '{"v":"n/a",' + PADDING + "}"
    texts[63] = '{"v":1.5,' + PADDING + "}"
    lines = _lines(texts).slice(3, 90)  # a slice: offsets that do not start at 0

    plain = plain_lines(lines, "v", "int64")

    assert [index + 3 for index, ok in enumerate(plain.tolist()) if not ok] == [7, 63]


def test_names_json_writes_otherwise_are_never_cleared() -> None:
    lines = _lines(['{"a\\"b":1,' + PADDING + "}"])
    assert plain_lines(lines, 'a"b', "int64").tolist() == [False]
