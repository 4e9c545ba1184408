"""The one place where plain actor classes become Ray actors and get their options (ARCHITECTURE.md section 1)."""

from __future__ import annotations

import functools
from typing import Any

import ray

from actors import AggregateActor, SourceActor
from cluster.control.ray_runtime import NAMESPACE
from pipelines.config.pipeline import PipelineConfig

__all__ = [
    "POSITION_WAIT_GROUP",
    "QUERY_GROUP",
    "WATCHDOG_GROUP",
    "aggregate_actor_options",
    "remote_aggregate",
    "remote_query_router",
    "remote_source",
    "remote_supervisor",
    "source_actor_options",
]


WATCHDOG_GROUP = "watchdog"
"""The concurrency group ``alive()`` runs in (cluster/control/watchdog.py): its own thread, so a busy actor answers."""

QUERY_GROUP = "query"
"""The concurrency group an aggregate actor's ``query()`` runs in (cluster/cqrs/router.py): threads of their own, so
queries do not queue behind batches."""
QUERY_THREADS = 4
POSITION_WAIT_GROUP = "query-wait"
"""The concurrency group of queries that wait for a read-your-writes position: a waiting thread costs no CPU, and
waits in a group of their own never hold the queries that answer at once."""
POSITION_WAIT_THREADS = 16


def _actor_cpus(config: PipelineConfig) -> float:
    return config.runtime.cpus_per_actor


def _placement(config: PipelineConfig) -> dict[str, Any]:
    resources = dict(config.runtime.actor_resources)
    return {"num_cpus": _actor_cpus(config), **({"resources": resources} if resources else {})}


def source_actor_options(config: PipelineConfig, actor_id: str) -> dict[str, Any]:
    # An async actor: run() loops while progress()/stop() calls interleave at its await points.
    return {"name": actor_id, "namespace": NAMESPACE, "max_restarts": 0, **_placement(config)}


def aggregate_actor_options(config: PipelineConfig, actor_id: str) -> dict[str, Any]:
    # One call at a time keeps each sender's batches in order (ARCHITECTURE.md section 3).
    return {
        "name": actor_id,
        "namespace": NAMESPACE,
        **_placement(config),
        "max_concurrency": 1,
        "max_restarts": 0,
    }


@functools.cache
def _watched(actor_class: type, queries: bool = False) -> Any:
    """``actor_class`` as a Ray actor class with the watchdog's concurrency group (Ray takes concurrency groups
    in ``ray.remote``, not in ``.options``). Made once per process: each ``ray.remote`` registers a new class
    (a random function id), which Ray keeps for the life of the process and exports to the GCS again, so a
    Supervisor making one per actor grew by about 100 KB a recovery; a new Ray session re-exports it itself."""
    groups = {WATCHDOG_GROUP: 1, **({QUERY_GROUP: QUERY_THREADS, POSITION_WAIT_GROUP: POSITION_WAIT_THREADS}
                                    if queries else {})}  # fmt: skip
    return ray.remote(concurrency_groups=groups)(actor_class)  # type: ignore[call-overload]


def remote_source(config: PipelineConfig, actor_id: str) -> Any:
    return _watched(SourceActor).options(**source_actor_options(config, actor_id))


def remote_aggregate(config: PipelineConfig, actor_id: str) -> Any:
    return _watched(AggregateActor, queries=True).options(**aggregate_actor_options(config, actor_id))


def remote_query_router(name: str) -> Any:
    """The query router (cluster/cqrs/router.py): an async actor answering HTTP and routing queries; no CPU of its
    own (it waits on owners). Detached: it outlives the Supervisor that made it (a restarted Supervisor, or a
    rebuild's, publishes to the one running: ``get_if_exists``); the last pipeline to withdraw from it kills it."""
    from cluster.cqrs.router import QueryRouter  # noqa: PLC0415 - it calls owners through handles, which import this

    return ray.remote(QueryRouter).options(
        name=name, namespace=NAMESPACE, num_cpus=0, max_restarts=0, lifetime="detached", get_if_exists=True
    )


def remote_supervisor(supervisor_class: type, name: str) -> Any:
    # The Supervisor needs no CPU of its own: it waits on actors most of the time.
    return ray.remote(supervisor_class).options(name=name, namespace=NAMESPACE, num_cpus=0, max_restarts=0)
