"""The order saga end to end: ``python -m cluster.examples.order_saga [--orders 1000] [--address auto] [--json]``.

Runs the saga (``configs/order-saga.yaml``) and its three participants (``configs/order-saga-{inventory,payments,
shipping}.yaml``) together from this driver, on the broker at ``$KAFKA_BOOTSTRAP`` (else ``127.0.0.1:9092``:
``eventray kafka up`` starts one) and an embedded Ray (or the cluster at ``--address``), every topic under a
fresh prefix; places ``--orders`` orders (a few twice, as a producer's resend), each with its own trace context;
waits until every saga has ended; stops the four pipelines; then checks every saga against the independent
sequential simulator (:mod:`pipelines.verify.saga_check`) and prints what ended how, sagas/s and the completion
latency. Exit 0 when the check found nothing wrong, 1 otherwise. The tests and ``benchmarks/sagas.py`` use
:class:`SagaRun` the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from actors.kafka.admin import end_offsets, ensure_topic, read_topic
from cluster.control.ray_runtime import connect
from cluster.control.run_report import RunProgress, RunSummary
from cluster.control.runner import run_pipeline
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.order_saga import Inventory, Payments, Shipping, order_decider, order_saga, order_starts
from pipelines.examples.order_saga_configs import SagaTopics, order_saga_on_kafka
from pipelines.io.trace_context import format_traceparent
from pipelines.sagas.contract import SAGA_STARTED, TERMINAL_STATUSES
from pipelines.verify.saga_check import SagaReport, check_sagas, percentile

__all__ = ["COMMAND_TOPICS", "Pipelines", "SagaRun", "main", "saga_run"]

PARTITIONS = {"orders-placed": 4, "order-saga-replies": 4, "order-saga-events": 4, "order-saga-effects": 2,
              "inventory-commands": 2, "payment-commands": 2, "shipping-commands": 2, "order-saga-stuck": 1,
              "order-saga.dead-letter": 1}  # fmt: skip
START_TIME_MS = 1_767_225_600_000
COMMAND_TOPICS = ("inventory-commands", "payment-commands", "shipping-commands")


@dataclass
class SagaRun:
    """The four configs of one run, its topics and the orders it places."""

    configs: dict[str, PipelineConfig]
    topics: SagaTopics
    bootstrap: str
    starts: list[dict[str, Any]]
    options: dict[str, Any]
    timeout_ms: int

    @property
    def saga_ids(self) -> set[str]:
        return {start["saga_id"] for start in self.starts}

    @property
    def connection(self) -> KafkaConnectionConfig:
        return KafkaConnectionConfig(bootstrap_servers=self.bootstrap)

    def place_orders(self) -> None:
        """Produce the orders, keyed by saga id, each order (a resend too) with a trace context of its own
        (as the service that placed it would send it), idempotently, acks from all replicas."""

        async def produce() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                        linger_ms=5)  # fmt: skip
            await producer.start()
            try:
                for start in self.starts:
                    trace = format_traceparent(secrets.randbits(128) | 1, secrets.randbits(64) | 1, sampled=True)
                    value = msgspec.json.encode({k: v for k, v in start.items() if not k.startswith("_")})
                    await producer.send(self.topics["orders-placed"], value, key=start["saga_id"].encode(),
                                        headers=[("traceparent", trace.encode())])  # fmt: skip
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(produce())

    def rows(self, topic: str) -> list[dict[str, Any]]:
        """The committed rows of ``topic`` (as the configs name it), each with its ``_traceparent`` header."""
        if not sum(asyncio.run(end_offsets(self.connection, self.topics[topic])).values()):
            return []  # nothing yet (a consumer stopped right after it started can raise CancelledError)
        records = asyncio.run(read_topic(self.connection, self.topics[topic], idle_s=1.0))
        rows = []
        for record in records:
            row = json.loads(record.value)
            headers = dict(record.headers or ())
            row["_traceparent"] = headers["traceparent"].decode() if "traceparent" in headers else None
            rows.append(row)
        return rows

    def ended(self) -> tuple[set[str], list[dict[str, Any]]]:
        """The sagas whose newest lifecycle event is terminal, and the events."""
        events = self.rows("order-saga-events")
        newest: dict[str, dict[str, Any]] = {}
        for event in events:
            held = newest.get(event["saga_id"])
            if held is None or event["sequence"] > held["sequence"]:
                newest[event["saga_id"]] = event
        return {saga for saga, event in newest.items() if event["status"] in TERMINAL_STATUSES}, events

    def wait_until_every_saga_ended(self, patient_s: float, progress: Callable[[int], None] | None = None,
                                    ) -> list[dict[str, Any]]:  # fmt: skip
        """Poll the events topic until every saga placed has a terminal status; return its events. Raises
        ``TimeoutError`` naming the sagas still open after ``patient_s``."""
        deadline = time.monotonic() + patient_s
        while True:
            ended, events = self.ended()
            if progress is not None:
                progress(len(ended & self.saga_ids))
            if self.saga_ids <= ended:
                return events
            if time.monotonic() > deadline:
                still = sorted(self.saga_ids - ended)
                raise TimeoutError(f"{len(still)} of {len(self.saga_ids)} sagas had not ended after {patient_s} s, "
                                   f"e.g. {still[:5]}")  # fmt: skip
            time.sleep(2.0)

    def check(self, events: list[dict[str, Any]]) -> SagaReport:
        """The run judged by the sequential simulator, with the participants' decisions under this run's options;
        every timeout against the command it was of (sent, and its deadline that send time plus the timeout)."""
        options = {k: v for k, v in self.options.items() if k != "effects_topic"}
        decide = order_decider([Inventory(**options), Payments(**options), Shipping(**options)])
        effects = [row for row in self.rows("order-saga-effects") if row.get("kind") == "effect"]
        commands = [row for topic in COMMAND_TOPICS for row in self.rows(topic)]
        return check_sagas(order_saga(self.timeout_ms), decide, events, effects, expected_sagas=self.saga_ids,
                           commands=commands)  # fmt: skip


def saga_run(prefix: str, bootstrap: str, work_dir: Path, orders: int, options: dict[str, Any], timeout_ms: int,
             seed: int = 3, duplicate_fraction: float = 0.03) -> SagaRun:  # fmt: skip
    """The four configs under ``prefix`` (participants with ``options``, steps waiting ``timeout_ms``), their
    topics made, and ``orders`` orders to place (``duplicate_fraction`` of them twice)."""
    data, topics = order_saga_on_kafka(prefix, bootstrap, work_dir, options)
    data["order-saga"]["keyed"]["options"] = {"timeout_ms": timeout_ms}
    connection = KafkaConnectionConfig(bootstrap_servers=bootstrap)
    for name, partitions in PARTITIONS.items():
        asyncio.run(ensure_topic(connection, topics[name], partitions))
    configs = {name: parse_config(config) for name, config in data.items()}
    starts = order_starts(orders, seed=seed, start_time_ms=START_TIME_MS, step_ms=50,
                          duplicate_fraction=duplicate_fraction)  # fmt: skip
    return SagaRun(configs, topics, bootstrap, starts, options, timeout_ms)


@dataclass(eq=False)
class Pipelines:
    """The run's pipelines, each run from a thread of this driver until :meth:`stop` (a drain, as Ctrl-C)."""

    configs: Sequence[PipelineConfig]
    address: str | None = None
    summaries: dict[str, RunSummary] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self.configs]

    def __enter__(self) -> Pipelines:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, config: PipelineConfig) -> None:
        try:
            self.summaries[config.name] = run_pipeline(config, address=self.address, stop_when=self._stopped)
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.errors[config.name] = error

    def _stopped(self, _: RunProgress) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Drain every pipeline and wait for them; raise ``RuntimeError`` naming the ones that failed."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)
        stuck = [c.name for c, t in zip(self.configs, self._threads, strict=True) if t.is_alive()]
        if stuck or self.errors:
            raise RuntimeError(f"pipelines still running 180 s after the stop: {stuck}; failed: {self.errors}")


@dataclass(frozen=True)
class Figures:
    """Sagas per second (from the first start to the last end, processing time) and completion latency."""

    sagas: int
    seconds: float
    sagas_per_s: float
    p50_ms: int
    p99_ms: int
    by_status: dict[str, int]

    @classmethod
    def of(cls, events: list[dict[str, Any]], report: SagaReport) -> Figures:
        started = {e["saga_id"]: e["time_ms"] for e in events if e["message_type"] == SAGA_STARTED}
        ended: dict[str, int] = {}
        for event in events:
            if event["status"] in TERMINAL_STATUSES and event["kind"] == "event":
                ended[event["saga_id"]] = max(ended.get(event["saga_id"], 0), event["time_ms"])
        took = sorted(ended[s] - started[s] for s in ended if s in started)
        seconds = (max(ended.values()) - min(started.values())) / 1000 if ended and started else 0.0
        return cls(
            sagas=len(took), seconds=round(seconds, 2),
            sagas_per_s=round(len(took) / seconds, 1) if seconds else 0.0,
            p50_ms=percentile(took, 0.5) if took else 0, p99_ms=percentile(took, 0.99) if took else 0,
            by_status=report.by_status,
        )  # fmt: skip


def run_order_sagas(args: argparse.Namespace, work_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """One run as ``main`` describes it; its figures, the check's findings and what the simulator counted."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    options = {"failure_rate": args.failure_rate, "silent_rate": args.silent_rate,
               "compensation_failure_rate": args.compensation_failure_rate, "seed": args.seed}  # fmt: skip
    run = saga_run(f"order-saga-{uuid.uuid4().hex[:6]}", bootstrap, work_dir, args.orders, options, args.timeout_ms)
    # an embedded Ray of 8 logical CPUs: the four pipelines' actors reserve 2.5 between them (0.25 each)
    connect(args.address, num_cpus=8 if args.address is None else None)
    say(f"{len(run.saga_ids):,} orders to {run.topics['orders-placed']} on {bootstrap}; 4 pipelines starting")
    with Pipelines(list(run.configs.values()), args.address):
        run.place_orders()
        events = run.wait_until_every_saga_ended(args.patient_s, lambda n: say(f"{n:,} sagas ended"))
    report = run.check(events)
    figures = Figures.of(events, report)
    return {"figures": figures.__dict__, "failures": report.failures(), "stuck": list(report.stuck.examples),
            "timeouts": report.lateness.timeouts, "timer_late_p99_ms": report.lateness.p99_ms}  # fmt: skip


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.examples.order_saga", description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000, help="orders to place (default 1000)")
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: an embedded Ray)")
    parser.add_argument("--failure-rate", type=float, default=0.1, help="share of commands a participant fails")
    parser.add_argument("--silent-rate", type=float, default=0.02, help="share of commands left without a reply")
    parser.add_argument("--compensation-failure-rate", type=float, default=0.05, help="share of compensations failed")
    parser.add_argument("--seed", type=int, default=0, help="the participants' decisions (same seed: same run)")
    parser.add_argument("--timeout-ms", type=int, default=10_000, help="how long a step waits for its reply")
    parser.add_argument("--patient-s", type=float, default=900, help="give up when sagas are still open after this")
    parser.add_argument("--work-dir", type=Path, default=None, help="checkpoints here (default: a temporary dir)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="order-saga-") as temporary:
        work_dir = args.work_dir or Path(temporary)
        result = run_order_sagas(args, work_dir, lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        figures = result["figures"]
        print(f"{figures['sagas']:,} sagas ended: {figures['by_status']}; {figures['sagas_per_s']} sagas/s over "
              f"{figures['seconds']} s; completion p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")  # fmt: skip
        print("check: " + ("every saga as the simulator decides, no side effect twice" if not result["failures"]
                           else "; ".join(result["failures"])))  # fmt: skip
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
