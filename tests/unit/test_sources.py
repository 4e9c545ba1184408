"""Sources: GeneratorReader on a fake clock (no sleeps), FileReader on temporary files."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config.pipeline import FileSourceConfig, GeneratorSourceConfig
from pipelines.errors import ConfigError
from pipelines.io.generator import generate_events
from pipelines.io.sources import FileReader, GeneratorReader, file_partitions, open_reader, partition_count

START_S = 1_000.0
START_MS = 1_700_000_000_000
#: 8,000 events/s over 4 partitions: 2,000 per partition per second
CONFIG = GeneratorSourceConfig(partitions=4, seed=3, rate_per_s=8_000, invalid_fraction=0.05)


class FakeClock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def reader(
    clock: FakeClock,
    partition: int = 1,
    position: int = 0,
    limit: int | None = None,
    config: GeneratorSourceConfig = CONFIG,
) -> GeneratorReader:
    return GeneratorReader(config, partition, position, limit, START_S, START_MS, clock=clock)


# elapsed times are binary fractions, so the fake clock's arithmetic is exact
@pytest.mark.parametrize(
    ("elapsed_s", "expected"),
    [(0.0, 0), (2**-11, 0), (2**-10, 1), (0.25, 500), (1.0, 2_000), (10.0, 20_000)],
)
def test_end_offset_grows_with_the_clock_at_rate_per_partition(elapsed_s: float, expected: int) -> None:
    assert reader(FakeClock(START_S + elapsed_s)).end_offset() == expected


def test_end_offset_before_start_is_zero() -> None:
    assert reader(FakeClock(START_S - 5)).end_offset() == 0


async def test_fetch_returns_nothing_until_events_arrive_then_catches_up() -> None:
    clock = FakeClock(START_S)
    source = reader(clock)
    assert await source.fetch(100) is None
    assert source.position == 0

    clock.now_s = START_S + 0.0625  # 125 events have arrived
    batch = await source.fetch(30)
    assert batch is not None
    assert batch.offsets.to_pylist() == list(range(30))
    assert batch.partition == 1
    assert batch.topic == "generator"
    assert source.position == 30

    rest = await source.fetch(1_000)
    assert rest is not None
    assert rest.offsets.to_pylist() == list(range(30, 125))
    assert source.position == 125
    assert await source.fetch(1_000) is None  # caught up
    assert not source.exhausted  # unbounded: more will come

    clock.now_s = START_S + 0.078125  # 156.25 arrived
    more = await source.fetch(1_000)
    assert more is not None
    assert more.offsets.to_pylist() == list(range(125, 156))


async def test_fetched_payloads_are_the_generator_events() -> None:
    clock = FakeClock(START_S + 1)
    source = reader(clock, partition=2, position=500)
    batch = await source.fetch(250)
    assert batch is not None
    expected = generate_events(CONFIG, 2, 500, 250, START_MS)
    assert batch.payloads.equals(expected.payloads)
    assert batch.next_offset == 750
    assert batch.keys.null_count == 250
    assert batch.timestamps.null_count == 250
    assert batch.traceparents.null_count == 250


async def test_resume_from_a_position_gives_the_same_bytes() -> None:
    clock = FakeClock(START_S + 1)
    first = reader(clock)
    whole = await first.fetch(400)
    resumed = reader(clock, position=150)
    tail = await resumed.fetch(250)
    assert whole is not None
    assert tail is not None
    assert tail.payloads.to_pylist() == whole.payloads.to_pylist()[150:]


async def test_freeze_bounds_the_reader_to_what_has_arrived() -> None:
    clock = FakeClock(START_S + 0.125)  # 250 arrived
    source = reader(clock)
    first = await source.fetch(50)
    assert first is not None
    await source.freeze()
    clock.now_s = START_S + 100  # much more arrives, but the reader is frozen
    assert source.end_offset() == 250
    batch = await source.fetch(10_000)
    assert batch is not None
    assert batch.offsets.to_pylist() == list(range(50, 250))
    assert source.exhausted
    assert await source.fetch(10_000) is None


async def test_freeze_never_goes_below_the_position() -> None:
    clock = FakeClock(START_S + 1)
    source = reader(clock, position=5_000)  # resumed past what the clock says has arrived
    await source.freeze()
    assert source.exhausted
    assert await source.fetch(10) is None
    assert source.position == 5_000


async def test_freeze_at_start_bounds_to_nothing() -> None:
    source = reader(FakeClock(START_S))
    await source.freeze()
    assert source.exhausted
    assert await source.fetch(10) is None


async def test_limit_is_respected() -> None:
    clock = FakeClock(START_S + 100)
    source = reader(clock, limit=120)
    assert source.end_offset() == 120
    batches = []
    while (batch := await source.fetch(50)) is not None:
        batches.append(batch.offsets.to_pylist())
    assert batches == [list(range(0, 50)), list(range(50, 100)), list(range(100, 120))]
    assert source.exhausted
    assert source.position == 120


async def test_limit_counts_from_the_position() -> None:
    source = reader(FakeClock(START_S + 100), position=1_000, limit=70)
    assert source.end_offset() == 1_070
    batch = await source.fetch(500)
    assert batch is not None
    assert batch.offsets.to_pylist() == list(range(1_000, 1_070))
    assert source.exhausted
    assert await source.fetch(500) is None


async def test_limit_of_zero_is_exhausted_at_once() -> None:
    source = reader(FakeClock(START_S + 100), limit=0)
    assert source.exhausted
    assert await source.fetch(10) is None


async def test_not_exhausted_before_the_limit() -> None:
    clock = FakeClock(START_S + 0.015625)  # 31 arrived of a limit of 100
    source = reader(clock, limit=100)
    assert await source.fetch(1_000) is not None
    assert not source.exhausted
    assert await source.fetch(1_000) is None


async def test_unbounded_rate_reads_up_to_the_limit_at_once() -> None:
    config = CONFIG.model_copy(update={"rate_per_s": None})
    source = reader(FakeClock(START_S), config=config, limit=1_000)
    assert source.end_offset() == 1_000
    batch = await source.fetch(600)
    assert batch is not None
    assert len(batch) == 600
    second = await source.fetch(600)
    assert second is not None
    assert len(second) == 400
    assert source.exhausted


async def test_close_is_harmless() -> None:
    source = reader(FakeClock(START_S))
    await source.close()
    assert source.position == 0


def _jsonl(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


async def test_file_reader_jsonl_reads_lines_as_payloads(tmp_path: Path) -> None:
    lines = [b'{"a":1}', b'{"a":2}', b"", b'{"a":4}']
    file_reader = FileReader(_jsonl(tmp_path / "x.jsonl", lines), "jsonl", partition=0, position=1, limit=None)
    assert file_reader.end_offset() == 4
    batch = await file_reader.fetch(2)
    assert batch is not None
    assert batch.payloads.to_pylist() == [b'{"a":2}', b""]
    assert batch.offsets.to_pylist() == [1, 2]
    assert not file_reader.exhausted
    batch = await file_reader.fetch(10)
    assert batch is not None
    assert batch.payloads.to_pylist() == [b'{"a":4}']
    assert file_reader.exhausted
    assert await file_reader.fetch(10) is None


async def test_file_reader_limit(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "x.jsonl", [b"1", b"2", b"3"])
    file_reader = FileReader(path, "jsonl", partition=0, position=0, limit=2)
    assert file_reader.end_offset() == 2
    batch = await file_reader.fetch(10)
    assert batch is not None
    assert batch.payloads.to_pylist() == [b"1", b"2"]
    assert file_reader.exhausted


async def test_file_reader_limit_counts_from_the_position(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "x.jsonl", [b"0", b"1", b"2", b"3", b"4"])
    file_reader = FileReader(path, "jsonl", partition=0, position=1, limit=2)
    assert file_reader.end_offset() == 3
    batch = await file_reader.fetch(10)
    assert batch is not None
    assert batch.payloads.to_pylist() == [b"1", b"2"]
    assert batch.offsets.to_pylist() == [1, 2]
    assert file_reader.exhausted


async def test_file_reader_parquet_reencodes_rows_as_json(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1, None], "b": ["x", "y"]}), path)
    file_reader = FileReader(str(path), "parquet", partition=0, position=0, limit=None)
    batch = await file_reader.fetch(10)
    assert batch is not None
    assert [msgspec.json.decode(p) for p in batch.payloads.to_pylist()] == [{"a": 1, "b": "x"}, {"a": None, "b": "y"}]


def test_file_partitions_are_sorted_and_missing_patterns_fail(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_bytes(b"{}\n")
    config = FileSourceConfig(paths=[str(tmp_path / "*.jsonl")])
    assert file_partitions(config) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert partition_count(config) == 2
    missing = FileSourceConfig(paths=[str(tmp_path / "*.jsonl"), str(tmp_path / "nope-*.jsonl")])
    with pytest.raises(ConfigError, match=r"source\.paths: .*nope-\*\.jsonl.* matches no file"):
        file_partitions(missing)


def test_open_reader_picks_the_reader_for_the_source(tmp_path: Path) -> None:
    assert partition_count(CONFIG) == 4
    assert isinstance(open_reader(CONFIG, 2, 7, None, START_S, START_MS), GeneratorReader)
    (tmp_path / "a.jsonl").write_bytes(b"{}\n{}\n")
    file_reader = open_reader(FileSourceConfig(paths=[str(tmp_path / "a.jsonl")]), 0, 1, None, START_S, START_MS)
    assert isinstance(file_reader, FileReader)
    assert file_reader.position == 1
    assert file_reader.end_offset() == 2
