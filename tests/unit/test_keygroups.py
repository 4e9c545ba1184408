"""Key groups: a stable hash (CRC-32, recomputed here independently) and exact routing of rows to owners."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.state.keygroups import KeyGroupRouter, assign_key_groups, crc32_of_strings, key_group_of, owner_of_group


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), bit by bit: independent of zlib."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_reference_crc32_is_right() -> None:
    assert crc32(b"123456789") == 0xCBF43926  # the standard CRC-32 check value
    assert crc32(b"") == 0


def test_key_group_is_the_crc32_of_the_utf8_key() -> None:
    assert key_group_of("123456789", 1 << 32) == 0xCBF43926
    assert key_group_of("123456789", 128) == 0xCBF43926 % 128 == 38


@pytest.mark.parametrize("key", ["c00001", "c00999", "", "Zoë", "東京", "a" * 300, "customer-42"])
@pytest.mark.parametrize("groups", [1, 7, 128, 32_768])
def test_key_group_matches_reference(key: str, groups: int) -> None:
    assert key_group_of(key, groups) == crc32(key.encode("utf-8")) % groups


def test_null_key_is_group_zero() -> None:
    assert key_group_of(None, 128) == 0


def test_keys_spread_over_groups() -> None:
    groups = {key_group_of(f"c{i:05d}", 128) for i in range(2_000)}
    assert len(groups) == 128


def router(groups: int = 16, actors: int = 3, column: str = "k") -> tuple[KeyGroupRouter, list[int]]:
    owners = owner_of_group(assign_key_groups(groups, actors), groups)
    return KeyGroupRouter(column, groups, owners), owners


def random_batch(rows: int, seed: int, null_share: float = 0.1) -> pa.RecordBatch:
    rng = random.Random(seed)
    keys = [None if rng.random() < null_share else f"c{rng.randrange(50)}" for _ in range(rows)]
    return pa.record_batch({"k": pa.array(keys, pa.string()), "row": pa.array(range(rows), pa.int64())})


@pytest.mark.parametrize("seed", range(5))
def test_split_partitions_rows_exactly(seed: int) -> None:
    route, owners = router(groups=16, actors=3)
    batch = random_batch(500, seed)
    parts = route.split(batch)

    seen: list[int] = []
    for owner, part in parts.items():
        assert part.schema == batch.schema
        assert part.num_rows > 0
        rows = part.column("row").to_pylist()
        assert rows == sorted(rows)  # each part keeps the batch's order
        for key in part.column("k").to_pylist():
            assert owners[crc32(key.encode()) % 16 if key is not None else 0] == owner
        seen.extend(rows)
    assert sorted(seen) == list(range(500))  # union == input, no row twice


def test_split_leaves_out_owners_without_rows() -> None:
    route, owners = router(groups=16, actors=4)
    key = "c1"
    batch = pa.record_batch({"k": [key, key, key]})
    parts = route.split(batch)
    assert list(parts) == [owners[crc32(key.encode()) % 16]]
    assert parts[owners[crc32(key.encode()) % 16]].num_rows == 3


def test_null_keys_go_to_group_zero() -> None:
    route, owners = router(groups=16, actors=4)
    batch = pa.record_batch({"k": pa.array([None, None], pa.string())})
    assert route.key_groups(batch).tolist() == [0, 0]
    assert list(route.split(batch)) == [owners[0]]


def test_key_groups_per_row() -> None:
    route, _ = router(groups=128, actors=2)
    keys = ["a", None, "b", "a", "東京"]
    batch = pa.record_batch({"k": pa.array(keys, pa.string())})
    expected = [0 if key is None else crc32(key.encode()) % 128 for key in keys]
    assert route.key_groups(batch).tolist() == expected


def test_integer_keys_are_hashed_as_their_text() -> None:
    route, _ = router(groups=64, actors=2)
    batch = pa.record_batch({"k": pa.array([7, None, 123456], pa.int64())})
    assert route.key_groups(batch).tolist() == [crc32(b"7") % 64, 0, crc32(b"123456") % 64]


def test_sliced_batch_routes_by_its_own_rows() -> None:
    route, _ = router(groups=32, actors=2)
    batch = random_batch(100, seed=9)
    sliced = batch.slice(37, 20)
    expected = [0 if key is None else crc32(key.encode()) % 32 for key in sliced.column("k").to_pylist()]
    assert route.key_groups(sliced).tolist() == expected


def test_empty_batch_splits_into_nothing() -> None:
    route, _ = router()
    assert route.split(pa.record_batch({"k": pa.array([], pa.string())})) == {}


def test_repeated_batches_give_the_same_groups() -> None:
    route, _ = router(groups=16, actors=3)
    batches = [random_batch(300, seed) for seed in range(4)]
    first = [route.split(batch) for batch in batches]
    again = [route.split(batch) for batch in batches]
    for one, two in zip(first, again, strict=True):
        assert one.keys() == two.keys()
        for owner in one:
            assert one[owner].equals(two[owner])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=40), st.text(max_size=2_000)), max_size=60))
def test_the_columnar_crc32_is_the_reference_crc32(keys: list[str | None]) -> None:
    """Bit for bit, over any UTF-8 (surrogates aside, which Arrow strings cannot hold), nulls, empty strings,
    and lengths that leave more or fewer keys than zlib finishes alone."""
    keys = [key if key is None else key.encode("utf-8", "replace").decode("utf-8") for key in keys]
    strings = pa.array(keys, pa.string())
    expected = [0 if key is None else crc32(key.encode("utf-8")) for key in keys]
    assert crc32_of_strings(strings).tolist() == expected
    if len(keys) > 2:
        assert crc32_of_strings(strings.slice(1, len(keys) - 2)).tolist() == expected[1:-1]


def test_many_keys_of_mixed_lengths_hash_columnar_like_zlib() -> None:
    rng = random.Random(11)
    keys = [
        "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.choice([0, 1, 6, 7, 36, 300]))) for _ in range(3_000)
    ]
    assert crc32_of_strings(pa.array(keys)).tolist() == [zlib.crc32(key.encode()) for key in keys]


def test_owner_table_must_cover_every_group() -> None:
    with pytest.raises(ValueError, match="expected 16"):
        KeyGroupRouter("k", 16, [0] * 15)


def test_single_owner_gets_everything_in_order() -> None:
    route = KeyGroupRouter("k", 8, np.zeros(8, dtype=np.int64).tolist())
    batch = random_batch(50, seed=1)
    parts = route.split(batch)
    assert list(parts) == [0]
    assert parts[0].equals(batch)
