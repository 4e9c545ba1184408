"""What dead letters keep of invalid events: raw, masked (as the mask operators mask), encrypted or omitted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import SecretStr

from pipelines.at_rest import CheckpointKeyError, key_id_of
from pipelines.config.pipeline import DeadLetterConfig, MaskOp, load_config, parse_config
from pipelines.config.secrets import resolve_secrets
from pipelines.errors import ConfigError
from pipelines.io.records import DEAD_LETTER_SCHEMA
from pipelines.io.sinks import DeadLetterSink
from pipelines.stages.dead_letter_policy import WITHHELD, DeadLetterPolicy
from pipelines.stages.plan import compile_pipeline

KEY = "dead-letter-test-key-0123456789abcdef"
ORDERS = Path(__file__).resolve().parents[2] / "configs" / "orders.yaml"
CANARY = "canary.person@example.com"

MASKS = [
    MaskOp(op="mask", column="email", method="hash").model_copy(update={"key": SecretStr(KEY)}),
    MaskOp(op="mask", column="card", method="keep_last", keep_last=4),
    MaskOp(op="mask", column="name", method="redact"),
]


def dead_letters(payloads: list[bytes | None]) -> pa.RecordBatch:
    count = len(payloads)
    return pa.RecordBatch.from_pydict(
        {
            "reason": ["failed check: amount_cents >= 0"] * count,
            "error_type": ["invalid"] * count,
            "topic": ["orders"] * count,
            "partition": pa.array([3] * count, pa.int32()),
            "offset": pa.array(range(100, 100 + count), pa.int64()),
            "key": [b"customer-7"] * count,
            "payload": pa.array(payloads, pa.binary()),
            "traceparent": [None] * count,
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def policy(payload: str, key: str, dead_letter_key: str | None = None) -> DeadLetterPolicy:
    content = DeadLetterConfig.model_validate({"payload": payload, "key": key})
    if dead_letter_key is not None:
        encryption = content.encryption.model_copy(update={"key": SecretStr(dead_letter_key)})
        content = content.model_copy(update={"encryption": encryption})
    return DeadLetterPolicy.of(content, MASKS)


def hmac32(text: str) -> str:
    return hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]


def event(**fields: object) -> bytes:
    return json.dumps({"event_id": "e1", "amount_cents": -5, **fields}).encode()


def test_raw_keeps_the_bytes_as_they_arrived() -> None:
    batch = dead_letters([event(email=CANARY)])
    assert policy("raw", "raw").apply(batch) is batch


def test_masked_masks_each_named_field_as_its_operator_does_and_keeps_the_rest() -> None:
    batch = dead_letters([event(email=CANARY, card="4111111111111111", name="Ann Lee"), event(email=None)])
    out = policy("masked", "raw").apply(batch)
    first, second = (json.loads(payload) for payload in out.column("payload").to_pylist())
    assert first == {"event_id": "e1", "amount_cents": -5, "email": hmac32(CANARY), "card": "***1111", "name": "***"}
    assert second == {"event_id": "e1", "amount_cents": -5, "email": None}
    assert CANARY.encode() not in b"".join(out.column("payload").to_pylist())
    assert out.column("reason").to_pylist() == batch.column("reason").to_pylist()
    assert out.column("offset").to_pylist() == [100, 101] and out.column("key").to_pylist() == [b"customer-7"] * 2


def test_a_payload_that_cannot_be_masked_field_by_field_is_withheld_and_the_reason_says_so() -> None:
    unmaskable = [b"\xff\xfe" + CANARY.encode(), b'["' + CANARY.encode() + b'"]', b"not json " + CANARY.encode()]
    out = policy("masked", "raw").apply(dead_letters([*unmaskable, None]))
    assert out.column("payload").to_pylist() == [None, None, None, None]
    reasons = out.column("reason").to_pylist()
    assert reasons[:3] == [f"failed check: amount_cents >= 0{WITHHELD}"] * 3
    assert reasons[3] == "failed check: amount_cents >= 0", "a missing payload was not withheld"
    assert out.column("offset").to_pylist() == [100, 101, 102, 103], "every dead letter is still there"


def test_a_payload_nested_past_the_parsers_depth_is_withheld_not_a_crash() -> None:
    """The bad-input corpus's deep nesting (a ``limit`` dead letter) must not stop the actor that masks it."""
    deep = b'{"email": "' + CANARY.encode() + b'", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out = policy("masked", "raw").apply(dead_letters([deep, event(email=CANARY)]))
    assert out.column("payload").to_pylist()[0] is None
    assert json.loads(out.column("payload").to_pylist()[1])["email"] == hmac32(CANARY)


def test_omitted_keeps_no_payload_and_the_key_policy_drops_keys() -> None:
    out = policy("omitted", "omitted").apply(dead_letters([event(email=CANARY)]))
    assert out.column("payload").to_pylist() == [None] and out.column("key").to_pylist() == [None]
    assert out.column("offset").to_pylist() == [100]


def test_late_events_are_rows_masked_already_so_masked_is_not_applied_twice() -> None:
    already = event(email=hmac32(CANARY))
    out = policy("masked", "omitted").apply_to_late(dead_letters([already]))
    assert out.column("payload").to_pylist() == [already] and out.column("key").to_pylist() == [None]


def test_masked_needs_json_payloads_and_mask_operators() -> None:
    with pytest.raises(ConfigError, match=r"dead_letter\.payload: masked works on JSON payloads"):
        compile_pipeline(parse_config({
            "name": "raw-dead-letters", "source": {"type": "generator"},
            "schema": {"format": "raw", "fields": {"value": "binary"}},
            "sinks": [{"type": "console"}], "dead_letter": {"type": "jsonl", "payload": "masked"},
        }))  # fmt: skip
    with pytest.raises(ConfigError, match=r"no mask operator names a field to mask"):
        compile_pipeline(load_config(ORDERS, {"dead_letter.payload": "masked", "operators": []}))
    compile_pipeline(load_config(ORDERS, {"dead_letter.payload": "masked"}))


DEAD_LETTER_KEY = "11" * 32
OTHER_KEY = "22" * 32


def _decrypt_cli(
    paths: list[str], key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *options: str
) -> tuple[int, str, str]:
    from cluster.cli import main  # noqa: PLC0415

    monkeypatch.setenv("EVENTRAY_DEAD_LETTER_KEY", key)
    code = main(["dead-letters", "decrypt", *paths, *options])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def test_encrypted_keeps_nothing_readable_and_decrypt_gives_back_every_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    payloads = [event(email=CANARY), b"\xff not json " + CANARY.encode(), None]
    out = policy("encrypted", "encrypted", DEAD_LETTER_KEY).apply(dead_letters(payloads))
    sink = DeadLetterSink(str(tmp_path), "source-0")
    sink.write(out)
    sink.close()
    written = (tmp_path / "part-source-0.jsonl").read_bytes()
    assert CANARY.encode() not in written and base64.b64encode(CANARY.encode()) not in written
    assert b"customer-7" not in written
    assert out.column("offset").to_pylist() == [100, 101, 102], "the origin stays readable"

    code, out, err = _decrypt_cli([str(tmp_path)], DEAD_LETTER_KEY, monkeypatch, capsys)

    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [None if r["payload_base64"] is None else base64.b64decode(r["payload_base64"]) for r in records] == payloads
    assert {base64.b64decode(r["key_base64"]) for r in records} == {b"customer-7"}
    assert "3 dead letters: 5 values decrypted, 0 were not encrypted" in err


def test_a_plain_value_among_encrypted_ones_is_refused_unless_allowed_and_out_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever can write the dead-letter store must not slip a plaintext of their choice into a replay."""
    sink = DeadLetterSink(str(tmp_path / "dead"), "source-0")
    sink.write(policy("encrypted", "encrypted", DEAD_LETTER_KEY).apply(dead_letters([event(a=1)])))
    sink.write(dead_letters([b'{"forged": true}']))  # as the raw policy writes: not sealed
    sink.close()
    out = tmp_path / "fixed.jsonl"
    out.write_text("old contents\n")
    out.chmod(0o644)

    code, _, err = _decrypt_cli([str(tmp_path / "dead")], DEAD_LETTER_KEY, monkeypatch, capsys, "--out", str(out))
    assert code == 2 and "part-source-0.jsonl:2: the payload is not encrypted" in err

    code, _, err = _decrypt_cli(
        [str(tmp_path / "dead")], DEAD_LETTER_KEY, monkeypatch, capsys, "--out", str(out), "--allow-plain"
    )
    assert code == 0, err
    assert "2 dead letters: 2 values decrypted, 2 were not encrypted" in err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [json.loads(line)["payload_base64"] for line in out.read_text().splitlines()] == [
        base64.b64encode(event(a=1)).decode(),
        base64.b64encode(b'{"forged": true}').decode(),
    ]


def test_decrypting_with_another_key_is_refused_naming_both_key_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = DeadLetterSink(str(tmp_path), "source-0")
    sink.write(policy("encrypted", "raw", DEAD_LETTER_KEY).apply(dead_letters([event(email=CANARY)])))
    sink.close()

    code, out, err = _decrypt_cli([str(tmp_path / "part-source-0.jsonl")], OTHER_KEY, monkeypatch, capsys)

    assert code == 2
    assert f"sealed with key id {key_id_of(bytes.fromhex(DEAD_LETTER_KEY))}" in err
    assert f"the key given has key id {key_id_of(bytes.fromhex(OTHER_KEY))}" in err
    assert CANARY not in out + err


def test_a_sealed_payload_moved_to_another_dead_letter_fails_authentication(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = DeadLetterSink(str(tmp_path), "source-0")
    sink.write(policy("encrypted", "raw", DEAD_LETTER_KEY).apply(dead_letters([event(email=CANARY), event(a=1)])))
    sink.close()
    file = tmp_path / "part-source-0.jsonl"
    first, second = (json.loads(line) for line in file.read_text().splitlines())
    first["payload_base64"], second["payload_base64"] = second["payload_base64"], first["payload_base64"]
    file.write_text(f"{json.dumps(first)}\n{json.dumps(second)}\n")

    code, _, err = _decrypt_cli([str(file)], DEAD_LETTER_KEY, monkeypatch, capsys)

    assert code == 2
    assert "orders/3/100/payload fails authentication" in err


def test_encrypted_dead_letters_need_their_key_from_the_environment_never_from_the_config() -> None:
    config = load_config(ORDERS, {"dead_letter.payload": "encrypted"})
    with pytest.raises(CheckpointKeyError, match=r"dead_letter\.encryption: EVENTRAY_DEAD_LETTER_KEY must hold"):
        resolve_secrets(config, {"EVENTRAY_MASK_KEY": KEY})
    resolved = resolve_secrets(config, {"EVENTRAY_MASK_KEY": KEY, "EVENTRAY_DEAD_LETTER_KEY": DEAD_LETTER_KEY})
    assert DeadLetterPolicy.of_pipeline(resolved).cipher is not None
    assert DEAD_LETTER_KEY not in resolved.to_yaml()
    with pytest.raises(ConfigError, match=r"a key never goes in a config"):
        load_config(ORDERS, {"dead_letter.encryption.key": DEAD_LETTER_KEY})
    with pytest.raises(ConfigError, match=r"dead_letter: encrypted needs its key, read from EVENTRAY_DEAD_LETTER_KEY"):
        DeadLetterPolicy.of_pipeline(config)


def test_a_masked_kafka_key_is_not_kept_raw_in_dead_letters() -> None:
    key_mask = {"op": "mask", "column": "_key", "method": "redact"}
    with pytest.raises(ConfigError, match=r"dead_letter\.key: raw keeps the Kafka key that operators\.3 masks"):
        compile_pipeline(load_config(ORDERS, {"operators": [*load_config(ORDERS).model_dump()["operators"], key_mask]}))
    compile_pipeline(
        load_config(
            ORDERS,
            {"operators": [*load_config(ORDERS).model_dump()["operators"], key_mask], "dead_letter.key": "omitted"},
        )
    )
