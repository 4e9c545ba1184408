"""``eventray schema docs``: the event contracts of a set of pipeline configs as Markdown.

One section per topic: who writes it and who reads it (pipeline, config file, field), the subject and the
compatibility mode it is registered under, and its fields, from the reader or writer schema (with types,
defaults, aliases and docs) or, for JSON, from ``fields``. The registry, when given, adds the versions it
holds; without it the document is made from the configs alone.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.schemas.contracts import Contracts, Reader, Writer
from pipelines.schemas.resolution import AvroSchema, full_name, reader_records

__all__ = ["SubjectFacts", "contracts_markdown"]

#: subject -> (versions registered, compatibility mode), as a registry told them
SubjectFacts = dict[str, tuple[list[int], str]]


def contracts_markdown(contracts: Contracts, registry: SubjectFacts | None = None) -> str:
    lines = ["# Event contracts", ""]
    lines += [
        f"{len(contracts.topics)} topics, {len(contracts.writers)} writers, {len(contracts.readers)} readers.",
        "",
    ]
    for topic in contracts.topics:
        lines += _topic_section(topic, contracts.writers_of(topic), contracts.readers_of(topic), registry)
    return "\n".join(lines).rstrip() + "\n"


def _topic_section(topic: str, writers: list[Writer], readers: list[Reader], facts: SubjectFacts | None) -> list[str]:
    lines = [f"## `{topic}`", ""]
    for writer in writers:
        form = "Avro" if writer.schema is not None else "JSON"
        subject = writer.subject(topic)
        registered = f", subject `{subject}`{_facts(subject, facts)}" if subject else ""
        lines.append(f"- **written by** `{writer.pipeline}` ({writer.config_path}, {writer.where}): {form}{registered}")
    for reader in readers:
        subjects = reader.subjects(topic)
        form = reader.format.replace("avro", "Avro").replace("json", "JSON").replace("raw", "raw bytes")
        if reader.registry is not None:
            form += ", Confluent wire format"
        named = ", ".join(f"`{s}`{_facts(s, facts)}" for s in subjects)
        lines.append(
            f"- **read by** `{reader.pipeline}` ({reader.config_path}, {reader.where}): {form}"
            + (f", subjects {named}" if named else "")
        )
    if not writers:
        lines.append("- written outside these configs")
    lines.append("")
    schemas: list[tuple[str, AvroSchema]] = [(f"writer of `{w.pipeline}`", w.schema) for w in writers if w.schema]
    schemas += [(f"reader of `{r.pipeline}`", r.schema) for r in readers if r.schema is not None]
    for label, schema in schemas:
        for record in reader_records(schema):
            lines += [f"### {full_name(record)} ({label})", ""]
            if record.get("doc"):
                lines += [str(record["doc"]), ""]
            lines += ["| field | type | default | aliases | doc |", "|---|---|---|---|---|"]
            lines += [_field_row(field) for field in record["fields"]]
            lines.append("")
    for reader in readers:
        if reader.schema is None:
            lines += [f"### fields of `{reader.pipeline}` {reader.where}", "", "| field | type |", "|---|---|"]
            lines += [f"| `{name}` | {kind} |" for name, kind in reader.fields.items()]
            lines.append("")
    return lines


def _facts(subject: str | None, facts: SubjectFacts | None) -> str:
    if subject is None or facts is None or subject not in facts:
        return ""
    versions, mode = facts[subject]
    return f" (versions {versions or 'none'}, {mode})"


def _field_row(field: dict[str, Any]) -> str:
    default = json.dumps(field["default"]) if "default" in field else ""
    aliases = ", ".join(field.get("aliases", []))
    doc = str(field.get("doc", "")).replace("|", "\\|")
    return f"| `{field['name']}` | {_type_text(field['type'])} | {default} | {aliases} | {doc} |"


def _type_text(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " \\| ".join(_type_text(branch) for branch in avro_type)
    if not isinstance(avro_type, dict):
        return str(avro_type)
    kind = avro_type.get("type")
    if avro_type.get("logicalType"):
        return f"{kind} ({avro_type['logicalType']})"
    inner = {"array": "items", "map": "values"}.get(str(kind))
    if inner is not None:
        return f"{kind}<{_type_text(avro_type[inner])}>"
    if kind in ("record", "enum", "fixed"):
        return f"{kind} {avro_type.get('name')}"
    return str(kind)
