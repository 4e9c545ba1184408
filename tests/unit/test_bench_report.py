"""benchmarks/report.py: RESULTS.md from the run just measured and the saved run of the other mode.

No Ray, no Kafka, no benchmark run: a run dict shaped as ``benchmarks.run`` writes it, and files in ``results/``
as earlier versions and other tools left them (``benchmarks.guarantees`` writes ``results/guarantees.json``,
which has no ``mode``: reading every ``*.json`` there made ``write_results`` fail with ``KeyError: 'mode'``;
files from before W1D have no W1D rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import charted_workloads, write_results

# the shape of benchmarks/results/guarantees.json (benchmarks.guarantees), abridged
GUARANTEES = {
    "when": "2026-12-01 10:00 UTC",
    "recovery": {"kills": 12, "p50_s": 1.31, "p99_s": 1.48},
    "checkpoints": [{"customers": 1000, "state_bytes": 120_000, "duration_ms": 44.0}],
    "throughput": {"exactly_once": 41_000.0, "at_least_once": 46_500.0},
}


DIRTY_NOT_RUN = {system: "no dead-letter path for invalid events" for system in ("bare_getmany", "quix", "faust")}


def _row(system: str, events_per_s: float, workload: str = "W1", source_actors: int = 2) -> dict[str, Any]:
    return {
        "workload": workload, "system": system, "events": 200_000, "source_actors": source_actors, "events_in": 200_000,
        "outputs": 1_000, "drain_s": 200_000 / events_per_s, "events_per_s": events_per_s, "cpu_s": 10.0,
        "cpu_s_per_m": 50.0, "broker_cpu_s_per_m": 3.0, "total_cpu_s": 12.0, "peak_rss_mib": 900.0,
        "peak_pss_mib": 600.0, "wall_s": 12.0, "startup_s": 4.2, "correct": True, "verdict": "correct",
        "notes": [], "error": None, "extra": {"load_1m_at_start": 0.1}, "scaling_only": source_actors == 1,
    }  # fmt: skip


def _run(mode: str, events_per_s: float, dirty_events_per_s: float | None = None) -> dict[str, Any]:
    """A run as benchmarks.run writes it today; with W1D when ``dirty_events_per_s`` is given."""
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
        "results": [
            _row("eventray", events_per_s),
            _row("bare_getmany", 2 * events_per_s),
            *([] if dirty_events_per_s is None else [_row("eventray", dirty_events_per_s, workload="W1D")]),
        ],
        "not_run": {} if dirty_events_per_s is None else {"W1D": DIRTY_NOT_RUN},
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


def _sections(bench_dir: Path) -> tuple[str, str]:
    """RESULTS.md's full and quick sections (full first; either may be empty)."""
    text = (bench_dir / "RESULTS.md").read_text(encoding="utf-8")
    full, _, quick = text.partition("## quick mode")
    return full.partition("## full mode")[2], quick


def _dirty_line(events_per_s: str, ratio: str, verdict: str) -> str:
    return (
        f"- W1 on a 1 % dirty feed: eventray {events_per_s} events/s, {ratio} of its clean W1 rate in the same run "
        f"(goal >= 0.8x), {verdict}"
    )


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
    old = _run("full", 30_000.0)  # also from before W1D: no W1D rows, W3's not-run reason only
    del old["mode"], old["broker_sampled"]  # broker_sampled is newer than the first results files
    old["not_run"] = {"W3": {"quix": "needs a Kafka broker (W3 has none)"}}
    _save(bench_dir, "full.json", old)

    write_results(_run("quick", 20_000.0, dirty_events_per_s=18_000.0), bench_dir=bench_dir)

    full, quick = _sections(bench_dir)
    assert full.startswith(", 200,000 events")
    assert "| eventray | 200,000 | 30,000 |" in full
    assert "W1D" not in full
    assert "dirty feed" not in full
    assert "### W1D - W1 on a dirty feed" in quick
    assert _dirty_line("18,000", "0.90x", "met") in quick
    out = capsys.readouterr().out
    assert "full.json has no 'mode' (an earlier version wrote it): taken as 'full'" in out
    assert "leaves out" not in out


def test_w1d_has_its_table_and_its_rate_against_clean_w1_in_the_targets(bench_dir: Path) -> None:
    run = _run("quick", 40_000.0, dirty_events_per_s=34_000.0)
    run["results"].append(_row("eventray", 25_000.0, source_actors=1))  # the scaling run: not W1's rate

    write_results(run, bench_dir=bench_dir)

    _, quick = _sections(bench_dir)
    w1d_table = quick.partition("### W1D - W1 on a dirty feed")[2].partition("###")[0]
    assert "| eventray | 200,000 | 34,000 | 1.00x | - |" in w1d_table
    assert "| bare aiokafka getmany (ceiling) | - | not run |" in w1d_table
    assert w1d_table.count("| no dead-letter path for invalid events |") == len(DIRTY_NOT_RUN)
    assert "| eventray | 200,000 | 40,000 |" not in w1d_table
    targets = quick.partition("### Targets on W1 (reported, not asserted)")[2].partition("###")[0]
    assert "- eventray >= 0.7x bare aiokafka getmany (ceiling): 0.50x, **not met**" in targets
    assert _dirty_line("34,000", "0.85x", "met") in targets
    assert "- W1D:" not in quick  # no shortfall
    assert charted_workloads(run) == ["W1", "W1D"]
    assert (bench_dir / "results" / "quick.png").stat().st_size > 0


def test_a_dirty_rate_below_the_goal_is_a_shortfall(bench_dir: Path) -> None:
    write_results(_run("quick", 40_000.0, dirty_events_per_s=28_000.0), bench_dir=bench_dir)

    _, quick = _sections(bench_dir)
    assert _dirty_line("28,000", "0.70x", "**not met**") in quick
    assert "- W1D: 0.70x eventray's clean W1 rate on a 1 % dirty feed, short of the 0.8x goal." in quick


def test_w1d_without_a_clean_w1_run_says_there_is_nothing_to_compare(bench_dir: Path) -> None:
    run = _run("quick", 40_000.0, dirty_events_per_s=34_000.0)
    run["results"] = [row for row in run["results"] if row["workload"] == "W1D"]

    write_results(run, bench_dir=bench_dir)

    _, quick = _sections(bench_dir)
    assert "| eventray | 200,000 | 34,000 |" in quick
    assert "- W1 on a 1 % dirty feed: no clean W1 rate of eventray in this run to compare with (goal >= 0.8x)" in quick
    assert charted_workloads(run) == ["W1D"]


def test_a_failed_w1d_run_has_its_row_and_no_ratio(bench_dir: Path) -> None:
    run = _run("quick", 40_000.0, dirty_events_per_s=34_000.0)
    failed = run["results"][-1]
    failed.update(events_per_s=0.0, correct=False, error="exited 1 without a report; see stderr.log")

    write_results(run, bench_dir=bench_dir)

    _, quick = _sections(bench_dir)
    assert "| eventray | 200,000 | failed |" in quick
    assert "dirty feed:" not in quick


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

    write_results(_run("quick", 20_000.0, dirty_events_per_s=18_000.0), bench_dir=tmp_path)

    full, quick = _sections(tmp_path)
    assert full.startswith(", 1,000,000 events")
    assert quick.startswith(", 200,000 events")
    assert "### W1D - W1 on a dirty feed" in quick
    assert _dirty_line("18,000", "0.90x", "met") in quick
