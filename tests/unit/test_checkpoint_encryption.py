"""Checkpoint files encrypted at rest: no plaintext under the location, tampering and wrong keys refused by name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from pipelines.at_rest import CheckpointKeyError, FileCipher, key_id_of
from pipelines.config.pipeline import CheckpointConfig, load_config
from pipelines.config.secrets import resolve_secrets
from pipelines.state.checkpoint_store import (
    AggregateSnapshot,
    Checkpoint,
    CheckpointStore,
    SourceSnapshot,
    TornSnapshotError,
    open_checkpoint_store,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CANARY = "canary-person@example.com"
ORDERS = Path(__file__).resolve().parents[2] / "configs" / "orders.yaml"


def table() -> pa.Table:
    return pa.table({"customer_id": [CANARY, "c-2"], "revenue_cents": [100, 200]})


def every_byte_under(root: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def test_an_encrypted_state_file_holds_no_plaintext_and_reads_back_equal(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p", key=KEY)
    state = store.write_table(1, "state-aggregate-0", table())
    assert CANARY.encode() not in every_byte_under(tmp_path)
    assert b"revenue_cents" not in every_byte_under(tmp_path), "not even the schema is readable"
    assert store.read_table(state).equals(table())
    assert stat.S_IMODE(os.stat(tmp_path / "p" / state.path).st_mode) == 0o600


def test_a_plain_store_still_writes_readable_files_and_an_encrypted_one_reads_them(tmp_path: Path) -> None:
    state = CheckpointStore(str(tmp_path), "p").write_table(1, "state-aggregate-0", table())
    assert CANARY.encode() in every_byte_under(tmp_path)
    assert CheckpointStore(str(tmp_path), "p", key=KEY).read_table(state).equals(table()), "turning encryption on"


@pytest.mark.parametrize(
    ("where", "refusal"),
    [
        (0, "does not start as one encrypted with key id"),  # the magic
        (10, "does not start as one encrypted with key id"),  # the key id
        (30, "fails authentication"),  # the wrapped data key
        (0.5, "fails authentication"),  # the data
        (-5, "it is not the file written"),  # the GCM tag the metadata recorded
    ],
    ids=["magic", "key id", "wrapped key", "mid-file", "tag"],
)
def test_a_flipped_byte_anywhere_is_refused_as_torn(tmp_path: Path, where: float, refusal: str) -> None:
    """Torn, not a key error: recovery falls back to an older checkpoint (at-least-once) as for a plain file."""
    store = CheckpointStore(str(tmp_path), "p", key=KEY)
    state = store.write_table(1, "state-aggregate-0", table())
    assert state.sha256 == "" and state.tag, "an encrypted file is pinned by its GCM tag, not hashed again"
    path = tmp_path / "p" / state.path
    data = bytearray(path.read_bytes())
    data[int(where * len(data)) if isinstance(where, float) else where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TornSnapshotError, match=refusal):
        store.read_table(state)


def test_the_wrong_key_is_refused_naming_both_key_ids(tmp_path: Path) -> None:
    state = CheckpointStore(str(tmp_path), "p", key=KEY).write_table(1, "state-aggregate-0", table())
    with pytest.raises(CheckpointKeyError) as refused:
        CheckpointStore(str(tmp_path), "p", key=OTHER_KEY).read_table(state)
    assert f"encrypted with key id {key_id_of(KEY)}" in str(refused.value)
    assert f"the configured key has key id {key_id_of(OTHER_KEY)}" in str(refused.value)
    with pytest.raises(CheckpointKeyError, match=f"is encrypted \\(key id {key_id_of(KEY)}\\)"):
        CheckpointStore(str(tmp_path), "p").read_table(state)


def test_an_encrypted_file_replaced_by_a_plain_one_is_refused(tmp_path: Path) -> None:
    """Whoever can write the storage cannot slip plain state under an encrypted checkpoint's name."""
    state = CheckpointStore(str(tmp_path), "p", key=KEY).write_table(1, "state-aggregate-0", table())
    forged = CheckpointStore(str(tmp_path / "forger"), "p").write_table(1, "state-aggregate-0", table())
    (tmp_path / "p" / state.path).write_bytes((tmp_path / "forger" / "p" / forged.path).read_bytes())
    store = CheckpointStore(str(tmp_path), "p", key=KEY)
    with pytest.raises(TornSnapshotError, match=r"is torn or altered: it is not the file written"):
        store.read_table(msgspec.structs.replace(state, size_bytes=forged.size_bytes))
    # the metadata rewritten too, as a plain file's: still refused, the file not being encrypted with its key id
    claimed = msgspec.structs.replace(state, size_bytes=forged.size_bytes, sha256=forged.sha256, tag="")
    with pytest.raises(TornSnapshotError, match=r"does not start as one encrypted with key id .*: it was altered"):
        CheckpointStore(str(tmp_path), "p", key=KEY).read_table(claimed)


def test_a_file_moved_to_another_place_does_not_decrypt() -> None:
    cipher = FileCipher(KEY)
    sealed = cipher.seal(b"state of aggregate 0", "epoch-000001/state-aggregate-0.arrow")
    assert cipher.open(sealed, "epoch-000001/state-aggregate-0.arrow") == b"state of aggregate 0"
    with pytest.raises(CheckpointKeyError, match="fails authentication"):
        cipher.open(sealed, "epoch-000002/state-aggregate-0.arrow")


def test_each_file_gets_its_own_data_key_and_nonces() -> None:
    cipher = FileCipher(KEY)
    assert cipher.seal(b"same bytes", "a") != cipher.seal(b"same bytes", "a")


def test_the_key_comes_from_the_environment_once_and_never_from_a_file(tmp_path: Path) -> None:
    config = load_config(ORDERS, {"checkpoint.encryption": {}, "checkpoint.uri": str(tmp_path)})
    with pytest.raises(CheckpointKeyError, match="EVENTRAY_CHECKPOINT_KEY must hold a 256-bit key as 64 hex digits"):
        resolve_secrets(config, {"EVENTRAY_MASK_KEY": "m" * 32, "EVENTRAY_CHECKPOINT_KEY": "too-short"})
    with pytest.raises(CheckpointKeyError, match="was not resolved"):
        open_checkpoint_store(config.checkpoint, config.name)
    resolved = resolve_secrets(config, {"EVENTRAY_MASK_KEY": "m" * 32, "EVENTRAY_CHECKPOINT_KEY": KEY.hex()})
    assert KEY.hex() not in resolved.to_yaml() and KEY.hex() not in repr(resolved)
    store = open_checkpoint_store(resolved.checkpoint, resolved.name)
    assert store is not None
    store.write_table(1, "state", table())
    assert CANARY.encode() not in every_byte_under(tmp_path)
    with pytest.raises(ValueError, match="a key never goes in a config"):
        CheckpointConfig.model_validate({"encryption": {"key": KEY.hex()}})


def _checkpoint(store: CheckpointStore, epoch: int) -> Checkpoint:
    state = store.write_table(epoch, "state-aggregate-0", table())
    return Checkpoint(epoch=epoch, run_id=f"run-{CANARY}", created_at_s=0.0, started_at_s=0.0, start_time_ms=0,
                      partitions=1, sources=[SourceSnapshot("s", {0: 1000 + epoch}, {})],
                      aggregates=[AggregateSnapshot("a", [0], 0, state)])  # fmt: skip


def test_the_metadata_is_sealed_too_and_an_altered_one_is_refused_as_torn(tmp_path: Path) -> None:
    """The metadata pins the state files (their tags) and holds the offsets: it is authenticated like them."""
    store = CheckpointStore(str(tmp_path), "p", key=KEY)
    for epoch in (1, 2):
        store.commit(_checkpoint(store, epoch))
    metadata = tmp_path / "p" / "epoch-000002" / "_checkpoint.json"
    assert metadata.read_bytes().startswith(b"ERENC1") and CANARY.encode() not in every_byte_under(tmp_path)
    latest = store.latest()
    assert latest is not None and latest.positions == {0: 1002}

    sealed = bytearray(metadata.read_bytes())
    sealed[len(sealed) // 2] ^= 0x01
    metadata.write_bytes(bytes(sealed))
    with pytest.raises(TornSnapshotError, match="exists but cannot be read"):
        store.latest(allow_fallback=False)
    fallback = store.latest()
    assert fallback is not None and fallback.epoch == 1


def test_plain_metadata_put_in_place_of_sealed_metadata_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p", key=KEY)
    checkpoint = _checkpoint(store, 1)
    store.commit(checkpoint)
    forged = msgspec.structs.replace(checkpoint, sources=[SourceSnapshot("s", {0: 999_999}, {})])
    (tmp_path / "p" / "epoch-000001" / "_checkpoint.json").write_bytes(msgspec.json.encode(forged))
    with pytest.raises(TornSnapshotError, match="is plain and names encrypted files: it was replaced"):
        store.latest(allow_fallback=False)


def test_sealed_metadata_without_the_key_is_refused_naming_its_key_id(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p", key=KEY)
    store.commit(_checkpoint(store, 1))
    with pytest.raises(CheckpointKeyError, match=f"is encrypted \\(key id {key_id_of(KEY)}\\)"):
        CheckpointStore(str(tmp_path), "p").latest()
