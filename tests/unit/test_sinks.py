"""Sinks: JSONL, dead letters with their original bytes, Parquet, console top-N, and clearing old output."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config.pipeline import (
    ConsoleSinkConfig,
    DeadLetterConfig,
    JsonlSinkConfig,
    ParquetSinkConfig,
    load_config,
)
from pipelines.io.records import DEAD_LETTER_SCHEMA, RawBatch, dead_letters
from pipelines.io.sinks import ConsoleSink, DeadLetterSink, JsonlSink, ParquetSink, clear_previous_output, open_sink

ORDERS_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders.yaml"
ROWS = pa.table({"k": ["a", "b", None], "n": pa.array([1, 2, 3], pa.int64()), "x": [0.5, None, -1.25]})


def read_jsonl(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [msgspec.json.decode(line) for line in data.split(b"\n")[:-1]]


def test_jsonl_sink_writes_one_object_per_line(tmp_path: Path) -> None:
    sink = JsonlSink(str(tmp_path / "out"), writer="a0")
    sink.write(ROWS)
    sink.write(ROWS.to_batches()[0].slice(1, 1))  # a RecordBatch works too
    sink.write(ROWS.slice(0, 0))  # nothing is written for no rows
    sink.close()
    assert sink.path == tmp_path / "out" / "part-a0.jsonl"
    assert read_jsonl(sink.path) == [
        {"k": "a", "n": 1, "x": 0.5},
        {"k": "b", "n": 2, "x": None},
        {"k": None, "n": 3, "x": -1.25},
        {"k": "b", "n": 2, "x": None},
    ]


def test_jsonl_sink_flush_makes_rows_readable(tmp_path: Path) -> None:
    sink = JsonlSink(str(tmp_path), writer="w")
    sink.write(ROWS.slice(0, 1))
    sink.flush()
    assert read_jsonl(sink.path) == [{"k": "a", "n": 1, "x": 0.5}]
    sink.close()


def test_jsonl_sink_replaces_a_previous_file(tmp_path: Path) -> None:
    (tmp_path / "part-w.jsonl").write_bytes(b'{"old": true}\n')
    sink = JsonlSink(str(tmp_path), writer="w")
    sink.write(ROWS.slice(2, 1))
    sink.close()
    assert read_jsonl(tmp_path / "part-w.jsonl") == [{"k": None, "n": 3, "x": -1.25}]


def _dead_letter_batch(payloads: list[bytes | None]) -> pa.RecordBatch:
    count = len(payloads)
    raw = RawBatch(
        topic="orders",
        partition=5,
        offsets=pa.array(range(40, 40 + count), pa.int64()),
        payloads=pa.array(payloads, pa.binary()),
        keys=pa.array([b"\x00key", None, b"k"][:count], pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.array(["00-abc-01", None, None][:count], pa.string()),
    )
    reasons = pa.array([f"reason {i}" for i in range(count)], pa.string())
    return dead_letters(raw, pa.array(range(count), pa.int64()), reasons, "undecodable")


def test_dead_letter_sink_keeps_the_original_bytes_in_base64(tmp_path: Path) -> None:
    payloads: list[bytes | None] = [b'{"event_id":"e1","event_type":', b"\xff\xfe not utf-8 \n\x00", None]
    batch = _dead_letter_batch(payloads)
    assert batch.schema == DEAD_LETTER_SCHEMA
    sink = DeadLetterSink(str(tmp_path / "dl"), writer="src-0")
    sink.write(batch)
    sink.close()
    lines = read_jsonl(tmp_path / "dl" / "part-src-0.jsonl")
    assert len(lines) == 3
    for line, payload in zip(lines, payloads, strict=True):
        assert "payload" not in line
        if payload is None:
            assert line["payload_base64"] is None
        else:
            assert base64.b64decode(str(line["payload_base64"])) == payload
    assert lines[0] == {
        "reason": "reason 0",
        "error_type": "undecodable",
        "topic": "orders",
        "partition": 5,
        "offset": 40,
        "traceparent": "00-abc-01",
        "payload_base64": base64.b64encode(payloads[0]).decode(),  # type: ignore[arg-type]
        "key_base64": base64.b64encode(b"\x00key").decode(),
    }
    assert lines[1]["key_base64"] is None
    assert [line["offset"] for line in lines] == [40, 41, 42]


def test_parquet_sink_is_readable_after_each_flush(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path / "pq"), writer="agg-1")
    sink.write(ROWS)
    sink.write(ROWS.slice(0, 0))
    sink.flush()
    first = pq.read_table(tmp_path / "pq" / "part-agg-1-00000.parquet")  # readable before close
    sink.write(ROWS.to_batches()[0].slice(0, 2))
    sink.close()
    table = pq.read_table(tmp_path / "pq")
    assert first.to_pylist() == ROWS.to_pylist()
    assert table.to_pylist() == ROWS.to_pylist() + ROWS.slice(0, 2).to_pylist()
    assert table.schema.field("n").type == pa.int64()


def test_parquet_sink_without_rows_writes_no_file(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path), writer="w")
    sink.close()
    assert not list(tmp_path.glob("part-w*.parquet"))


def test_console_sink_keeps_the_top_rows_by_sort_by() -> None:
    sink = ConsoleSink(ConsoleSinkConfig(top=3, sort_by="n"))
    assert sink.preview() == []
    sink.write(pa.table({"k": ["a", "b", "c", "d"], "n": [5, 1, 9, 3]}))
    sink.write(pa.table({"k": ["e", "f"], "n": [7, 2]}).to_batches()[0])
    sink.write(pa.table({"k": pa.array([], pa.string()), "n": pa.array([], pa.int64())}))
    assert sink.preview() == [{"k": "c", "n": 9}, {"k": "e", "n": 7}, {"k": "a", "n": 5}]
    sink.write(pa.table({"k": ["z"], "n": [100]}))
    assert [row["k"] for row in sink.preview()] == ["z", "c", "e"]


def test_console_sink_without_sort_by_keeps_the_latest_rows() -> None:
    sink = ConsoleSink(ConsoleSinkConfig(top=2))
    sink.write(pa.table({"n": [1, 2, 3]}))
    sink.write(pa.table({"n": [4]}))
    assert sink.preview() == [{"n": 3}, {"n": 4}]


def test_console_sink_with_unknown_sort_column_keeps_the_latest_rows() -> None:
    sink = ConsoleSink(ConsoleSinkConfig(top=2, sort_by="missing"))
    sink.write(pa.table({"n": [1, 2, 3]}))
    assert sink.preview() == [{"n": 2}, {"n": 3}]


def test_console_sink_puts_nulls_last() -> None:
    sink = ConsoleSink(ConsoleSinkConfig(top=2, sort_by="n"))
    sink.write(pa.table({"n": pa.array([None, 1, 2], pa.int64())}))
    assert sink.preview() == [{"n": 2}, {"n": 1}]


def test_open_sink_picks_the_class(tmp_path: Path) -> None:
    jsonl = open_sink(JsonlSinkConfig(path=str(tmp_path / "j")), "w")
    parquet = open_sink(ParquetSinkConfig(path=str(tmp_path / "p")), "w")
    dead = open_sink(DeadLetterConfig(path=str(tmp_path / "d")), "w")
    console = open_sink(ConsoleSinkConfig(), "w")
    assert type(jsonl) is JsonlSink
    assert type(parquet) is ParquetSink
    assert type(dead) is DeadLetterSink
    assert type(console) is ConsoleSink
    for sink in (jsonl, parquet, dead, console):
        sink.close()


def test_clear_previous_output_removes_only_part_files(tmp_path: Path) -> None:
    windows = tmp_path / "windows"
    parquet = tmp_path / "parquet"
    dead = tmp_path / "dead"
    config = load_config(
        ORDERS_YAML,
        {
            "sinks": [
                {"type": "console"},
                {"type": "jsonl", "path": str(windows)},
                {"type": "parquet", "path": str(parquet)},
            ],
            "dead_letter.path": str(dead),
        },
    )
    for directory in (windows, parquet, dead):
        directory.mkdir()
        (directory / "part-a0.jsonl").write_text("old\n")
        (directory / "part-a1.parquet").write_text("old")
        (directory / "notes.txt").write_text("keep")
        (directory / "xpart-1.jsonl").write_text("keep")
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "part-0.jsonl").write_text("keep")

    clear_previous_output(config)

    for directory in (windows, parquet, dead):
        assert sorted(p.name for p in directory.iterdir()) == ["notes.txt", "xpart-1.jsonl"]
    assert (elsewhere / "part-0.jsonl").exists()


def test_clear_previous_output_tolerates_missing_directories(tmp_path: Path) -> None:
    config = load_config(
        ORDERS_YAML,
        {"sinks": [{"type": "jsonl", "path": str(tmp_path / "nope")}], "dead_letter.path": str(tmp_path / "no")},
    )
    clear_previous_output(config)
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("writer", ["src-0", "agg-12"])
def test_each_writer_has_its_own_file(tmp_path: Path, writer: str) -> None:
    sink = JsonlSink(str(tmp_path), writer=writer)
    sink.close()
    assert (tmp_path / f"part-{writer}.jsonl").exists()
