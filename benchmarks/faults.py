"""Faults between eventray, Kafka and its storage, each run several times: what they cost, and that nothing is lost.

Each run is the orders pipeline, Kafka in and Kafka out, exactly once (checkpoints every 500 ms, Kafka requests
time out after 3 s), on a broker of its own that advertises a loopback fault proxy
(:mod:`cluster.kafka_dev.fault_proxy`), so every client connection goes through it. The input is produced in two
parts; the fault (:mod:`benchmarks.fault_kinds`) starts once a checkpoint of the run is complete (by progress,
not time) and the rest of the input follows once it is over. ``none`` is the baseline.

Each run is verified with ``eventray verify`` (0 lost, 0 duplicated, 0 aborted reads, windows equal to the
recomputation). The recovery times are the Supervisor's (from noticing the failure to the restored topology
reading again); a fault the clients rode out without one counts no recovery. Each row also has the largest
summed RSS of the actor processes during the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.fault_kinds import FAULTS, FaultRun
from benchmarks.measure import PeakActorRss
from cluster.commands.produce import produce_events
from cluster.commands.verify import verify_run
from cluster.control.run_report import RunSummary
from cluster.control.runner import run_pipeline
from cluster.kafka_dev import DevBrokerConfig, start_broker, stop_broker
from cluster.kafka_dev.fault_proxy import FaultProxy, fault_proxy
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig
from pipelines.testing import FaultPlan
from tests.chaos.chaos_tools import ProduceGates, checkpointed_progress  # the chaos suite's progress gates

__all__ = ["FAULT_KINDS", "fault_runs"]

FAULT_KINDS = tuple(FAULTS)
EVENTS = 40_000
PARTITIONS = 8
START_TIME_MS = 1_767_225_600_000


def fault_runs(
    work: Path, runs: int, orders: Callable[..., PipelineConfig], kinds: tuple[str, ...] = FAULT_KINDS
) -> dict[str, Any]:
    """``runs`` runs of each fault kind in ``kinds``, interleaved (kind by kind within a round); ``orders`` builds
    the pipeline config (:func:`benchmarks.guarantees.orders`)."""
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for round_number in range(runs):
        for kind in kinds:
            try:
                row = _one_run(work / f"{kind}-{round_number}", kind, orders)
            except Exception as error:  # noqa: BLE001 -- a failed run is a row of the table, not the benchmark's end
                row = {"fault_applied": False, "run_s": None, "recovery_s": [], "events_in": None,
                       "exactly_once_ok": False, "failures": [f"{type(error).__name__}: {error}"]}  # fmt: skip
            rows[kind].append(row)
            print(f"  {kind} run {round_number + 1}: {row}", flush=True)
    return {"events": EVENTS, "runs": runs, "by_fault": {kind: _summary(kind_rows) for kind, kind_rows in rows.items()}}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    recoveries = sorted(t for row in rows for t in row["recovery_s"])
    return {
        "runs": rows,
        "recoveries_per_run": [len(row["recovery_s"]) for row in rows],
        "recovery_p50_s": statistics.median(recoveries) if recoveries else None,
        "recovery_p99_s": _p99(recoveries),
        "run_s_median": statistics.median(times) if (times := [r["run_s"] for r in rows if r["run_s"]]) else None,
        "exactly_once_runs": sum(1 for row in rows if row["exactly_once_ok"]),
        "peak_rss_mib": max((row.get("peak_rss_mib") or 0.0 for row in rows), default=None),
        "detected_s": [row["detected_s"] for row in rows if "detected_s" in row],
        "restored_s": [row["restored_s"] for row in rows if "restored_s" in row],
    }


def _p99(values: list[float]) -> float | None:
    return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))] if values else None


def _one_run(work: Path, kind: str, orders: Callable[..., PipelineConfig]) -> dict[str, Any]:
    fault = FAULTS[kind]
    with _proxied_broker(work / "broker") as (proxy, broker):
        bootstrap = f"127.0.0.1:{proxy.port}"
        name = f"faults-{kind.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        checkpoints = work / "checkpoints"
        config = orders(
            work, name=name, delivery="exactly_once", runtime__max_events=EVENTS, runtime__duration_s=None,
            source={"type": "kafka", "topic": f"{name}.in", "group_id": name, "start": "earliest"},
            sinks=[{"type": "kafka", "topic": f"{name}.out", "key_column": "customer_id"}],
            dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
            kafka={"bootstrap_servers": bootstrap, "request_timeout_ms": 3_000},
        )  # fmt: skip
        run = FaultRun(proxy, broker, config, checkpoints, bootstrap)
        crashes = fault.prepare(run)
        applied: list[bool] = []
        producer_failed: list[BaseException] = []

        def fault_once_a_checkpoint_is_complete() -> bool:
            if not applied and checkpointed_progress(checkpoints).epoch >= 2:
                fault.apply(run)
                applied.append(True)
            return bool(applied)

        gates = ProduceGates(EVENTS, [(0.3, fault_once_a_checkpoint_is_complete)])
        generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=17, rate_per_s=None,
                                          event_time_rate_per_s=1_000, invalid_fraction=0.01)  # fmt: skip
        connection = KafkaConnectionConfig(bootstrap_servers=bootstrap)

        def produce() -> None:
            try:
                asyncio.run(produce_events(connection, f"{name}.in", EVENTS, generator, 10_000, START_TIME_MS,
                                           on_progress=gates.hold_at_gate))  # fmt: skip
            except Exception as error:  # noqa: BLE001 -- a gate that failed, a broker that did not come back
                producer_failed.append(error)

        producing = threading.Thread(target=produce, daemon=True)
        started = time.monotonic()
        peak_rss = PeakActorRss()
        producing.start()
        try:
            if fault.stops_the_run:
                _run_stopped_by_the_fault(config, crashes, producer_failed, run.figures)
                fault.after_stop(run)
                crashes = ()  # the second run resumes from the last complete checkpoint
            summary = _run(config, crashes, producer_failed)
        finally:
            run.figures["peak_rss_mib"] = peak_rss.stop()
            gates.release_all()
            producing.join(timeout=120)
        run_s = time.monotonic() - started
        report = asyncio.run(verify_run(config))
    if producer_failed:
        raise RuntimeError(f"the input was not all produced: {producer_failed[0]!r}")
    events_in = report.input_records if fault.stops_the_run else summary.progress.events_in
    return {
        "fault_applied": bool(applied) and (not crashes or summary.reemitted_rows > 0),  # the crash redone
        "run_s": round(run_s, 2),
        "recovery_s": [round(t, 2) for t in summary.recoveries_s],
        "reemitted_rows": summary.reemitted_rows,
        "events_in": events_in,
        "exactly_once_ok": report.ok_for("exactly_once") and events_in == EVENTS,
        "failures": report.failures("exactly_once"),
        **run.figures,
    }


def _run(config: PipelineConfig, crashes: FaultPlan, producer_failed: list[BaseException]) -> RunSummary:
    """Run the pipeline; a bounded run whose input stopped coming would wait for ever: it is stopped instead."""
    return run_pipeline(config, stop_when=lambda _progress: bool(producer_failed), faults=crashes)


def _run_stopped_by_the_fault(
    config: PipelineConfig, crashes: FaultPlan, producer_failed: list[BaseException], figures: dict[str, Any]
) -> None:
    """A run the fault must stop with an error; its message goes to ``figures``."""
    try:
        _run(config, crashes, producer_failed)
    except Exception as error:
        figures["stopped_with"] = f"{type(error).__name__}: {error}"[:600]
        if figures["full_path"] not in str(error):
            raise RuntimeError(f"the run stopped without naming {figures['full_path']}: {error}") from error
        return
    raise RuntimeError("the run was to stop under the fault, and finished")


@contextlib.contextmanager
def _proxied_broker(state_dir: Path) -> Iterator[tuple[FaultProxy, DevBrokerConfig]]:
    """A broker on pinned ports (a restart takes the same ones, with its data) that advertises the proxy."""
    with fault_proxy(target_port=0) as proxy:  # listening first, so the broker's ports cannot be its port
        port, controller = _free_ports(2)
        proxy.target_port = port  # read for each new connection: set before the broker (and its probe) starts
        broker = DevBrokerConfig(state_dir=state_dir, port=port, controller_port=controller,
                                 advertised_port=proxy.port, keep_data=True)  # fmt: skip
        start_broker(broker)
        try:
            yield proxy, broker
        finally:
            stop_broker(state_dir)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()
