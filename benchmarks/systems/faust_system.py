"""Faust (faust-streaming): the workloads as an agent, written the way its documentation shows, with one
deliberate exception for W1's window closing.

W1: ``stream.filter(OrderCreated).group_by(customer_id)`` (Faust re-keys through a repartition topic) into a
changelogged ``Table`` of ``[count, sum]`` per (customer, window start); closed windows are sent to the output
topic. Faust's own windowed tables (``Table.tumbling(...)`` with ``on_window_close``) close windows on
*wall-clock* time (``faust/tables/base.py`` ``_del_old_keys`` calls ``window.stale(ts, time.time())``), which
closes every window of a replayed topic at once with partial values, so the window start is computed in the
agent and windows are closed on an event-time watermark there: the minimum over the repartition partitions of
the newest event time, minus 1 s. That watermark is not aligned over the *input* partitions (the repartition
topic mixes them), so events can arrive after their window closed: they are counted as late and dropped. At the
end of the input every open window is emitted, as eventray does.

W2: ``async for`` over the input, filter and enrich in the agent, ``send`` to the output topic.

The agent stops the worker once every ``OrderCreated`` event is processed and the producer is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import faust

from benchmarks.protocol import ChildReport, RunSpec
from benchmarks.workloads import ALLOWED_DISORDER_MS, PARTITIONS, WINDOW_MS, enrich, window_record

__all__ = ["run"]

_NO_TIME = -(1 << 62)


class _EventTimeWindows:
    """Open windows by start, and the watermark over the partitions of the stream the agent reads."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.open: dict[int, list[str]] = {}
        self.newest = [_NO_TIME] * PARTITIONS
        self.watermark_ms = _NO_TIME
        self.late = 0

    def add(self, partition: int, value: dict[str, Any]) -> None:
        event_time = int(value["event_time_ms"])
        self.newest[partition] = max(self.newest[partition], event_time)
        start = event_time - event_time % WINDOW_MS
        if start + WINDOW_MS <= self.watermark_ms:
            self.late += 1
            return
        key = f"{value['customer_id']}|{start}"
        totals = self.table.get(key)
        if totals is None:
            self.open.setdefault(start, []).append(key)
            totals = [0, 0]
        self.table[key] = [totals[0] + 1, totals[1] + int(value["amount_cents"])]

    def closed(self, flush: bool = False) -> list[tuple[str, int, int, int]]:
        if not flush:
            lowest = min(self.newest)
            if lowest == _NO_TIME or lowest - ALLOWED_DISORDER_MS <= self.watermark_ms:
                return []
            self.watermark_ms = lowest - ALLOWED_DISORDER_MS
        starts = sorted(start for start in self.open if flush or start + WINDOW_MS <= self.watermark_ms)
        windows = []
        for start in starts:
            for key in self.open.pop(start):
                count, total = self.table.pop(key)
                windows.append((key.split("|", 1)[0], start, count, total))
        return windows


def _app(spec: RunSpec) -> faust.App:
    assert spec.bootstrap is not None
    return faust.App(
        f"bench-faust-{spec.workload.lower()}-{time.time_ns()}",
        broker=f"kafka://{spec.bootstrap}",
        store="memory://",
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.005,  # as eventray's sink and librdkafka (Faust's default, 0, sends a request per record)
        datadir=f"{spec.work_dir}/faust",
    )


def run(spec: RunSpec, report: ChildReport) -> None:
    assert spec.input_topic is not None and spec.output_topic is not None
    app = _app(spec)
    source = app.topic(spec.input_topic, value_serializer="json", key_serializer="raw")
    output = app.topic(spec.output_topic, value_serializer="json", key_serializer="raw")
    # override_logging=False: with it, mode's Worker leaves the root logger at DEBUG whatever loglevel says
    # (faust-streaming 0.15.3, mode-streaming 0.7.1), and debug records cost ~10 % of the run
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False, override_logging=False)

    @app.on_partitions_assigned.connect
    async def on_assigned(*_: Any, **__: Any) -> None:
        if not report.ready_s:
            report.ready_s = time.time()
            spec.signal_ready()

    def is_order(value: dict[str, Any]) -> bool:
        report.events_in += 1
        report.first_event_s = report.first_event_s or time.time()
        return bool(value["event_type"] == "OrderCreated")

    async def finish(extra: dict[str, Any]) -> None:
        await app.producer.flush()
        report.done_s = time.time()
        report.extra.update(extra)
        asyncio.ensure_future(worker.stop())  # noqa: RUF006 - the worker's stop ends this process's loop

    if spec.workload == "W1":
        windows = _EventTimeWindows(app.Table("order-windows", partitions=PARTITIONS, key_type=str, value_type=list))

        async def send_windows(closed: list[tuple[str, int, int, int]]) -> None:
            report.outputs += len(closed)
            for customer, start, count, total in closed:
                await output.send(key=customer.encode(), value=window_record(customer, start, count, total))

        @app.agent(source)
        async def aggregate(stream: Any) -> None:
            orders = 0
            grouped = stream.filter(is_order).group_by(lambda v: v["customer_id"], name="customer")
            async for value in grouped:
                windows.add(grouped.current_event.message.partition, value)
                await send_windows(windows.closed())
                orders += 1
                if orders == spec.order_events:
                    await send_windows(windows.closed(flush=True))
                    await finish({"late_events": windows.late, "orders_processed": orders})
    else:

        @app.agent(source)
        async def enrich_orders(stream: Any) -> None:
            async for value in stream:
                if not is_order(value):
                    continue
                enriched = enrich(value)
                await output.send(key=str(enriched["customer_id"]).encode(), value=enriched)
                report.outputs += 1
                if report.outputs == spec.order_events:
                    await finish({})

    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    if not report.done_s:
        raise RuntimeError("the Faust worker stopped before it had processed every order")
    if report.extra.get("late_events"):
        report.notes.append(f"{report.extra['late_events']} late events dropped")
