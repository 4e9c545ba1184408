"""The Supervisor's changes to the keyed stages' actors, as plans computed from plain state (no Ray, no actor)."""

from __future__ import annotations

from cluster.control.layout import Layout
from cluster.control.stage_plan import StagePlan, aggregate_slot, keyed_stage_plan
from pipelines.config.stage_graph import StageGraph
from pipelines.stages.wiring import StageWiring

TREE = StageGraph(input_stage=(1, 0), next_stage=(1, None))  # payments -> dedup -> windows <- orders
KEY_GROUPS = 12


def placed(sources: int, aggregates: int) -> Layout:
    layout = Layout(KEY_GROUPS, keyed=True, source_count=sources, aggregate_count=aggregates)
    layout.place(list(range(6)))
    return layout


def test_a_start_makes_every_actor_the_last_stage_first_each_linked_to_its_sender_slot() -> None:
    wiring = placed(2, 2).wiring(TREE, [2, 2])

    plans = keyed_stage_plan(wiring, [0, 0])

    assert [plan.stage for plan in plans] == [1, 0], "the stage sent to is made first"
    assert all(plan.kept == 0 and plan.removed == () for plan in plans)
    windows, dedup = plans
    assert [p.slot for p in windows.added] == ["stage1-aggregate-0", "stage1-aggregate-1"]
    assert {p.senders for p in windows.added} == {2 + 2}, "the 2 sources, then the 2 dedup actors"
    assert all(p.next_link is None for p in windows.added)
    assert [p.slot for p in dedup.added] == ["aggregate-0", "aggregate-1"]
    assert {p.senders for p in dedup.added} == {2}
    links = [p.next_link for p in dedup.added]
    assert [(link.stage, link.sender) for link in links if link] == [(1, 2), (1, 3)], "after the 2 sources"


def test_a_scale_out_keeps_every_actor_and_moves_the_feeders_sender_slots_after_the_new_source_count() -> None:
    layout = placed(2, 2)
    layout.rescale(3, 3)

    plans = keyed_stage_plan(layout.wiring(TREE, [3, 3]), [2, 2])

    windows, dedup = plans
    assert (windows.kept, windows.removed, [p.index for p in windows.added]) == (2, (), [2])
    assert {p.senders for p in windows.placements} == {3 + 3}
    assert [p.next_link.sender for p in dedup.placements if p.next_link] == [3, 4, 5]
    assert sorted(g for p in windows.placements for g in p.key_groups) == list(range(KEY_GROUPS))
    assert [p.key_groups for p in windows.placements] == [p.key_groups for p in dedup.placements]


def test_a_scale_in_removes_the_actors_beyond_the_new_count_in_every_stage() -> None:
    layout = placed(2, 3)
    layout.rescale(2, 2)

    plans = keyed_stage_plan(layout.wiring(TREE, [2, 2]), [3, 3])

    assert [(plan.stage, plan.kept, plan.removed, plan.added) for plan in plans] == [(1, 2, (2,), ()), (0, 2, (2,), ())]
    assert sorted(g for p in plans[0].regrouped for g in p.key_groups) == list(range(KEY_GROUPS))


def test_stages_sized_apart_get_their_own_dealing_and_links_to_the_owners_of_the_next_stages_groups() -> None:
    layout = placed(1, 1)
    wiring = layout.wiring(TREE, [1, 3])

    plans = keyed_stage_plan(wiring, [0, 0])

    windows, dedup = plans
    assert len(windows.added) == 3 and len(dedup.added) == 1
    link = dedup.added[0].next_link
    assert link is not None and sorted(set(link.owner_of_group)) == [0, 1, 2]
    assert windows.added[0].senders == 1 + 1


def test_slots_keep_the_single_stage_names() -> None:
    assert (aggregate_slot(0, 3), aggregate_slot(2, 0)) == ("aggregate-3", "stage2-aggregate-0")
    plan = keyed_stage_plan(StageWiring(StageGraph((0,), (None,)), ([[0, 1]],), 1, 2), [1])
    assert plan == [StagePlan(0, 1, (), plan[0].placements)] and plan[0].regrouped[0].slot == "aggregate-0"
