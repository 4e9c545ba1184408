"""benchmarks/report.py: RESULTS.md from the run just measured and the saved run of the other mode.

No Ray, no Kafka, no benchmark run: a run dict shaped as ``benchmarks.run`` writes it, and files in ``results/``
as earlier versions and other tools left them (``benchmarks.guarantees`` writes ``results/guarantees.json``,
which has no ``mode``: reading every ``*.json`` there made ``write_results`` fail with ``KeyError: 'mode'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import write_results

# the shape of benchmarks/results/guarantees.json (benchmarks.guarantees), abridged
GUARANTEES = {
    "when": "2026-12-01 10:00 UTC",
    "recovery": {"kills": 12, "p50_s": 1.31, "p99_s": 1.48},
    "checkpoints": [{"customers": 1000, "state_bytes": 120_000, "duration_ms": 44.0}],
    "throughput": {"exactly_once": 41_000.0, "at_least_once": 46_500.0},
}


def _row(system: str, events_per_s: float) -> dict[str, Any]:
    return {
        "workload": "W1", "system": system, "events": 200_000, "source_actors": 2, "events_in": 200_000,
        "outputs": 1_000, "drain_s": 200_000 / events_per_s, "events_per_s": events_per_s, "cpu_s": 10.0,
        "cpu_s_per_m": 50.0, "broker_cpu_s_per_m": 3.0, "total_cpu_s": 12.0, "peak_rss_mib": 900.0,
        "peak_pss_mib": 600.0, "wall_s": 12.0, "startup_s": 4.2, "correct": True, "verdict": "correct",
        "notes": [], "error": None, "extra": {"load_1m_at_start": 0.1}, "scaling_only": False,
    }  # fmt: skip


def _run(mode: str, events_per_s: float) -> dict[str, Any]:
    """A run as benchmarks.run writes it today."""
    return {
        "mode": mode,
        "events": 200_000,
        "command": f"python -m benchmarks.run{' --quick' if mode == 'quick' else ''}",
        "finished_at": "2026-12-04 22:00 UTC",
        "total_s": 170.0,
        "machine": {
            "cpu": "test CPU",
            "cores": 2,
            "memory_gib": 8.0,
            "os": "Linux",
            "python": "3.11.2",
            "load_at_start": "0.10 0.20 0.30",
        },
        "broker": "Apache Kafka dev broker",
        "broker_sampled": True,
        "versions": {"eventray": "0.1.0"},
        "results": [_row("eventray", events_per_s), _row("bare_getmany", 2 * events_per_s)],
        "not_run": {},
        "latency": None,
        "latency_skipped": "Not measured: quick mode.",
        "notes": [],
    }


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "guarantees.json").write_text(json.dumps(GUARANTEES), encoding="utf-8")
    return tmp_path


def _save(bench_dir: Path, name: str, content: object) -> None:
    (bench_dir / "results" / name).write_text(json.dumps(content), encoding="utf-8")


def test_another_tools_json_in_results_is_not_read_as_a_run(
    bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _save(bench_dir, "full.json", _run("full", 30_000.0))

    path = write_results(_run("quick", 20_000.0), bench_dir=bench_dir)

    assert path == bench_dir / "results" / "quick.json"
    assert json.loads(path.read_text(encoding="utf-8"))["mode"] == "quick"
    assert (bench_dir / "results" / "quick.png").stat().st_size > 0
    text = (bench_dir / "RESULTS.md").read_text(encoding="utf-8")
    assert text.index("## full mode, 200,000 events") < text.index("## quick mode, 200,000 events")
    assert "| eventray | 200,000 | 30,000 |" in text  # the saved full run's table
    assert "| eventray | 200,000 | 20,000 |" in text  # the run just measured
    assert "guarantees" not in text
    assert capsys.readouterr().out == ""  # nothing was left out
    assert json.loads((bench_dir / "results" / "guarantees.json").read_text(encoding="utf-8")) == GUARANTEES


def test_a_run_of_an_earlier_version_without_mode_is_upgraded_from_its_name(
    bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _run("full", 30_000.0)
    del old["mode"], old["broker_sampled"]  # broker_sampled is newer than the first results files
    _save(bench_dir, "full.json", old)

    write_results(_run("quick", 20_000.0), bench_dir=bench_dir)

    text = (bench_dir / "RESULTS.md").read_text(encoding="utf-8")
    assert "## full mode, 200,000 events" in text
    assert "| eventray | 200,000 | 30,000 |" in text
    assert "## quick mode, 200,000 events" in text
    out = capsys.readouterr().out
    assert "full.json has no 'mode' (an earlier version wrote it): taken as 'full'" in out


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (GUARANTEES, "it is not a results file of benchmarks.run (no 'results' list)"),
        (
            {k: v for k, v in _run("full", 30_000.0).items() if k != "machine"},
            "this version cannot show it (it lacks the field 'machine'; an earlier version wrote it?)",
        ),
        ({**_run("quick", 30_000.0)}, "its mode is 'quick', not 'full' as its name says"),
    ],
    ids=["not-a-run", "missing-field", "wrong-mode"],
)
def test_a_saved_run_this_version_cannot_show_is_left_out_with_a_note(
    bench_dir: Path, capsys: pytest.CaptureFixture[str], content: object, reason: str
) -> None:
    _save(bench_dir, "full.json", content)

    write_results(_run("quick", 20_000.0), bench_dir=bench_dir)

    text = (bench_dir / "RESULTS.md").read_text(encoding="utf-8")
    assert "## full mode" not in text
    assert "## quick mode, 200,000 events" in text
    out = capsys.readouterr().out
    assert f"note: RESULTS.md leaves out {bench_dir / 'results' / 'full.json'}: {reason}" in out
    assert "`python -m benchmarks.run` writes it anew" in out


def test_a_truncated_saved_run_is_left_out_with_a_note(bench_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bench_dir / "results" / "full.json").write_text('{"mode": "full", "resu', encoding="utf-8")

    write_results(_run("quick", 20_000.0), bench_dir=bench_dir)

    assert "## quick mode" in (bench_dir / "RESULTS.md").read_text(encoding="utf-8")
    assert "it is not readable JSON" in capsys.readouterr().out


def test_the_repository_results_directory_renders(tmp_path: Path) -> None:
    """The files in benchmarks/results as committed (guarantees.json among them) with a new quick run."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    (tmp_path / "results").mkdir()
    for path in results.glob("*.json"):
        (tmp_path / "results" / path.name).write_bytes(path.read_bytes())

    write_results(_run("quick", 20_000.0), bench_dir=tmp_path)

    text = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert "## full mode, 1,000,000 events" in text
    assert "## quick mode, 200,000 events" in text
