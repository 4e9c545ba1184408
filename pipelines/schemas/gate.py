"""The deploy-time schema gate: every reader against every writer of its topics, every writer against its
subject's compatibility mode, decided locally (Avro's resolution rules,
:mod:`pipelines.schemas.avro_compatibility`) and by the registry, before anything starts.

What is checked, for the configs given together (the topic graph :func:`~pipelines.schemas.contracts.contracts_of`
builds):

- **readers**: an input's reader schema must read every version registered under each of its topics' subjects
  (transitively: records of every version may still be on the topic), and every writer schema the given
  configs write to its topics (a producer about to deploy). No registry checks readers; eventray knows them.
- **writers**: a sink's writer schema, about to be registered (or already), against the versions before it
  under the subject's mode, locally and by the registry (``/compatibility``); where the two disagree the
  finding says so and the stricter verdict stands.
- **modes**: a subject whose compatibility mode is not the ``schema.registry.compatibility`` a config expects.

Each finding names the config and field, the topic, subject and version, the field path in the schema, the
rule broken, and which side must deploy first (or that the reader itself must change).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from pipelines.config.registry import RegistryConfig
from pipelines.schemas.avro_compatibility import Incompatibility, check_against_versions, check_can_read
from pipelines.schemas.contracts import Contracts, Reader, Writer
from pipelines.schemas.registry_client import RegisteredSchema, RegistryClient, SchemaNotFound
from pipelines.schemas.resolution import AvroSchema, full_name, reader_record_of, reader_records

__all__ = ["Finding", "GateReport", "check_contracts"]

_FIX = {
    "consumers": "deploy the consumers first (the new schema reads old records, old readers cannot read new ones)",
    "producers": "deploy the producers first, and the consumers once no old record is left to read",
    "no_safe_order": "no deploy order is safe: evolve in compatible steps, or use a new subject or topic",
    "reader": "the reader schema must change: records of that version are on the topic and stay there",
    "mode": "set the subject's compatibility (PUT /config/SUBJECT) or the config's schema.registry.compatibility",
}


@dataclass(frozen=True)
class Finding:
    """One reason not to deploy. ``deploy_first``: a key of the fixes above (consumers, producers,
    no_safe_order, reader, mode)."""

    config: str
    where: str
    topic: str
    subject: str | None
    version: int | None
    kind: str
    path: str
    message: str
    deploy_first: str
    decided_by: str = "local"

    def text(self) -> str:
        version = "" if self.version is None else f" version {self.version}"
        subject = "" if self.subject is None else f" subject {self.subject}{version}:"
        return (
            f"{self.config} {self.where}: topic {self.topic}{subject} {self.path}: {self.message} [{self.kind}; "
            f"{self.decided_by}] -> {_FIX[self.deploy_first]}"
        )


@dataclass
class GateReport:
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def as_json(self) -> str:
        return json.dumps(
            {
                "passed": self.passed,
                "findings": [asdict(finding) for finding in self.findings],
                "checked": self.checked,
                "disagreements": self.disagreements,
            },
            indent=2,
        )

    def text(self) -> str:
        lines = [f"checked: {line}" for line in self.checked]
        lines += [f"registry and local checker disagree: {line}" for line in self.disagreements]
        lines += [f"REFUSED {finding.text()}" for finding in self.findings]
        verdict = "schema check passed" if self.passed else f"schema check refused: {len(self.findings)} finding(s)"
        return "\n".join([*lines, verdict])


async def check_contracts(contracts: Contracts) -> GateReport:
    """The gate's verdict on ``contracts`` (each registry asked over its own connection)."""
    report = GateReport()
    clients: dict[str, RegistryClient] = {}
    try:
        for reader in contracts.readers:
            if reader.registry is not None:
                client = await _client(clients, reader.registry)
                await _check_reader(client, reader, contracts, report)
        for writer in contracts.writers:
            if writer.registry is not None and writer.schema is not None:
                client = await _client(clients, writer.registry)
                await _check_writer(client, writer, report)
    finally:
        for client in clients.values():
            await client.close()
    return report


async def _client(clients: dict[str, RegistryClient], config: RegistryConfig) -> RegistryClient:
    client = RegistryClient(config)
    if client.url not in clients:
        clients[client.url] = client.open()
    return clients[client.url]


async def _check_reader(client: RegistryClient, reader: Reader, contracts: Contracts, report: GateReport) -> None:
    assert reader.registry is not None
    expected = reader.registry.compatibility
    for topic in reader.topics:
        for subject in reader.subjects(topic):
            versions = await _versions(client, subject)
            report.checked.append(
                f"{reader.pipeline} {reader.where} reads {topic}: {subject} versions {[v.version for v in versions]}"
            )
            if expected is not None:
                report.findings += _mode_findings(reader, topic, subject, await client.compatibility(subject), expected)
            if reader.schema is None:
                continue
            for version in versions:
                if version.schema_type.upper() != "AVRO":
                    message = f"version {version.version} is a {version.schema_type} schema; this input reads Avro"
                    report.findings.append(
                        Finding(
                            reader.pipeline,
                            reader.where,
                            topic,
                            subject,
                            version.version,
                            "schema_type",
                            "$",
                            message,
                            "reader",
                        )
                    )
                    continue
                for problem in _unreadable(reader.schema, json.loads(version.schema)):
                    report.findings.append(_reader_finding(reader, topic, subject, version.version, problem, "reader"))
        if reader.schema is None:
            continue
        for writer in contracts.writers_of(topic):
            if writer.schema is None:
                continue
            for problem in _unreadable(reader.schema, writer.schema):
                finding = _reader_finding(reader, topic, writer.subject(topic), None, problem, "consumers")
                report.findings.append(
                    Finding(
                        **{
                            **asdict(finding),
                            "message": f"{finding.message} (as {writer.pipeline} {writer.where} writes it)",
                        }
                    )
                )


async def _check_writer(client: RegistryClient, writer: Writer, report: GateReport) -> None:
    assert writer.schema is not None
    text = json.dumps(writer.schema)
    for topic in writer.topics:
        subject = writer.subject(topic)
        assert subject is not None
        versions = await _versions(client, subject)
        registered = next((v for v in versions if _same_schema(v.schema, writer.schema)), None)
        if registered is not None:
            report.checked.append(
                f"{writer.pipeline} {writer.where} writes {topic}: {subject} version {registered.version} (registered)"
            )
            continue
        finding = partial(Finding, writer.pipeline, writer.where, topic, subject)
        mode = await client.compatibility(subject)
        expected = writer.registry.compatibility if writer.registry is not None else None
        report.findings += _mode_findings(writer, topic, subject, mode, expected)
        others = [v for v in versions if v.schema_type.upper() != "AVRO"]
        if others:
            message = f"versions {[v.version for v in others]} are not Avro; an Avro writer cannot follow them"
            report.findings.append(
                finding(
                    None,
                    "schema_type",
                    "$",
                    message,
                    "no_safe_order",
                    "local",
                )
            )
            continue
        local = check_against_versions(writer.schema, [json.loads(v.schema) for v in versions], mode)
        remote_ok = True if not versions else await client.is_compatible(subject, text)
        report.checked.append(f"{writer.pipeline} {writer.where} writes {topic}: new version of {subject} ({mode})")
        if remote_ok == (not local):
            decided = "local and registry"
        else:
            decided = "local" if local else "registry"
            report.disagreements.append(
                f"{writer.pipeline} {writer.where} -> {subject}: local {'refuses' if local else 'accepts'}, registry "
                f"{'accepts' if remote_ok else 'refuses'}"
            )
        for problem in local:
            version = None if problem.existing_version is None else versions[problem.existing_version].version
            report.findings.append(
                finding(
                    version,
                    problem.kind,
                    problem.path,
                    f"{problem.direction}: {problem.message}",
                    problem.deploy_first or "no_safe_order",
                    decided,
                )
            )
        if not remote_ok and not local:
            report.findings.append(
                finding(
                    None,
                    "registry_refused",
                    "$",
                    f"the registry refuses it under {mode}; the local checker finds nothing",
                    "no_safe_order",
                    "registry",
                )
            )


def _mode_findings(side: Reader | Writer, topic: str, subject: str, actual: str, expected: str | None) -> list[Finding]:
    """A finding if the subject's compatibility mode is not the one the config expects (none expected: none)."""
    if expected is None or actual == expected:
        return []
    message = f"the subject's compatibility is {actual}; the config expects {expected}"
    return [Finding(side.pipeline, side.where, topic, subject, None, "mode_mismatch", "$", message, "mode", "registry")]


async def _versions(client: RegistryClient, subject: str) -> list[RegisteredSchema]:
    try:
        numbers = await client.versions(subject)
    except SchemaNotFound:
        return []
    return [await client.version(subject, number) for number in numbers]


def _unreadable(reader: AvroSchema, writer: Any) -> list[Incompatibility]:
    """Why records of ``writer`` cannot be read by ``reader`` (its record of the writer's name)."""
    if not isinstance(writer, dict) or writer.get("type") != "record":
        return [Incompatibility("type_mismatch", "$", "the writer schema is not a record")]
    record = reader_record_of(reader, writer)
    if record is None:
        known = [full_name(r) for r in reader_records(reader)]
        message = f"the writer writes {full_name(writer)}; the reader reads {known}"
        return [Incompatibility("name_mismatch", "$", message)]
    return check_can_read(record, writer)


def _reader_finding(
    reader: Reader, topic: str, subject: str | None, version: int | None, problem: Incompatibility, fix: str
) -> Finding:
    return Finding(
        reader.pipeline, reader.where, topic, subject, version, problem.kind, problem.path, problem.message, fix
    )


def _same_schema(text: str, schema: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(text) == schema)
    except ValueError:
        return False
