"""The results of a benchmark run: a JSON file per mode, ``benchmarks/RESULTS.md`` and a PNG chart per mode.

``RESULTS.md`` shows the run just measured and the last run of the other mode, read back from its
``benchmarks/results/<mode>.json`` (quick and full), so a quick run does not erase the last full run's table.
Only those two files are read: ``results/`` also holds other tools' files (``guarantees.json``, written by
``benchmarks.guarantees``). A file of the other mode that this version cannot show (not a run, no ``mode`` in
files of earlier versions, a field it lacks) is left out or upgraded with a printed note, never fatal: the run
just measured is saved before anything is read back. Files written before W1D existed have no W1D rows: their
section has no W1D table and no dirty-feed line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

__all__ = ["BENCH_DIR", "REPORTED_WORKLOADS", "RUN_MODES", "WORKLOAD_TITLES", "charted_workloads", "write_results"]

BENCH_DIR = Path(__file__).resolve().parent
RUN_MODES = ("full", "quick")  # the order of their sections in RESULTS.md
REPORTED_WORKLOADS = ("W1", "W1D", "W2", "W3")  # the order of their tables and of the chart's groups
SYSTEM_LABELS = {
    "eventray": "eventray",
    "bare_getmany": "bare aiokafka getmany (ceiling)",
    "handwritten": "hand-written aiokafka + orjson + dicts",
    "quix": "Quix Streams",
    "faust": "Faust (faust-streaming)",
}
W3_LABELS = {"bare_getmany": "generator only (ceiling)", "handwritten": "hand-written generator + orjson + dicts"}
WORKLOAD_TITLES = {
    "W1": "W1 - orders windowed aggregate (JSON OrderCreated, 10 s tumbling count + sum per customer, to Kafka)",
    "W1D": "W1D - W1 on a dirty feed (1 % invalid events of five kinds, set aside; only the valid ones count)",
    "W2": "W2 - stateless filter + enrich (to Kafka)",
    "W3": "W3 - embedded: generator -> W1's aggregate, no broker",
}
TARGETS = (("quix", 3.0), ("faust", 5.0), ("bare_getmany", 0.7))
# eventray's W1D rate over its W1 rate in the same run: 1 % invalid events should not cost 20 % of the throughput
DIRTY_RATE_GOAL = 0.8


def write_results(run: dict[str, Any], bench_dir: Path = BENCH_DIR) -> Path:
    """Save ``run`` as ``results/<mode>.json``, draw its chart, regenerate RESULTS.md; return the JSON path.

    ``bench_dir``: where ``RESULTS.md`` and ``results/`` are (``benchmarks/``; tests pass a temporary one)."""
    mode = run["mode"]
    if mode not in RUN_MODES:
        raise ValueError(f"run mode must be one of {RUN_MODES}, got {mode!r}")
    results_dir = bench_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{mode}.json"
    path.write_text(json.dumps(run, indent=2, default=str) + "\n", encoding="utf-8")
    _chart(run, path.with_suffix(".png"))
    sections = [_run_section(run) if other == mode else _saved_section(results_dir, other) for other in RUN_MODES]
    (bench_dir / "RESULTS.md").write_text(_markdown(sections), encoding="utf-8")
    return path


def _saved_section(results_dir: Path, mode: str) -> list[str]:
    """The section of the last ``mode`` run, from ``results/<mode>.json``; none (with a note) if it cannot be shown."""
    path = results_dir / f"{mode}.json"
    if not path.exists():
        return []
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return _left_out(path, f"it is not readable JSON ({error})")
    if not isinstance(run, dict) or not isinstance(run.get("results"), list):
        return _left_out(path, "it is not a results file of benchmarks.run (no 'results' list)")
    if "mode" not in run:
        print(f"note: {path} has no 'mode' (an earlier version wrote it): taken as {mode!r}, from its name")
        run["mode"] = mode
    elif run["mode"] != mode:
        return _left_out(path, f"its mode is {run['mode']!r}, not {mode!r} as its name says")
    try:
        return _run_section(run)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        missing = f"it lacks the field {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
        return _left_out(path, f"this version cannot show it ({missing}; an earlier version wrote it?)")


def _left_out(path: Path, reason: str) -> list[str]:
    command = "python -m benchmarks.run" + (" --quick" if path.stem == "quick" else "")
    print(f"note: RESULTS.md leaves out {path}: {reason}; `{command}` writes it anew")
    return []


def _label(workload: str, system: str) -> str:
    if workload == "W3" and system in W3_LABELS:
        return W3_LABELS[system]
    return SYSTEM_LABELS.get(system, system)


def _main_rows(run: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    """The rows of one workload's table: every system once (eventray with the default source actors)."""
    return [row for row in run["results"] if row["workload"] == workload and not row.get("scaling_only")]


def _find(rows: list[dict[str, Any]], system: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["system"] == system and row["events_per_s"] > 0), None)


def _ratio(value: float, reference: dict[str, Any] | None) -> str:
    if reference is None or not reference["events_per_s"] or not value:
        return "-"
    return f"{value / reference['events_per_s']:.2f}x"


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _table(run: dict[str, Any], workload: str) -> list[str]:
    rows = _main_rows(run, workload)
    if not rows:
        return []
    eventray, ceiling = _find(rows, "eventray"), _find(rows, "bare_getmany")
    ceiling_name = "generator only" if workload == "W3" else "bare getmany"
    lines = [
        f"### {WORKLOAD_TITLES.get(workload, workload)}",
        "",
        f"| system | events | drain events/s | vs eventray | vs {ceiling_name} | CPU s / M events "
        "| broker CPU s / M | peak RSS MiB (sum) | peak PSS MiB | start-up s | load | correct | output check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        rate = row["events_per_s"]
        failed = row.get("error") or (not rate)
        check = row["error"] if row.get("error") else row["verdict"]
        broker = f"{row['broker_cpu_s_per_m']:.1f}" if run.get("broker_sampled") and workload != "W3" else "-"
        notes = "; ".join(row.get("notes") or [])
        if notes:
            check = f"{check} ({notes})"
        lines.append(
            f"| {_label(workload, row['system'])} | {_int(row['events'])} | {_int(rate) if not failed else 'failed'} "
            f"| {_ratio(rate, eventray)} | {_ratio(rate, ceiling)} | {row['cpu_s_per_m']:.1f} "
            f"| {broker} | {_int(row['peak_rss_mib'])} | {_int(row['peak_pss_mib'])} "
            f"| {row['startup_s']:.1f} | {row['extra'].get('load_1m_at_start', '-')} "
            f"| {'yes' if row['correct'] else 'NO'} | {check} |"
        )
    for system, reason in run.get("not_run", {}).get(workload, {}).items():
        lines.append(f"| {_label(workload, system)} | - | not run | | | | | | | | | | {reason} |")
    return [*lines, ""]


def _scaling(run: dict[str, Any]) -> list[str]:
    rows = [row for row in run["results"] if row["workload"] == "W1" and row["system"] == "eventray"]
    rows = sorted((row for row in rows if row["events_per_s"]), key=lambda row: row["source_actors"])
    if len(rows) < 2:
        return []
    base = rows[0]["events_per_s"]
    lines = [
        "### eventray scaling on W1: source actors",
        "",
        "| source actors | aggregate actors | drain events/s | speed-up | CPU s / M events | correct |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {row['source_actors']} | {row['extra'].get('aggregate_actors', '-')} | {_int(row['events_per_s'])} "
        f"| {row['events_per_s'] / base:.2f}x | {row['cpu_s_per_m']:.1f} | {'yes' if row['correct'] else 'NO'} |"
        for row in rows
    )
    return [*lines, ""]


def _latency(run: dict[str, Any]) -> list[str]:
    latency = run.get("latency")
    if not latency:
        return ["### End-to-end latency", "", run.get("latency_skipped", "Not measured in this mode."), ""]
    lines = [
        f"### End-to-end latency, W2 at a fixed input rate of {_int(latency['rate_per_s'])} events/s "
        f"(50 % of eventray's W2 drain throughput), {_int(latency['events'])} events",
        "",
        "Latency = broker append time of the output record (LogAppendTime) - producer time of the input record.",
        "",
        "| system | p50 ms | p99 ms | max ms | outputs matched | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in latency["rows"]:
        if row.get("p50_ms") is None:
            lines.append(f"| {_label('W2', row['system'])} | - | - | - | - | {row.get('note', '')} |")
            continue
        lines.append(
            f"| {_label('W2', row['system'])} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['max_ms']:.0f} "
            f"| {_int(row['matched'])} | {row.get('note', '')} |"
        )
    return [*lines, ""]


def _targets(run: dict[str, Any]) -> list[str]:
    lines = [*_peer_targets(run), *_dirty_target(run)]
    if not lines:
        return []
    return ["### Targets on W1 (reported, not asserted)", "", *lines, ""]


def _peer_targets(run: dict[str, Any]) -> list[str]:
    rows = _main_rows(run, "W1")
    eventray = _find(rows, "eventray")
    if eventray is None:
        return []
    lines = []
    for system, target in TARGETS:
        other = _find(rows, system)
        if other is None:
            lines.append(f"- eventray >= {target}x {_label('W1', system)}: not measured")
            continue
        ratio = eventray["events_per_s"] / other["events_per_s"]
        verdict = "met" if ratio >= target else "**not met**"
        caveat = "" if other["correct"] else f" ({_label('W1', system)}'s output was not correct: {other['verdict']})"
        lines.append(f"- eventray >= {target}x {_label('W1', system)}: {ratio:.2f}x, {verdict}{caveat}")
    return lines


def _dirty_ratio(run: dict[str, Any]) -> tuple[dict[str, Any], float] | None:
    """eventray's W1D row and its rate over eventray's W1 rate (both with the default source actors), or None
    when either did not complete in this run (a results file from before W1D has neither)."""
    dirty, clean = _find(_main_rows(run, "W1D"), "eventray"), _find(_main_rows(run, "W1"), "eventray")
    if dirty is None or clean is None:
        return None
    return dirty, dirty["events_per_s"] / clean["events_per_s"]


def _dirty_target(run: dict[str, Any]) -> list[str]:
    """What a 1 % dirty feed costs eventray: W1D against W1, measured in the same run."""
    if not _find(_main_rows(run, "W1D"), "eventray"):
        return []  # not run, failed (its table says why), or a results file from before W1D
    measured = _dirty_ratio(run)
    if measured is None:
        return [f"- W1 on a 1 % dirty feed: no clean W1 rate of eventray in this run to compare with (goal >= "
                f"{DIRTY_RATE_GOAL}x)"]  # fmt: skip
    dirty, ratio = measured
    verdict = "met" if ratio >= DIRTY_RATE_GOAL else "**not met**"
    caveat = "" if dirty["correct"] else f" (W1D's output was not correct: {dirty['verdict']})"
    return [
        f"- W1 on a 1 % dirty feed: eventray {_int(dirty['events_per_s'])} events/s, {ratio:.2f}x of its clean W1 "
        f"rate in the same run (goal >= {DIRTY_RATE_GOAL}x), {verdict}{caveat}"
    ]


WHY = """\
Why (from the W1 profile in [PROFILE.md](PROFILE.md)): eventray pays one Python object per record at both Kafka
edges: aiokafka's `ConsumerRecord` per input record before the columns are built (~40 % of a source actor's busy
time) and one `producer.send()` (a future, a metadata check) per output record (~50-60 % of the aggregate
actor's). The columnar middle (pyarrow JSON decode, filter, window aggregation) is about a third of the work.
Then the multi-process topology costs what a single process does not: a Ray actor call and pickling per small
batch (~15-20 % of a source actor), 4-12 s of start-up and 700-1,000 MiB of Ray processes. On 2 cores the source
and aggregate actors compete for the same CPUs, so a second source actor does not add throughput. The
hand-written loop does the same per-record Kafka work but nothing else, in one process."""


def _shortfalls(run: dict[str, Any]) -> list[str]:
    """Where eventray is behind a correct peer or a target, measured, then why."""
    lines = ["### Where eventray falls short", ""]
    for workload in REPORTED_WORKLOADS:
        rows = _main_rows(run, workload)
        eventray = _find(rows, "eventray")
        if eventray is None:
            continue
        for row in rows:
            if row["system"] in ("eventray", "bare_getmany") or not row["correct"] or not row["events_per_s"]:
                continue
            label = _label(workload, row["system"])
            if row["events_per_s"] > eventray["events_per_s"]:
                ratio = row["events_per_s"] / eventray["events_per_s"]
                lines.append(f"- {workload}: {label} drains {ratio:.2f}x eventray's events/s.")
            if row["cpu_s_per_m"] < eventray["cpu_s_per_m"]:
                ratio = eventray["cpu_s_per_m"] / max(row["cpu_s_per_m"], 1e-9)
                lines.append(f"- {workload}: eventray spends {ratio:.1f}x the CPU per event of {label}.")
        others = [row["peak_pss_mib"] for row in rows if row["system"] != "eventray" and row["peak_pss_mib"]]
        if others and eventray["peak_pss_mib"] > max(others):
            lines.append(
                f"- {workload}: eventray's processes use {_int(eventray['peak_pss_mib'])} MiB PSS at peak, "
                f"the others at most {_int(max(others))} MiB; its start-up takes {eventray['startup_s']:.1f} s."
            )
    w1 = _main_rows(run, "W1")
    eventray, ceiling = _find(w1, "eventray"), _find(w1, "bare_getmany")
    if eventray and ceiling and eventray["events_per_s"] < 0.7 * ceiling["events_per_s"]:
        ratio = eventray["events_per_s"] / ceiling["events_per_s"]
        lines.append(f"- W1: {ratio:.2f}x the bare getmany drain, short of the 0.7x target.")
    dirty = _dirty_ratio(run)
    if dirty is not None and dirty[1] < DIRTY_RATE_GOAL:
        lines.append(f"- W1D: {dirty[1]:.2f}x eventray's clean W1 rate on a 1 % dirty feed, short of the "
                     f"{DIRTY_RATE_GOAL}x goal.")  # fmt: skip
    return [*lines, "", WHY, ""]


def _run_section(run: dict[str, Any]) -> list[str]:
    machine = run["machine"]
    lines = [
        f"## {run['mode']} mode, {_int(run['events'])} events per input topic ({run['finished_at']})",
        "",
        f"Command: `{run['command']}` (total {run['total_s']:.0f} s)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']:.0f} GiB, {machine['os']}, "
        f"Python {machine['python']}; load average at start {machine['load_at_start']}. "
        f"Broker: {run['broker']}.",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in run["versions"].items()),
        "",
    ]
    for workload in REPORTED_WORKLOADS:
        lines.extend(_table(run, workload))
    lines.extend(_targets(run))
    lines.extend(_shortfalls(run))
    lines.extend(_scaling(run))
    lines.extend(_latency(run))
    if run.get("notes"):
        lines.extend(["### Notes on this run", "", *(f"- {note}" for note in run["notes"]), ""])
    lines.extend([f"![{run['mode']} results](results/{run['mode']}.png)", ""])
    return lines


METHOD = """\
## How to read these tables

- **Input**: a topic pre-filled with `eventray produce`'s generator (8 partitions, 10,000 customers, no invalid
  events, ~50 % OrderCreated, 10,000 events per second of event time). Every system reads the same topic from the
  beginning. The expected output is recomputed from the generator alone (`benchmarks/workloads.py`), and every
  system's output topic is read back and compared with it: *correct* means every emitted record is right, none
  is duplicated and none that the window semantics require is missing.
- **W1D** reads a second topic: the same events, but 1 % of them invalid (truncated JSON, no event time, a
  negative amount, an unknown event type, `"amount_cents":"n/a"`, drawn equally). Only valid events count;
  eventray dead-letters the invalid ones (the unknown type is dropped by the job's OrderCreated filter) and its
  dead-letter count is checked too. The peers have no dead-letter path and are not run on it. Its events/s
  against eventray's W1 events/s of the same run is what invalid input costs.
- **Drain events/s** = input events / (done - ready). *Ready*: the system's consumer has its partitions
  assigned and positioned (start-up is over; for eventray, the first progress report in which a source has an
  open partition, polled every 0.1 s, placed halfway from the previous report). *Done*: the last input event is
  processed and every output is flushed (for eventray: the Supervisor's end of run, after every window was
  emitted and every sink flushed). *Start-up s* is spawn -> ready (eventray: Ray start, actors). *Load* is the
  machine's 1-minute load average when the run started: this 2-core machine is shared, and a load above ~0.5
  means another process took CPU from the run.
- **CPU s / M events**: user + system CPU of the system's whole process tree (eventray: driver, GCS, raylet,
  agents, every worker) between ready and done, per million input events, sampled with psutil every 0.2 s.
  *Broker CPU* is the Kafka broker's, over the same interval (peers that repartition make it work harder).
- **Peak RSS (sum)** adds every process's RSS, so pages shared by Ray's processes count several times; **peak PSS**
  splits shared pages between the processes mapping them and is the fairer memory figure.
- **Window semantics**: eventray and the hand-written loop close a window when the watermark (minimum over input
  partitions of the newest event time, minus 1 s) passes its end, and flush open windows at the end of the input.
  Quix Streams and Faust only see the *repartitioned* stream (both must re-key by customer through a topic), whose
  partitions mix all input partitions: with the same 1 s allowed lateness they drop events that arrive after
  their window closed, and Quix never emits the windows still open when the input ends (*tail*). Faust's own
  windowed tables close windows on wall-clock time, so the Faust job closes windows in the agent instead (see
  `benchmarks/systems/faust_system.py`).
- Profile of eventray's hot path and the fixes it suggests: [PROFILE.md](PROFILE.md).
"""


def _markdown(sections: list[list[str]]) -> str:
    lines = [
        "# eventray benchmarks",
        "",
        "Generated by `python -m benchmarks.run` (`make bench`); do not edit by hand: the next run rewrites it.",
        "",
        METHOD,
    ]
    for section in sections:
        lines.extend(section)
    return "\n".join(lines)


def charted_workloads(run: dict[str, Any]) -> list[str]:
    """The workloads the chart of ``run`` has a group for: those with a row (W1D only in runs that had it)."""
    return [workload for workload in REPORTED_WORKLOADS if _main_rows(run, workload)]


def _chart(run: dict[str, Any], path: Path) -> None:
    workloads = charted_workloads(run)
    figure, axes = plt.subplots(1, 3, figsize=(16, 5))
    metrics = (("events_per_s", "drain events/s (log)"), ("cpu_s_per_m", "CPU s per M events"),
               ("peak_pss_mib", "peak PSS MiB"))  # fmt: skip
    systems = list(SYSTEM_LABELS)
    width = 0.8 / len(systems)
    colors = plt.get_cmap("tab10")
    for axis, (metric, title) in zip(axes, metrics, strict=True):
        for index, system in enumerate(systems):
            positions, values, hatches = [], [], []
            for w_index, workload in enumerate(workloads):
                row = next((r for r in _main_rows(run, workload) if r["system"] == system), None)
                if row is None or not row["events_per_s"]:
                    continue
                positions.append(w_index + (index - len(systems) / 2 + 0.5) * width)
                values.append(row[metric])
                hatches.append("" if row["correct"] else "//")
            bars = axis.bar(positions, values, width, label=SYSTEM_LABELS[system], color=colors(index))
            for bar, hatch in zip(bars, hatches, strict=True):
                bar.set_hatch(hatch)
        axis.set_xticks(range(len(workloads)), workloads)
        axis.set_title(title)
        if metric == "events_per_s":
            axis.set_yscale("log")
    handles = [Patch(color=colors(index), label=SYSTEM_LABELS[system]) for index, system in enumerate(systems)]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    figure.suptitle(f"eventray benchmarks, {run['mode']} mode ({run['events']:,} events; hatched: output not correct)")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
