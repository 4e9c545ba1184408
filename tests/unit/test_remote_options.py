"""Ray options of the actors, applied in one place (cluster/control/remote.py)."""

from __future__ import annotations

from actors.aggregate_actor import AggregateActor
from actors.source_actor import SourceActor
from cluster.control.remote import _watched, aggregate_actor_options, source_actor_options
from pipelines.examples.orders import orders_pipeline


def test_actors_ask_for_custom_resources_when_configured() -> None:
    config = orders_pipeline(runtime__actor_resources={"eventray_slot": 1})

    assert source_actor_options(config, "s")["resources"] == {"eventray_slot": 1}
    assert aggregate_actor_options(config, "a")["resources"] == {"eventray_slot": 1}
    assert aggregate_actor_options(config, "a")["max_concurrency"] == 1, "one call at a time keeps sender order"


def test_no_custom_resources_by_default() -> None:
    config = orders_pipeline()

    assert "resources" not in source_actor_options(config, "s")
    assert source_actor_options(config, "s")["num_cpus"] == config.runtime.cpus_per_actor


def test_each_actor_class_is_made_a_ray_class_once_per_process() -> None:
    """Every ``ray.remote`` registers a new class that Ray keeps for the life of the process: a Supervisor that
    made one per actor it started grew at every recovery (the soak: about 340 KiB a recovery)."""
    assert _watched(SourceActor) is _watched(SourceActor)
    assert _watched(AggregateActor) is _watched(AggregateActor)
    assert _watched(SourceActor) is not _watched(AggregateActor)
