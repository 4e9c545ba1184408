"""The Supervisor's layout through a run's life, step by step, without Ray (cluster/control/layout.py): placed at
the start, kept by a restore, rescaled (moving only what must move), grown by discovered partitions."""

from __future__ import annotations

from cluster.control.layout import Layout, Moves


def owners_of(owned: list[list[int]]) -> dict[int, int]:
    return {item: owner for owner, items in enumerate(owned) for item in items}


def test_a_run_placed_rescaled_restored_and_grown_keeps_every_item_once_and_moves_only_what_must() -> None:
    layout = Layout(max_key_groups=16, keyed=True, source_count=2, aggregate_count=2)

    layout.place(list(range(8)))
    assert sorted(p for owned in layout.owned for p in owned) == list(range(8))
    assert sorted(g for groups in layout.groups for g in groups) == list(range(16))
    first_sources, first_groups = owners_of(layout.owned), owners_of(layout.groups)

    moves = layout.rescale(source_count=3, aggregate_count=4)
    assert (len(layout.owned), len(layout.groups)) == (3, 4)
    assert moves == Moves(
        partitions=sum(first_sources[p] != owner for p, owner in owners_of(layout.owned).items()),
        key_groups=sum(first_groups[g] != owner for g, owner in owners_of(layout.groups).items()),
    )
    assert 0 < moves.partitions < 8 and 0 < moves.key_groups < 16, "a scale-out moves some, not all"

    before = ([list(p) for p in layout.owned], [list(g) for g in layout.groups])
    layout.place(list(range(8)))  # a restore after a failure: the same partitions
    assert (layout.owned, layout.groups) == before, "a restore keeps the layout it restores"

    added = layout.add_partitions([*range(8), 8, 9], running=[0, 2])
    assert [partition for partition, _ in added] == [8, 9]
    assert {owner for _, owner in added} <= {0, 2}, "only running sources take new partitions"
    assert sorted(p for owned in layout.owned for p in owned) == list(range(10))
    assert layout.add_partitions([*range(10)], running=[0]) == [], "known partitions are not added again"


def test_a_layout_placed_on_other_partitions_deals_them_afresh_and_a_stateless_one_has_no_key_groups() -> None:
    layout = Layout(max_key_groups=16, keyed=False, source_count=2, aggregate_count=2)
    layout.place([0, 1, 2])
    layout.place([0, 1, 2, 65_536, 65_537])  # another input's partitions: not the same set

    assert sorted(p for owned in layout.owned for p in owned) == [0, 1, 2, 65_536, 65_537]
    assert layout.groups == [] and layout.owner_of_group is None
    layout.place([0, 1, 2, 65_536, 131_072])  # as many partitions, not the same ones: dealt afresh, none lost
    assert sorted(p for owned in layout.owned for p in owned) == [0, 1, 2, 65_536, 131_072]
    second = len(layout.owned[1])

    assert layout.rescale(1, 5) == Moves(partitions=second, key_groups=0), "the second source's partitions move"
    assert layout.owned == [sorted(layout.owned[0])] and len(layout.owned[0]) == 5
