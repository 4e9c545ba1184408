"""``eventray schema``: the event contracts of pipeline configs, checked before a deploy, registered, documented.

- ``check CONFIG...``: the deploy-time gate (:mod:`pipelines.schemas.gate`): every reader against every writer
  version of its topics, every writer against its subject's mode, locally and by the registry. Also run by
  ``eventray run`` before anything starts, for a config that reads or writes through a registry.
- ``register CONFIG...``: each Avro sink's writer schema registered under its subjects (the registry checks
  the subject's compatibility): the explicit step that sinks without ``auto_register`` expect.
- ``docs CONFIG... [--out FILE]``: the contracts as Markdown (topics, schemas, writers, readers).

Exit codes: 0 passed / done, 1 the gate refused, 2 bad usage, a config error or a registry that cannot be
reached. ``--json`` prints for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipelines.config.kafka import KafkaSinkConfig
from pipelines.config.pipeline import PipelineConfig, load_config, with_paths_resolved
from pipelines.config.registry import RegistryConfig
from pipelines.errors import ConfigError
from pipelines.schemas.contracts import Contracts, contracts_of
from pipelines.schemas.docs import SubjectFacts, contracts_markdown
from pipelines.schemas.gate import GateReport, check_contracts
from pipelines.schemas.registry_client import RegistryClient, SchemaNotFound
from pipelines.schemas.sink_schemas import register_sink_schema

__all__ = ["add_schema_commands", "gate_before_start", "uses_registry"]

REFUSED = 1


def add_schema_commands(commands: Any) -> None:
    schema = commands.add_parser("schema", help="event contracts: the deploy-time check, registration, docs")
    actions = schema.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="check every reader and writer of the configs' topics against the registry's versions"
    )
    check.add_argument("configs", nargs="+", metavar="CONFIG", help="pipeline configs deployed together")
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.set_defaults(func=_check)
    register = actions.add_parser("register", help="register each Avro sink's writer schema under its subjects")
    register.add_argument("configs", nargs="+", metavar="CONFIG")
    register.add_argument("--json", action="store_true", help="print subject -> id as JSON")
    register.set_defaults(func=_register)
    docs = actions.add_parser("docs", help="the event contracts (topics, schemas, writers, readers) as Markdown")
    docs.add_argument("configs", nargs="+", metavar="CONFIG")
    docs.add_argument("--out", default=None, help="write to this file (default: stdout)")
    docs.add_argument("--offline", action="store_true", help="from the configs alone, without asking the registry")
    docs.set_defaults(func=_docs)


def uses_registry(config: PipelineConfig) -> bool:
    """Whether ``config`` reads or writes through a schema registry (so the gate has something to check)."""
    reads = any(spec.schema.registry is not None for spec in config.all_inputs)
    return reads or any(isinstance(s, KafkaSinkConfig) and s.registry is not None for s in config.sinks)


def gate_before_start(config: PipelineConfig, path: str) -> None:
    """The gate on one config about to run; a ConfigError with every finding if it refuses."""
    if not uses_registry(config):
        return
    report = asyncio.run(check_contracts(contracts_of([(Path(path), config)])))
    if not report.passed:
        findings = "\n  ".join(finding.text() for finding in report.findings)
        raise ConfigError(
            f"the schema check refuses {path} (`eventray schema check {path}` for the full report; "
            f"--skip-schema-check to run anyway):\n  {findings}"
        )


def _loaded(paths: list[str]) -> list[tuple[Path, PipelineConfig]]:
    return [(Path(path), with_paths_resolved(load_config(path), Path.cwd())) for path in paths]


def _check(args: argparse.Namespace) -> int:
    report: GateReport = asyncio.run(check_contracts(contracts_of(_loaded(args.configs))))
    print(report.as_json() if args.json else report.text())
    return 0 if report.passed else REFUSED


def _register(args: argparse.Namespace) -> int:
    registered: dict[str, int] = {}
    for _, config in _loaded(args.configs):
        for sink in config.sinks:
            if isinstance(sink, KafkaSinkConfig) and sink.avro_schema is not None:
                registered |= asyncio.run(register_sink_schema(sink, json.dumps(sink.avro_schema)))
    if args.json:
        print(json.dumps(registered, indent=2))
    elif not registered:
        print("no Avro sink in these configs: nothing to register")
    else:
        for subject, schema_id in registered.items():
            print(f"{subject}: schema id {schema_id}")
    return 0


def _docs(args: argparse.Namespace) -> int:
    contracts = contracts_of(_loaded(args.configs))
    facts = None if args.offline else asyncio.run(_subject_facts(contracts))
    text = contracts_markdown(contracts, facts)
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out} ({len(contracts.topics)} topics)")
    return 0


async def _subject_facts(contracts: Contracts) -> SubjectFacts:
    """Versions and mode of every subject the contracts name, from the registry each names."""
    wanted: dict[str, RegistryConfig] = {}
    for reader in contracts.readers:
        for topic in reader.topics:
            for subject in reader.subjects(topic):
                if reader.registry is not None:
                    wanted[subject] = reader.registry
    for writer in contracts.writers:
        for topic in writer.topics:
            written = writer.subject(topic)
            if written is not None and writer.registry is not None:
                wanted[written] = writer.registry
    facts: SubjectFacts = {}
    for subject, registry in wanted.items():
        async with RegistryClient(registry, os.environ) as client:
            try:
                versions = await client.versions(subject)
            except SchemaNotFound:
                versions = []
            mode = await client.compatibility(subject if versions else None)
            facts[subject] = (versions, mode)
    return facts
