"""Personal data marked for masking never leaves the pipeline in clear: canary e-mail addresses in valid, invalid
and undecodable events, through a real run on the session's Ray cluster with tracing and checkpoints on, appear
0 times in the results, the dead letters (``dead_letter.payload: masked``), the traces, the checkpoints and Ray's
session logs; with checkpoints encrypted (``checkpoint.encryption``), a customer id held in keyed state is not under
the checkpoint location either. The same run with ``payload: raw`` and plain checkpoints finds them in the dead
letters and the checkpoints: the search can see them. With ``payload: encrypted`` the dead letters hold none, and
``eventray dead-letters decrypt`` gives every invalid event back byte for byte."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.io.generator import generate_events
from tests.integration.pipelines_under_test import START_TIME_MS, orders_with
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir

pytestmark = [pytest.mark.ray]

CANARY = "canary.7f3a9c@example.com"  # marked for masking (mask email)
CUSTOMER = "c-canary-5d21"  # not marked: in the results, and in the upsert table's state the checkpoints hold
CHECKPOINT_KEY = "5e" * 32
DEAD_LETTER_KEY = "d1" * 32
VALID_EVENTS = 3_000


def canary_events() -> bytes:
    """Events carrying the canary: valid orders, orders failing a check, and lines that are not JSON."""
    lines = []
    for index in range(30):
        amount = -100 if index % 3 == 1 else 1_000 + index  # every third fails `amount_cents >= 0`
        event = {"event_id": f"canary-{index}", "event_type": "OrderCreated", "event_time_ms": START_TIME_MS + index,
                 "customer_id": CUSTOMER, "email": CANARY, "amount_cents": amount}  # fmt: skip
        lines.append(json.dumps(event).encode())
    lines.append(f'{{"event_id": "broken", "email": "{CANARY}", '.encode())  # cut short: undecodable
    return b"\n".join(lines) + b"\n"


def canary_run(tmp_path: Path, payload: str, encrypted: bool) -> PipelineConfig:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    generator = GeneratorSourceConfig(seed=5, rate_per_s=None, invalid_fraction=0.0)
    valid = generate_events(generator, 0, 0, VALID_EVENTS, START_TIME_MS).payloads.to_pylist()
    (inputs / "valid.jsonl").write_bytes(b"\n".join(valid) + b"\n")
    (inputs / "canaries.jsonl").write_bytes(canary_events())
    source = {"type": "file", "format": "jsonl", "paths": [str(inputs / "*.jsonl")]}
    base = orders_with(source, tmp_path / "out", {"source_actors": 1, "aggregate_actors": 1})
    data: dict[str, Any] = base.model_dump(mode="json", by_alias=True)
    data["dead_letter"]["payload"] = payload
    # the keys these tests set in this driver came after the session's cluster started: the driver hands them over
    data["runtime"]["secrets"] = "driver"
    # an upsert table keeps every customer's latest row in its keyed state for good, so the final checkpoint
    # holds the canary customer whatever the timing (windows would have emitted and dropped it by then)
    data["aggregate"] = None
    data["keyed"] = {"type": "upsert", "key": "customer_id", "max_out_of_order_ms": 1000}
    data["tracing"] = {**data["tracing"], "enabled": True, "exporter": "jsonl", "jsonl_path": str(tmp_path / "traces"),
                       "sampling_ratio": 1.0}  # fmt: skip
    data["checkpoint"] = {**(data.get("checkpoint") or {}), "uri": str(tmp_path / "checkpoints"),
                          "encryption": {} if encrypted else None}  # fmt: skip
    return parse_config(data)


def dead_letter_payloads(directory: Path) -> list[bytes | None]:
    """The payloads of the dead letters in ``directory``, decoded (the JSONL sink writes them in base64)."""
    return [None if row["payload_base64"] is None else base64.b64decode(row["payload_base64"])
            for row in read_jsonl_dir(directory)]  # fmt: skip


def files_holding(needle: bytes, *roots: Path) -> list[str]:
    return [str(path) for root in roots for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_canaries_marked_for_masking_appear_nowhere_in_clear(
    ray_driver: LocalRayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints are encrypted at rest too: the customer id, unmasked in the results, is nowhere in them."""
    monkeypatch.setenv("EVENTRAY_CHECKPOINT_KEY", CHECKPOINT_KEY)
    config = canary_run(tmp_path, payload="masked", encrypted=True)
    run_pipeline(config, address=ray_driver.address)

    out, traces, checkpoints = tmp_path / "out", tmp_path / "traces", tmp_path / "checkpoints"
    assert list(traces.rglob("spans-*.jsonl")) and list(checkpoints.rglob("*")), "traces and checkpoints were written"
    assert files_holding(CANARY.encode(), out, traces, checkpoints) == []
    logs = ray_driver.temp_dir / "session_latest" / "logs"
    assert files_holding(CANARY.encode(), logs) == []
    assert files_holding(config.name.encode(), logs), "the logs searched are this run's (they name its actors)"
    assert files_holding(CUSTOMER.encode(), out / "windows"), "the customer id is in the results"
    assert files_holding(CUSTOMER.encode(), checkpoints) == [], "and nowhere under the checkpoints"
    assert files_holding(CHECKPOINT_KEY.encode(), checkpoints, logs) == []

    payloads = dead_letter_payloads(out / "dead_letter")
    assert not [payload for payload in payloads if payload and CANARY.encode() in payload]
    key = os.environ["EVENTRAY_MASK_KEY"].encode()
    hashed = hmac.new(key, CANARY.encode(), hashlib.sha256).hexdigest()[:32]
    canaries = [json.loads(payload) for payload in payloads if payload and b'"canary-' in payload]
    assert [event["email"] for event in canaries] == [hashed] * 10, (
        "each invalid canary order is dead-lettered with its e-mail hashed as the mask operator hashes it"
    )
    withheld = [row for row in read_jsonl_dir(out / "dead_letter") if "payload withheld" in row["reason"]]
    assert len(withheld) == 1 and withheld[0]["payload_base64"] is None, "the undecodable line, its payload withheld"


def test_with_raw_dead_letters_and_plain_checkpoints_the_same_search_finds_the_canaries(
    ray_driver: LocalRayCluster, tmp_path: Path
) -> None:
    config = canary_run(tmp_path, payload="raw", encrypted=False)
    run_pipeline(config, address=ray_driver.address)

    payloads = dead_letter_payloads(tmp_path / "out" / "dead_letter")
    assert len([payload for payload in payloads if payload and CANARY.encode() in payload]) == 11
    assert files_holding(CUSTOMER.encode(), tmp_path / "checkpoints"), "plain checkpoints show the keyed state"


def test_encrypted_dead_letters_hide_the_canaries_and_decrypt_gives_back_the_exact_events(
    ray_driver: LocalRayCluster, tmp_path: Path
) -> None:
    """``dead_letter.payload: encrypted`` loses nothing: ``eventray dead-letters decrypt`` returns every byte."""
    environment = {**os.environ, "EVENTRAY_DEAD_LETTER_KEY": DEAD_LETTER_KEY}
    config = canary_run(tmp_path, payload="encrypted", encrypted=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVENTRAY_DEAD_LETTER_KEY", DEAD_LETTER_KEY)
        run_pipeline(config, address=ray_driver.address)
    dead_letters = tmp_path / "out" / "dead_letter"
    stored = [payload for payload in dead_letter_payloads(dead_letters) if payload is not None]
    assert len(stored) >= 11, "the 11 invalid canary events and the generator's invalid ones"
    assert all(payload.startswith(b"ERDL1") for payload in stored), "every payload is sealed"
    assert not [payload for payload in stored if CANARY.encode() in payload]

    decrypted = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "dead-letters", "decrypt", str(dead_letters)],
        env=environment, capture_output=True, timeout=120, check=False,
    )  # fmt: skip

    assert decrypted.returncode == 0, decrypted.stderr
    payloads = [base64.b64decode(row["payload_base64"]) for row in map(json.loads, decrypted.stdout.splitlines())
                if row["payload_base64"] is not None]  # fmt: skip
    invalid_canaries = [line for line in canary_events().splitlines() if b"-100" in line or b'"broken"' in line]
    assert sorted(payload for payload in payloads if CANARY.encode() in payload) == sorted(invalid_canaries)


def test_with_secrets_from_the_environment_the_actors_hash_with_the_key_of_their_own_nodes(
    ray_driver: LocalRayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``runtime.secrets: environment``: the session's cluster was started with the session's mask key; the driver
    now holds another one, and the dead letters are hashed with the cluster's: no key came from the driver."""
    cluster_key = os.environ["EVENTRAY_MASK_KEY"]
    monkeypatch.setenv("EVENTRAY_MASK_KEY", "the-driver-s-own-key-which-no-actor-sees")
    written = canary_run(tmp_path, payload="masked", encrypted=False)
    config = written.model_copy(update={"runtime": written.runtime.model_copy(update={"secrets": "environment"})})

    run_pipeline(config, address=ray_driver.address)

    canaries = [json.loads(payload) for payload in dead_letter_payloads(tmp_path / "out" / "dead_letter")
                if payload and b'"canary-' in payload]  # fmt: skip
    hashed = hmac.new(cluster_key.encode(), CANARY.encode(), hashlib.sha256).hexdigest()[:32]
    assert [event["email"] for event in canaries] == [hashed] * 10


def test_with_secrets_from_the_environment_a_node_without_the_key_fails_the_run_at_once_naming_it(
    ray_driver: LocalRayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver has the dead-letter key, the session's cluster does not: no restore loop, the cause named."""
    assert "EVENTRAY_DEAD_LETTER_KEY" not in os.environ, "the session's cluster was started without it"
    monkeypatch.setenv("EVENTRAY_DEAD_LETTER_KEY", DEAD_LETTER_KEY)
    written = canary_run(tmp_path, payload="encrypted", encrypted=False)
    config = written.model_copy(update={"runtime": written.runtime.model_copy(update={"secrets": "environment"})})

    with pytest.raises(Exception, match=r"EVENTRAY_DEAD_LETTER_KEY must hold a 256-bit key") as failed:
        run_pipeline(config, address=ray_driver.address)
    assert "recoveries, checkpoint.max_recoveries" not in str(failed.value), "failed at once, without restoring"
