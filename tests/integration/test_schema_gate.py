"""The deploy-time schema gate against a real registry (Apicurio's Confluent-compatible API): the local
checker and the registry agree on the corpus of schema pairs; `eventray schema check` refuses a breaking
writer and a reader that cannot read a registered version, naming the field path, the rule and who deploys
first; `eventray run` refuses the same before Ray starts; `schema register` and `schema docs` work on it."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from cluster.cli import main
from cluster.examples.order_versions import register_versions
from pipelines.config.registry import RegistryConfig
from pipelines.examples.order_versions import READER_FILE, V3
from pipelines.schemas.avro_compatibility import check_can_read
from pipelines.schemas.registry_client import RegistryClient, SchemaRejected

CORPUS = Path(__file__).resolve().parents[1] / "data" / "avro_compatibility_corpus.json"
#: pairs where the registry's verdict differs from Java's SchemaCompatibility (and so from the local checker),
#: each with why; found by test_the_local_checker_and_the_registry_agree_on_the_corpus
KNOWN_DIFFERENCES: dict[str, str] = {}


async def registry_verdicts(url: str, cases: list[dict[str, Any]]) -> dict[str, bool | str]:
    """For each pair: the writer registered under a subject of its own (BACKWARD), then the registry asked
    whether the reader may follow it, i.e. reads the writer's data."""
    verdicts: dict[str, bool | str] = {}
    run = uuid.uuid4().hex[:8]
    async with RegistryClient(RegistryConfig(url=url)) as registry:
        for case in cases:
            subject = f"corpus-{run}-{case['name']}"
            await registry.set_compatibility(subject, "BACKWARD")
            try:
                await registry.register(subject, json.dumps(case["writer"]))
                verdicts[case["name"]] = await registry.is_compatible(subject, json.dumps(case["reader"]))
            except SchemaRejected as error:
                verdicts[case["name"]] = f"refused: {error}"
    return verdicts


def test_the_local_checker_and_the_registry_agree_on_the_corpus(schema_registry_url: str) -> None:
    cases = json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]
    assert len(cases) >= 30

    remote = asyncio.run(registry_verdicts(schema_registry_url, cases))

    local = {case["name"]: not check_can_read(case["reader"], case["writer"]) for case in cases}
    differences = {name: (local[name], remote[name]) for name in local if local[name] != remote[name]}
    assert set(differences) == set(KNOWN_DIFFERENCES), f"local vs registry: {differences}"
    assert sum(verdict is True for verdict in remote.values()) >= 10
    assert sum(verdict is False for verdict in remote.values()) >= 10


async def set_mode(url: str, subject: str, mode: str) -> None:
    async with RegistryClient(RegistryConfig(url=url)) as registry:
        await registry.set_compatibility(subject, mode)


def write_config(path: Path, data: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def reader_config(topic: str, url: str, reader_file: Path = READER_FILE) -> dict[str, Any]:
    return {
        "name": "orders-reader",
        "source": {"type": "kafka", "topic": topic, "group_id": "g", "start": "earliest"},
        "schema": {
            "format": "avro",
            "registry": {"url": url, "reader_schema_file": str(reader_file), "compatibility": "BACKWARD"},
            "fields": {"order_id": "string", "customer_id": "string", "amount_cents": "int64"},
        },
        "sinks": [{"type": "console"}],
        "kafka": {},
    }


def writer_config(topic: str, url: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Generator orders written as Avro with ``schema`` (their columns: order_id, customer_id, amount_cents,
    placed_ms, region)."""
    return {
        "name": "orders-writer",
        "source": {"type": "generator", "partitions": 1},
        "schema": {
            "fields": {"event_id": "string", "customer_id": "string", "amount_cents": "int64", "event_time_ms": "int64"}
        },
        "operators": [
            {"op": "derive", "column": "region", "expr": "'eu'"},
            {
                "op": "select",
                "columns": ["event_id", "customer_id", "amount_cents", "event_time_ms", "region"],
                "rename": {"event_id": "order_id", "event_time_ms": "placed_ms"},
            },
        ],
        "sinks": [{"type": "kafka", "topic": topic, "format": "avro", "avro_schema": schema, "registry": {"url": url}}],
        "kafka": {},
    }


def test_the_gate_refuses_a_breaking_writer_and_names_the_field_and_the_order(
    schema_registry_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"gate-{uuid.uuid4().hex[:8]}"
    asyncio.run(register_versions(RegistryConfig(url=schema_registry_url), f"{topic}-value"))
    breaking = {**V3, "fields": [{**f, "type": "string"} if f["name"] == "amount_cents" else f for f in V3["fields"]]}
    reader = write_config(tmp_path / "reader.yaml", reader_config(topic, schema_registry_url))
    writer = write_config(tmp_path / "writer.yaml", writer_config(topic, schema_registry_url, breaking))

    assert main(["schema", "check", reader, "--json"]) == 0, "the reader reads v1, v2 and v3"
    capsys.readouterr()
    code = main(["schema", "check", reader, writer, "--json"])

    assert code == 1
    report = json.loads(capsys.readouterr().out)
    paths = {(f["config"], f["path"], f["deploy_first"]) for f in report["findings"]}
    assert ("orders-reader", "$.amount_cents", "consumers") in paths, "the reader cannot read the new writer"
    writer_findings = [f for f in report["findings"] if f["config"] == "orders-writer"]
    assert writer_findings and all(f["path"] == "$.amount_cents" for f in writer_findings)
    assert {f["kind"] for f in writer_findings} == {"type_mismatch"}
    assert all(f["decided_by"] == "local and registry" for f in writer_findings)
    assert report["disagreements"] == []


def test_run_refuses_a_breaking_writer_before_ray_starts(
    schema_registry_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"gate-run-{uuid.uuid4().hex[:8]}"
    asyncio.run(register_versions(RegistryConfig(url=schema_registry_url), f"{topic}-value"))
    breaking = {**V3, "fields": [f for f in V3["fields"] if f["name"] != "currency"] + [
        {"name": "region", "type": "string"}]}  # fmt: skip
    writer = write_config(tmp_path / "writer.yaml", writer_config(topic, schema_registry_url, breaking))
    started_before = ray.is_initialized()

    code = main(["run", writer, "--duration-s", "1"])

    assert code == 2
    err = capsys.readouterr().err
    assert "the schema check refuses" in err and "$.region" in err and "deploy the producers first" in err
    assert ray.is_initialized() == started_before, "refused before Ray was started"


def test_a_reader_that_cannot_read_a_registered_version_must_change(
    schema_registry_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"gate-reader-{uuid.uuid4().hex[:8]}"
    asyncio.run(register_versions(RegistryConfig(url=schema_registry_url), f"{topic}-value"))
    strict = json.loads(READER_FILE.read_text(encoding="utf-8"))
    for field in strict["fields"]:
        field.pop("aliases", None)  # v1 and v2 wrote customerId: without the alias nothing reads it
    reader_file = tmp_path / "strict.avsc"
    reader_file.write_text(json.dumps(strict), encoding="utf-8")
    reader = write_config(tmp_path / "reader.yaml", reader_config(topic, schema_registry_url, reader_file))

    code = main(["schema", "check", reader, "--json"])

    assert code == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert {(f["version"], f["path"], f["kind"], f["deploy_first"]) for f in findings} == {
        (1, "$.customer_id", "missing_default", "reader"),
        (2, "$.customer_id", "missing_default", "reader"),
    }


def test_register_then_docs_show_the_subject_with_its_versions(
    schema_registry_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"docs-{uuid.uuid4().hex[:8]}"
    writer = write_config(tmp_path / "writer.yaml", writer_config(topic, schema_registry_url, V3))
    reader = write_config(tmp_path / "reader.yaml", reader_config(topic, schema_registry_url))

    assert main(["schema", "register", writer, "--json"]) == 0
    registered = json.loads(capsys.readouterr().out)
    assert list(registered) == [f"{topic}-value"]
    assert main(["schema", "register", writer, "--json"]) == 0, "registering the same schema again is a no-op"
    assert json.loads(capsys.readouterr().out) == registered
    assert main(["schema", "check", reader, writer, "--json"]) == 1, "the subject has the registry's default mode"
    (mismatch,) = json.loads(capsys.readouterr().out)["findings"]
    assert (mismatch["kind"], mismatch["deploy_first"]) == ("mode_mismatch", "mode")
    asyncio.run(set_mode(schema_registry_url, f"{topic}-value", "BACKWARD"))
    assert main(["schema", "check", reader, writer]) == 0
    capsys.readouterr()
    assert main(["schema", "docs", reader, writer]) == 0

    text = capsys.readouterr().out
    assert f"## `{topic}`" in text
    assert f"subject `{topic}-value` (versions [1], BACKWARD)" in text
    assert "**read by** `orders-reader`" in text and "**written by** `orders-writer`" in text
    assert "| `customer_id` | string |  | customerId |" in text
