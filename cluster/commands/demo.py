"""``eventray demo autoscale``: a burst of input, the lag it causes, the actors the policy adds and removes.

Runs configs/autoscale_demo.yaml (the orders pipeline on the generator with a 5x burst) with a live table of
input rate, lag, actors and Ray nodes; then writes a PNG of rate, lag and actors over time and prints a
summary: burst start to first scale-up decision, time to drain, peak lag, rescales and scale-downs, beside
KEDA's defaults. ``--kafka`` feeds the same profile through a Kafka topic with ``eventray produce`` bursts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from cluster.control.autoscaler import AutoscalePoint, Rescale
from cluster.control.run_report import RunProgress, RunSummary
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, load_config

__all__ = ["DemoReport", "add_demo_commands", "demo_report", "plot_timeline"]

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "autoscale_demo.yaml"
KEDA_POLLING_S = 30
KEDA_COOLDOWN_S = 300


@dataclass(frozen=True)
class DemoReport:
    burst_start_s: float
    burst_end_s: float
    first_scale_up_after_s: float | None  # from the burst start to the first tick that decided more actors
    drained_after_s: float | None  # from the burst end until lag is back at or below the activation lag
    peak_lag_records: int
    rescales: int
    scale_ups: int
    scale_downs: int


def demo_report(
    timeline: list[AutoscalePoint], rescales: list[Rescale], start_s: float, end_s: float, activation: int
) -> DemoReport:
    """What the demo shows, from the run's autoscaling timeline (pure)."""
    up = next(
        (p for p in timeline if p.at_s >= start_s and (p.desired_sources > p.source_actors or
                                                      p.desired_aggregates > p.aggregate_actors)),
        None,
    )  # fmt: skip
    drained = next((p for p in timeline if p.at_s >= end_s and p.lag_records <= activation), None)
    downs = sum(1 for r in rescales if r.sources[1] < r.sources[0] or r.aggregates[1] < r.aggregates[0])
    return DemoReport(
        burst_start_s=start_s,
        burst_end_s=end_s,
        first_scale_up_after_s=None if up is None else up.at_s - start_s,
        drained_after_s=None if drained is None else drained.at_s - end_s,
        peak_lag_records=max((p.lag_records for p in timeline), default=0),
        rescales=len(rescales),
        scale_ups=len(rescales) - downs,
        scale_downs=downs,
    )


def plot_timeline(
    timeline: list[AutoscalePoint], rescales: list[Rescale], burst: tuple[float, float], path: Path
) -> Path:
    """Input rate, lag and actors over time, the burst shaded and each rescale marked; written as a PNG."""
    import matplotlib  # noqa: PLC0415 - only the demo draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    seconds = [p.at_s for p in timeline]
    figure, (rate, lag, actors) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    rate.plot(seconds, [p.input_rate_per_s or 0 for p in timeline], color="tab:blue")
    rate.set_ylabel("input events/s")
    lag.plot(seconds, [p.lag_records for p in timeline], color="tab:red")
    lag.set_ylabel("lag (records)")
    actors.step(seconds, [p.source_actors for p in timeline], where="post", label="source actors")
    actors.step(seconds, [p.aggregate_actors for p in timeline], where="post", label="aggregate actors")
    actors.step(seconds, [p.desired_sources for p in timeline], where="post", linestyle="--", label="desired sources")
    actors.step(seconds, [p.nodes for p in timeline], where="post", linestyle=":", label="Ray nodes")
    actors.set_ylabel("count")
    actors.set_xlabel("seconds since start")
    actors.legend(loc="upper right", fontsize="small")
    for axis in (rate, lag, actors):
        axis.axvspan(*burst, color="orange", alpha=0.15)
        for rescale in rescales:
            axis.axvline(rescale.at_s, color="grey", linewidth=0.8, linestyle=":")
        axis.grid(alpha=0.3)
    rate.set_title("eventray: lag-driven autoscaling (burst shaded, rescales dotted)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


class AutoscaleView:
    """A live table of the latest ticks (terminal), a plain line per tick elsewhere."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live: Live | None = None
        self._shown: AutoscalePoint | None = None
        self._rows: list[AutoscalePoint] = []

    def __enter__(self) -> AutoscaleView:
        if self._console.is_terminal:
            self._live = Live(self._table(), console=self._console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, progress: RunProgress) -> None:
        point = progress.autoscale
        if point is None or point == self._shown:
            return
        self._shown = point
        self._rows = [*self._rows, point][-12:]
        if self._live is not None:
            self._live.update(self._table())
        else:
            self._console.print(_line(point))

    def _table(self) -> Table:
        table = Table(title="eventray demo autoscale (Ctrl-C stops)")
        for column in ("t (s)", "input/s", "lag", "lag s", "sources", "aggregates", "nodes", "decision"):
            table.add_column(column, justify="right" if column != "decision" else "left")
        for p in self._rows:
            table.add_row(
                f"{p.at_s:.0f}", f"{p.input_rate_per_s or 0:,.0f}", f"{p.lag_records:,}",
                "-" if p.lag_s is None else f"{p.lag_s:.1f}", f"{p.source_actors} -> {p.desired_sources}",
                f"{p.aggregate_actors} -> {p.desired_aggregates}", str(p.nodes), p.reason[:60],
            )  # fmt: skip
        return table


def _line(p: AutoscalePoint) -> str:
    return (
        f"{p.at_s:6.1f}s input {p.input_rate_per_s or 0:>9,.0f}/s lag {p.lag_records:>9,} "
        f"sources {p.source_actors}->{p.desired_sources} aggregates {p.aggregate_actors}->{p.desired_aggregates} "
        f"nodes {p.nodes}  {p.reason}"
    )


def _produce_bursts(bootstrap: str | None, topic: str, source: GeneratorSourceConfig, total_s: float) -> None:
    """Live Kafka input with the generator's burst profile: base rate, the burst, base rate again."""
    from cluster.commands.produce import produce_events  # noqa: PLC0415
    from pipelines.config.kafka import KafkaConnectionConfig, resolve_kafka_secrets  # noqa: PLC0415

    base = source.rate_per_s or 1_000.0
    burst = source.bursts[0]
    phases = [(burst.start_s, base), (burst.duration_s, base * burst.factor),
              (max(0.0, total_s - burst.start_s - burst.duration_s), base)]  # fmt: skip
    connection = resolve_kafka_secrets(KafkaConnectionConfig(bootstrap_servers=bootstrap), os.environ)
    for seed, (seconds, rate) in enumerate(phases, start=1):
        events = int(seconds * rate)
        if events:
            generator = source.model_copy(update={"seed": seed, "bursts": [], "rate_per_s": None})
            asyncio.run(produce_events(connection, topic, events, generator, rate))


def _demo_autoscale(args: argparse.Namespace) -> int:
    from cluster.control.runner import run_pipeline  # noqa: PLC0415

    console = Console()
    config = load_config(args.config, {"runtime.duration_s": args.duration_s})
    source = config.source
    if not isinstance(source, GeneratorSourceConfig) or not source.bursts or config.runtime.autoscale is None:
        console.print("the demo config needs a generator source with bursts and runtime.autoscale")
        return 2
    burst = source.bursts[0]
    producer = None
    if args.kafka:
        config = _on_kafka(config, args.bootstrap)
        producer = threading.Thread(
            target=_produce_bursts, args=(args.bootstrap, config.source.topic, source, args.duration_s),  # type: ignore[union-attr]
            daemon=True,
        )  # fmt: skip
        producer.start()
    console.print(
        f"Autoscaling demo: base {source.rate_per_s:,.0f} events/s, {burst.factor:g}x from {burst.start_s:g} s for "
        f"{burst.duration_s:g} s, {args.duration_s:g} s in all ({'Kafka' if args.kafka else 'embedded generator'})."
    )
    with AutoscaleView(console) as view:
        summary = run_pipeline(config, args.address, on_progress=view.update, poll_s=1.0)
    if producer is not None:
        producer.join(timeout=30)
    _print_demo(console, summary, config, (burst.start_s, burst.start_s + burst.duration_s), Path(args.out))
    return 0


def _on_kafka(config: PipelineConfig, bootstrap: str | None) -> PipelineConfig:
    """The demo config reading a new topic (created here, before the Supervisor counts its partitions)."""
    from actors.kafka.admin import ensure_topic  # noqa: PLC0415
    from cluster.control.runner import with_resolved_secrets  # noqa: PLC0415

    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True)
    topic = f"{config.name}-input-{secrets.token_hex(3)}"
    data["source"] = {"type": "kafka", "topic": topic, "start": "earliest", "group_id": f"eventray-{topic}"}
    data["kafka"] = {"bootstrap_servers": bootstrap} if bootstrap else {}
    kafka_config = PipelineConfig.model_validate(data)
    resolved = with_resolved_secrets(kafka_config).kafka  # the config itself stays as written (runtime.secrets)
    assert resolved is not None
    asyncio.run(ensure_topic(resolved, topic, config.source.partitions))  # type: ignore[union-attr]
    return kafka_config


def _print_demo(console: Console, summary: RunSummary, config: PipelineConfig, burst: tuple[float, float],
                out: Path) -> None:  # fmt: skip
    autoscale = config.runtime.autoscale
    assert autoscale is not None
    report = demo_report(summary.autoscale_timeline, summary.rescales, *burst, autoscale.activation_lag_records)
    png = plot_timeline(summary.autoscale_timeline, summary.rescales, burst, out / "autoscale.png")
    table = Table(title="autoscaling demo: eventray beside KEDA's defaults")
    table.add_column("")
    table.add_column("eventray (this run)", justify="right")
    table.add_column("KEDA default", justify="right")
    seconds = "-" if report.first_scale_up_after_s is None else f"{report.first_scale_up_after_s:.1f} s"
    table.add_row("burst start -> first scale-up decision", seconds,
                  f"up to {KEDA_POLLING_S} s polling + HPA sync")  # fmt: skip
    table.add_row("policy tick", f"{autoscale.interval_s:g} s", f"{KEDA_POLLING_S} s (pollingInterval)")
    table.add_row("scale-down wait", f"{autoscale.scale_down_stabilization_s:g} s stabilisation",
                  f"{KEDA_COOLDOWN_S} s (cooldownPeriod / HPA window)")  # fmt: skip
    drained = "-" if report.drained_after_s is None else f"{report.drained_after_s:.1f} s after the burst"
    table.add_row("time to drain", drained, "-")
    table.add_row("peak lag", f"{report.peak_lag_records:,} records", "-")
    table.add_row("rescales (up / down)", f"{report.rescales} ({report.scale_ups} / {report.scale_downs})",
                  "each one a consumer-group rebalance")  # fmt: skip
    console.print(table)
    for rescale in summary.rescales:
        where = (
            "through a recovery (an actor failed during it)"
            if rescale.through_recovery
            else "at the checkpoint boundary"
        )
        console.print(
            f"  rescale at {rescale.at_s:.0f} s: sources {rescale.sources[0]}->{rescale.sources[1]}, aggregates "
            f"{rescale.aggregates[0]}->{rescale.aggregates[1]}; moved {rescale.moved_partitions} partitions, "
            f"{rescale.moved_key_groups} key groups; {rescale.duration_s:.1f} s {where}"
        )
    console.print(f"  plot: {png}")


def add_demo_commands(commands: Any) -> None:
    demo = commands.add_parser("demo", help="demonstrations (autoscale)")
    kinds = demo.add_subparsers(dest="demo", required=True)
    autoscale = kinds.add_parser("autoscale", help="a burst, lag-driven scale-out and scale-in, a PNG plot")
    autoscale.add_argument("--config", default=str(DEMO_CONFIG), help="default: configs/autoscale_demo.yaml")
    autoscale.add_argument("--duration-s", type=float, default=150.0, help="length of the run (default 150)")
    autoscale.add_argument("--kafka", action="store_true", help="feed the burst through Kafka (eventray produce)")
    autoscale.add_argument("--bootstrap", default=None, help="with --kafka; default $KAFKA_BOOTSTRAP or 127.0.0.1:9092")
    autoscale.add_argument("--address", default=None, help="a Ray cluster (default: embedded)")
    autoscale.add_argument("--out", default="out/demo", help="where the PNG goes (default out/demo)")
    autoscale.set_defaults(func=_demo_autoscale)
