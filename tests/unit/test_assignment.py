"""Assignment of partitions and key groups to actors: pure functions, checked exhaustively on small sizes."""

from __future__ import annotations

import pytest

from cluster.control.assignment import assign_partitions, moved_items, rebalance
from pipelines.stages.topology import partition_limits
from pipelines.state.keygroups import assign_key_groups, owner_of_group


@pytest.mark.parametrize("partitions", range(1, 33))
def test_assign_partitions_is_complete_balanced_and_capped(partitions: int) -> None:
    for actors in range(1, 40):
        owned = assign_partitions(partitions, actors)
        assert len(owned) == min(actors, partitions)  # no actor without a partition
        flat = [p for group in owned for p in group]
        assert sorted(flat) == list(range(partitions))  # each partition exactly once
        sizes = [len(group) for group in owned]
        assert max(sizes) - min(sizes) <= 1
        assert min(sizes) >= 1
        for group in owned:
            assert group == sorted(group)


def test_assign_partitions_is_round_robin() -> None:
    assert assign_partitions(8, 3) == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert assign_partitions(2, 5) == [[0], [1]]
    assert assign_partitions(1, 1) == [[0]]


def test_assign_partitions_needs_an_actor() -> None:
    with pytest.raises(ValueError, match="at least one actor"):
        assign_partitions(8, 0)


@pytest.mark.parametrize("groups", [1, 2, 3, 7, 16, 100, 128, 129])
def test_assign_key_groups_is_contiguous_balanced_and_complete(groups: int) -> None:
    for actors in range(1, min(groups, 40) + 1):
        ranges = assign_key_groups(groups, actors)
        assert len(ranges) == actors
        flat = [g for group in ranges for g in group]
        assert flat == list(range(groups))  # complete, in order, so each range is contiguous
        for group in ranges:
            assert group == list(range(group[0], group[-1] + 1))
        sizes = [len(group) for group in ranges]
        assert max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)  # the first ones take the remainder


def test_assign_key_groups_known_values() -> None:
    assert assign_key_groups(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert assign_key_groups(4, 4) == [[0], [1], [2], [3]]


@pytest.mark.parametrize(("groups", "actors"), [(8, 0), (8, 9), (1, 2)])
def test_assign_key_groups_rejects_actor_counts_out_of_range(groups: int, actors: int) -> None:
    with pytest.raises(ValueError, match=f"between 1 and max_key_groups \\({groups}\\)"):
        assign_key_groups(groups, actors)


@pytest.mark.parametrize(("groups", "actors"), [(1, 1), (10, 3), (128, 2), (128, 7), (128, 128)])
def test_owner_of_group_inverts_the_assignment(groups: int, actors: int) -> None:
    ranges = assign_key_groups(groups, actors)
    owners = owner_of_group(ranges, groups)
    assert len(owners) == groups
    for actor, group_list in enumerate(ranges):
        for group in group_list:
            assert owners[group] == actor
    assert sorted(set(owners)) == list(range(actors))


def test_owner_of_group_known_values() -> None:
    assert owner_of_group([[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]], 10) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert owner_of_group([[2], [0, 1]], 3) == [1, 1, 0]


def test_owner_of_group_rejects_an_unowned_group() -> None:
    with pytest.raises(ValueError, match="key group 2 has no owner"):
        owner_of_group([[0, 1], [3]], 4)


@pytest.mark.parametrize("partitions", [1, 2, 3, 8, 13])
@pytest.mark.parametrize("max_events", [1, 2, 7, 8, 100, 1_000_001])
def test_partition_limits_sum_to_max_events(partitions: int, max_events: int) -> None:
    limits = partition_limits(partitions, max_events)
    assert sorted(limits) == list(range(partitions))
    values = [limit for limit in limits.values() if limit is not None]
    assert len(values) == partitions
    assert sum(values) == max_events
    assert max(values) - min(values) <= 1
    assert values == sorted(values, reverse=True)  # the first partitions take the remainder


def test_partition_limits_known_values() -> None:
    assert partition_limits(3, 10) == {0: 4, 1: 3, 2: 3}
    assert partition_limits(4, 2) == {0: 1, 1: 1, 2: 0, 3: 0}


def test_partition_limits_unbounded() -> None:
    assert partition_limits(3, None) == {0: None, 1: None, 2: None}


@pytest.mark.parametrize(("before", "after"), [(2, 4), (4, 2), (3, 5), (5, 1), (1, 8), (8, 8)])
def test_rebalance_is_balanced_and_moves_only_what_must_move(before: int, after: int) -> None:
    previous = assign_key_groups(128, before)

    current = rebalance(previous, after)

    assert sorted(item for owned in current for item in owned) == list(range(128))
    sizes = [len(owned) for owned in current]
    assert len(current) == after and max(sizes) - min(sizes) <= 1
    must_move = sum(max(0, len(previous[i]) - len(current[i])) for i in range(min(before, after)))
    must_move += sum(len(previous[i]) for i in range(after, before))
    assert moved_items(previous, current) == must_move, "only excess and orphaned items move"


def test_rebalance_of_partitions_caps_owners_at_the_item_count() -> None:
    assert rebalance([[0, 2], [1, 3]], 8) == [[0], [1], [2], [3]]
