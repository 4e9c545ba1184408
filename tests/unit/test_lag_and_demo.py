"""`eventray lag` on a generator pipeline (its last checkpoint against the generator's clock), and the demo's
report and plot, without Ray or Kafka."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from cluster.commands.demo import demo_report, plot_timeline
from cluster.commands.lag import lag_samples
from cluster.control.autoscaler import AutoscalePoint, Rescale
from pipelines.at_rest import CheckpointKeyError
from pipelines.config.pipeline import CheckpointConfig, CheckpointEncryptionConfig
from pipelines.examples.orders import orders_pipeline
from pipelines.state.checkpoint_store import AggregateSnapshot, Checkpoint, CheckpointStore, SourceSnapshot


async def test_lag_of_a_generator_pipeline_is_its_checkpoint_against_the_generator_clock(tmp_path: Path) -> None:
    config = orders_pipeline(
        source__partitions=2, source__rate_per_s=800, checkpoint__uri=str(tmp_path), name="lagging"
    )
    store = CheckpointStore(str(tmp_path), "lagging")
    source = SourceSnapshot("s", {0: 100, 1: 50}, {})
    store.commit(
        Checkpoint(
            epoch=1,
            run_id="r",
            created_at_s=0.0,
            started_at_s=1_000.0,
            start_time_ms=0,
            partitions=2,
            sources=[source],
            aggregates=[],
        )
    )

    samples = await lag_samples(config, now_s=1_010.0)  # 10 s at 400 events/s per partition

    lags = [(s.partition, s.end_offset, s.processed_offset) for s in samples.partitions]
    assert lags == [(0, 4_000, 100), (1, 4_000, 50)]


async def test_lag_reads_encrypted_checkpoints_with_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "4b" * 32
    config = orders_pipeline(source__partitions=1, source__rate_per_s=100, checkpoint__uri=str(tmp_path), name="sealed")
    config = config.model_copy(
        update={"checkpoint": CheckpointConfig(uri=str(tmp_path), encryption=CheckpointEncryptionConfig())}
    )
    store = CheckpointStore(str(tmp_path), "sealed", key=bytes.fromhex(key))
    state = store.write_table(1, "state-aggregate-0", pa.table({"_key_group": pa.array([0], pa.int32())}))
    aggregate = AggregateSnapshot("a", [0], 0, state)
    source = SourceSnapshot("s", {0: 70}, {})
    store.commit(Checkpoint(epoch=1, run_id="r", created_at_s=0.0, started_at_s=1_000.0, start_time_ms=0,
                            partitions=1, sources=[source], aggregates=[aggregate]))  # fmt: skip

    with pytest.raises(CheckpointKeyError, match="EVENTRAY_CHECKPOINT_KEY must hold a 256-bit key"):
        await lag_samples(config, now_s=1_001.0)
    monkeypatch.setenv("EVENTRAY_CHECKPOINT_KEY", "5c" * 32)
    with pytest.raises(CheckpointKeyError, match="was encrypted with key id"):
        await lag_samples(config, now_s=1_001.0)
    monkeypatch.setenv("EVENTRAY_CHECKPOINT_KEY", key)
    samples = await lag_samples(config, now_s=1_001.0)
    assert [(s.end_offset, s.processed_offset) for s in samples.partitions] == [(100, 70)]


def point(at_s: float, lag: int, sources: int, desired: int) -> AutoscalePoint:
    return AutoscalePoint(at_s, 1_000.0, lag, None, sources, 1, desired, 1, 1, "")


def test_demo_report_reads_reaction_drain_peak_and_rescales_from_the_timeline(tmp_path: Path) -> None:
    timeline = [point(8, 0, 1, 1), point(12, 9_000, 1, 2), point(14, 50_000, 2, 2), point(31, 20_000, 2, 2),
                point(33, 100, 2, 2), point(60, 100, 1, 1)]  # fmt: skip
    rescales = [Rescale(13, (1, 2), (1, 1), 4, 0, 0.6), Rescale(60, (2, 1), (1, 1), 4, 0, 0.0)]

    report = demo_report(timeline, rescales, start_s=10, end_s=30, activation=5_000)
    png = plot_timeline(timeline, rescales, (10, 30), tmp_path / "demo.png")

    assert (report.first_scale_up_after_s, report.drained_after_s, report.peak_lag_records) == (2, 3, 50_000)
    assert (report.rescales, report.scale_ups, report.scale_downs) == (2, 1, 1)
    assert png.stat().st_size > 10_000 and png.read_bytes().startswith(b"\x89PNG")
