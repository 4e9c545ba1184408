"""``python -m benchmarks.sagas``: the order saga end to end (``python -m cluster.examples.order_saga``), its
throughput and completion latency with participants that fail, side by side with the same orders when no
participant fails (the baseline: three steps, no compensation, no timeout).

Each run places ``--orders`` orders at once (a backlog: the saga pipeline starts with every order waiting) on a
dev broker (or ``$KAFKA_BOOTSTRAP``), runs the saga and its three participants on one embedded Ray, exactly once
with 500 ms checkpoints, until every saga has ended, and checks every saga against the sequential simulator (a
wrong saga fails the benchmark). Figures per run: sagas/s (first start to last end) and the p50/p99 of a saga's
start-to-end time; ``--repeat`` runs of each kind, interleaved, their medians, the ratio faulty/baseline, and the
load average before each run. ``make bench-sagas``; results in ``benchmarks/SAGAS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run import dev_broker
from cluster.examples.order_saga import run_order_sagas

KINDS = {
    "baseline": {"failure_rate": 0.0, "silent_rate": 0.0, "compensation_failure_rate": 0.0},
    "faulty": {"failure_rate": 0.1, "silent_rate": 0.02, "compensation_failure_rate": 0.05},
}


def _one(kind: str, args: argparse.Namespace, work: Path, attempt: int) -> dict[str, Any]:
    options = argparse.Namespace(orders=args.orders, address=None, seed=attempt, timeout_ms=args.timeout_ms,
                                 patient_s=args.patient_s, **KINDS[kind])  # fmt: skip
    load = os.getloadavg()[0]
    began = time.monotonic()
    result = run_order_sagas(options, work / f"{kind}-{attempt}", lambda line: None)
    if result["failures"]:
        raise SystemExit(f"{kind} run {attempt}: the check failed: {result['failures']}")
    figures = result["figures"]
    row = {"kind": kind, "attempt": attempt, "load_1m": round(load, 2), "wall_s": round(time.monotonic() - began, 1),
           **{k: figures[k] for k in ("sagas", "sagas_per_s", "p50_ms", "p99_ms", "by_status")},
           "timeouts": result["timeouts"], "timer_late_p99_ms": result["timer_late_p99_ms"]}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def _median(runs: list[dict[str, Any]], kind: str, field: str) -> float:
    return float(statistics.median(run[field] for run in runs if run["kind"] == kind))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sagas", description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=2_000, help="orders per run (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind (default 3)")
    parser.add_argument("--timeout-ms", type=int, default=10_000, help="how long a step waits for its reply")
    parser.add_argument("--patient-s", type=float, default=1_800, help="a run with sagas open after this fails")
    parser.add_argument("--json", type=Path, default=None, help="also write the runs and medians here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sagas-") as temporary:
        work = Path(temporary)
        with dev_broker(work) as (bootstrap, _, broker):
            os.environ["KAFKA_BOOTSTRAP"] = bootstrap
            print(f"broker: {broker}; {args.orders:,} orders a run, {args.repeat} runs of each kind", flush=True)
            runs = []
            for attempt in range(args.repeat):
                order = ["baseline", "faulty"] if attempt % 2 == 0 else ["faulty", "baseline"]
                runs += [_one(kind, args, work, attempt) for kind in order]
    medians = {kind: {field: _median(runs, kind, field) for field in ("sagas_per_s", "p50_ms", "p99_ms")}
               for kind in KINDS}  # fmt: skip
    ratio = medians["faulty"]["sagas_per_s"] / medians["baseline"]["sagas_per_s"]
    print(f"medians: {json.dumps(medians)}; faulty/baseline sagas/s = {ratio:.2f}x", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
