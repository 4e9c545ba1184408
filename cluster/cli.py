"""The `eventray` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from cluster.commands.run_config import load_run_config, parse_set
from pipelines.config.pipeline import PipelineConfig, load_config
from pipelines.errors import ConfigError, EventrayError

__all__ = ["main"]


def _run(args: argparse.Namespace) -> int:
    from cluster.commands.console import ProgressView, print_summary  # noqa: PLC0415 - keep `--help` fast
    from cluster.commands.schema import gate_before_start  # noqa: PLC0415
    from cluster.control.runner import run_pipeline  # noqa: PLC0415
    from pipelines.config.secrets import resolve_secrets  # noqa: PLC0415

    config = load_run_config(args)
    resolve_secrets(config, os.environ)  # a missing secret fails before anything starts (the runner reads them)
    if not args.skip_schema_check:
        gate_before_start(config, args.config)
    if args.json:  # for scripts: nothing on stdout but the summary
        from cluster.control.run_report import summary_json  # noqa: PLC0415

        print(summary_json(run_pipeline(config, args.address)))
        return 0
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)  # logs and pipes: wide enough for the results table
    where = f"Ray cluster at {args.address}" if args.address else "an embedded Ray"
    console.print(f"Running [bold]{config.name}[/] ({args.config}) on {where}. Ctrl-C stops cleanly.")
    with ProgressView(console) as view:
        summary = run_pipeline(config, args.address, on_progress=None if args.quiet else view.update)
    print_summary(console, summary)
    _print_trace_hint(console, config)
    return 0


def _print_trace_hint(console: Console, config: PipelineConfig) -> None:
    """Name one recorded trace, so a new user sees where tracing went."""
    tracing = config.tracing
    if not (tracing.enabled and tracing.exporter == "jsonl"):
        return
    for spans in sorted(Path(tracing.jsonl_path).glob("spans-*.jsonl")):
        with spans.open(encoding="utf-8") as lines:
            first = lines.readline()
        if first:
            trace_id = yaml.safe_load(first)["trace_id"]
            console.print(
                f"  traces in        {tracing.jsonl_path}  (try: eventray trace {trace_id} --dir {tracing.jsonl_path})"
            )
            return


def _validate(args: argparse.Namespace) -> int:
    config = load_run_config(args)
    print(f"{args.config}: valid pipeline {config.name!r}")
    return 0


def _produce(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from cluster.commands.produce import produce_events  # noqa: PLC0415
    from pipelines.config.kafka import KafkaConnectionConfig, resolve_kafka_secrets  # noqa: PLC0415
    from pipelines.config.pipeline import GeneratorSourceConfig  # noqa: PLC0415

    connection = resolve_kafka_secrets(KafkaConnectionConfig(bootstrap_servers=args.bootstrap), os.environ)
    generator = GeneratorSourceConfig(
        partitions=args.partitions, seed=args.seed, invalid_fraction=args.invalid_fraction, rate_per_s=None
    )
    console = Console()
    console.print(f"Producing {args.events:,} events to {args.topic} at {connection.bootstrap_servers} ...")
    step = max(1, args.events // 10)

    def report(sent: int) -> None:
        if sent % step < 2_000:
            console.print(f"  {sent:,} sent")

    result = asyncio.run(
        produce_events(connection, args.topic, args.events, generator, args.rate or None, on_progress=report)
    )
    console.print(
        f"{result.events:,} events ({result.invalid:,} invalid on purpose) in {result.elapsed_s:.1f} s: "
        f"{result.events_per_s:,.0f} events/s, all acknowledged"
    )
    return 0


def _add_produce(commands: Any) -> None:
    produce = commands.add_parser("produce", help="write generated business events into a Kafka topic")
    produce.add_argument("--topic", required=True)
    produce.add_argument("--events", type=int, required=True, help="how many events in total")
    produce.add_argument("--rate", type=float, default=0, help="events/s (0: as fast as the broker takes them)")
    produce.add_argument("--partitions", type=int, default=8, help="generator partitions (and new topic's)")
    produce.add_argument("--seed", type=int, default=42)
    produce.add_argument("--invalid-fraction", type=float, default=0.01)
    produce.add_argument("--bootstrap", default=None, help="default: $KAFKA_BOOTSTRAP, else 127.0.0.1:9092")
    produce.set_defaults(func=_produce)


def _trace(args: argparse.Namespace) -> int:
    from cluster.commands.trace_view import load_trace, trace_tree  # noqa: PLC0415

    spans = load_trace(Path(args.dir), args.trace_id)
    if not spans:
        print(f"no spans of trace {args.trace_id} in {args.dir} (was it sampled?)", file=sys.stderr)
        return 1
    Console().print(trace_tree(args.trace_id, spans))
    return 0


def _add_trace(commands: Any) -> None:
    trace = commands.add_parser("trace", help="print an event's path (spans across actors and pipelines)")
    trace.add_argument("trace_id", help="32 hex digits, as in the traceparent header")
    trace.add_argument("--dir", default="out/traces", help="the JSONL span exporter's directory")
    trace.set_defaults(func=_trace)


def _verify(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    import json  # noqa: PLC0415

    from cluster.commands.verify import (  # noqa: PLC0415
        EndOffsets,
        budget_end_offsets,
        delivery_of,
        fixed_end_offsets,
        print_report,
        report_dict,
        verify_run,
    )

    overrides = parse_set(args.set)
    if args.max_events is not None:
        overrides["runtime.max_events"] = args.max_events
    config = load_config(args.config, overrides)
    end_offsets: EndOffsets = budget_end_offsets
    if args.end_offsets_from is not None:
        try:
            loaded = json.loads(Path(args.end_offsets_from).read_text(encoding="utf-8"))
            end_offsets = fixed_end_offsets({int(p): int(end) for p, end in loaded.items()})
        except (OSError, ValueError, AttributeError) as error:
            raise ConfigError(
                f"--end-offsets-from {args.end_offsets_from}: expected a JSON object {{partition: end offset}} "
                f"({error})"
            ) from None
    report = asyncio.run(verify_run(config, end_offsets, start_time_ms=args.start_time_ms))
    delivery = delivery_of(config)
    if args.json:
        print(json.dumps(report_dict(report, delivery), indent=2))
    else:
        print_report(Console(), report, delivery)
    return 0 if report.ok_for(delivery) else 1


def _add_verify(commands: Any) -> None:
    verify = commands.add_parser(
        "verify", help="check a finished run: lost, duplicated, out-of-order, aborted-read events; windows"
    )
    verify.add_argument("config", help="the pipeline config the run used")
    verify.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="the overrides the run used")
    verify.add_argument("--max-events", type=int, default=None, help="the event budget the run used")
    verify.add_argument(
        "--end-offsets-from", default=None, metavar="PATH", help="JSON {partition: end offset} of the input read"
    )
    verify.add_argument(
        "--start-time-ms", type=int, default=None, help="generator event time of offset 0, if the run chose it"
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_verify)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="pipeline config (YAML), e.g. configs/orders.yaml")
    parser.add_argument("--max-events", type=int, default=None, help="stop after this many events in total")
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="stop reading new input after this many seconds (0: never)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config field (a YAML value), e.g. --set source.rate_per_s=null",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventray", description="Event-driven pipelines on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a pipeline until its input ends, its duration passes, or Ctrl-C")
    _add_run_options(run)
    run.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default: embedded Ray")
    run.add_argument("--quiet", action="store_true", help="no live progress line")
    run.add_argument("--json", action="store_true", help="print only the run's summary, as JSON (for scripts)")
    run.add_argument(
        "--skip-schema-check",
        action="store_true",
        help="start without `eventray schema check` (run first for a config that uses a schema registry)",
    )
    run.set_defaults(func=_run)
    validate = commands.add_parser("validate", help="check a pipeline config without running it")
    _add_run_options(validate)
    validate.set_defaults(func=_validate)
    _add_produce(commands)
    _add_trace(commands)
    _add_verify(commands)
    _add_optional_commands(commands)
    return parser


def _add_optional_commands(commands: Any) -> None:
    from cluster.commands.acls import add_acls_command  # noqa: PLC0415
    from cluster.commands.cqrs import add_cqrs_commands  # noqa: PLC0415
    from cluster.commands.dead_letters import add_dead_letters_command  # noqa: PLC0415
    from cluster.commands.demo import add_demo_commands  # noqa: PLC0415
    from cluster.commands.event_store import add_event_store_commands  # noqa: PLC0415
    from cluster.commands.lag import add_lag_command  # noqa: PLC0415
    from cluster.commands.saga import add_saga_commands  # noqa: PLC0415
    from cluster.commands.schema import add_schema_commands  # noqa: PLC0415
    from cluster.k8s.cli import add_k8s_commands  # noqa: PLC0415
    from cluster.kafka_dev.cli import add_kafka_commands  # noqa: PLC0415
    from cluster.schema_registry.cli import add_registry_commands  # noqa: PLC0415

    add_kafka_commands(commands)
    add_registry_commands(commands)
    add_k8s_commands(commands)
    add_demo_commands(commands)
    add_lag_command(commands)
    add_acls_command(commands)
    add_dead_letters_command(commands)
    add_event_store_commands(commands)
    add_cqrs_commands(commands)
    add_saga_commands(commands)
    add_schema_commands(commands)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except EventrayError as error:
        print(f"eventray: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
