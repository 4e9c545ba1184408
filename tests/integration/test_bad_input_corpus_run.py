"""The bad-input corpus (tests/data/bad_inputs) through a real run: the file source reads each class's file as
a partition beside a file of valid generator events, on the session's Ray cluster. The run does not halt, every
bad record is in the dead-letter output exactly once with its class's error type, and the delivery checker's
independent recomputation of the windows agrees."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from cluster.commands.verify import verify_run
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig
from pipelines.io.generator import generate_events
from pipelines.io.sources import file_partitions
from tests.integration.pipelines_under_test import START_TIME_MS, orders_with
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"
MANIFEST: dict[str, str | None] = json.loads((CORPUS / "manifest.json").read_text())
VALID_EVENTS = 5_000


def test_the_corpus_through_the_file_source_halts_nothing_and_dead_letters_each_bad_record_once(
    ray_driver: LocalRayCluster, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in MANIFEST:
        shutil.copy(CORPUS / name, inputs / name)
    generator = GeneratorSourceConfig(seed=9, rate_per_s=None, invalid_fraction=0.0)
    valid = generate_events(generator, 0, 0, VALID_EVENTS, START_TIME_MS).payloads.to_pylist()
    (inputs / "valid.jsonl").write_bytes(b"\n".join(valid) + b"\n")
    source = {"type": "file", "format": "jsonl", "paths": [str(inputs / "*.jsonl")]}
    config = orders_with(source, tmp_path, {"source_actors": 1, "aggregate_actors": 1})

    summary = run_pipeline(config, address=ray_driver.address)

    files = [Path(path).name for path in file_partitions(config.source)]  # type: ignore[arg-type]
    expected: dict[tuple[int, int], str] = {}
    for partition, name in enumerate(files):
        error_type = MANIFEST.get(name)
        if error_type is not None:
            lines = (inputs / name).read_bytes().count(b"\n")
            expected.update({(partition, offset): error_type for offset in range(lines)})
    dead = read_jsonl_dir(tmp_path / "dead_letter")
    observed = [((row["partition"], row["offset"]), row["error_type"]) for row in dead]
    assert len(observed) == len(set(key for key, _ in observed)), "each record is dead-lettered once"
    assert dict(observed) == expected
    total = sum((inputs / name).read_bytes().count(b"\n") for name in files)
    assert summary.progress.events_in == total, "every record was read; none halted the run"
    report = asyncio.run(verify_run(config))
    assert report.failures("at_least_once") == []
    windows = report.outputs[0].windows
    assert windows is not None and windows.expected > 0 and windows.missing.count == 0
