"""The Supervisor's side of the query router: start it with the run, push the key-group -> owner table of each
queryable stage at every assignment change, withdraw it when the topology fails."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cluster.control.handles import AggregateHandle, QueryRouterHandle
from cluster.cqrs.router import router_name
from cluster.cqrs.routing import StageOwners, ViewTable
from pipelines.config.pipeline import PipelineConfig
from pipelines.state.keygroups import owner_of_group

__all__ = ["ViewPublisher"]

log = logging.getLogger(__name__)


class ViewPublisher:
    """Owns the pipeline's query router actor (it dies with the Supervisor that made it)."""

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self._router = QueryRouterHandle(config, router_name(config.name))
        self._generation = 0
        self.port: int | None = None

    async def start(self) -> int:
        """Start the router's HTTP endpoint; return its port."""
        self.port = await self._router.serve()
        return self.port

    async def publish(self, aggregates: Sequence[AggregateHandle], groups: Sequence[list[list[int]]],
                      max_key_groups: int) -> None:  # fmt: skip
        """The owners of each served stage: ``groups[stage][index]`` are the key groups of actor ``index`` of
        ``stage`` (the layout's wiring), ``aggregates`` the running actors, stage by stage."""
        self._generation += 1
        views: dict[str, StageOwners] = {}
        for stage, query in self._config.query_views.items():
            actors = tuple(handle.actor for handle in aggregates if handle.stage == stage)
            views[query.view] = StageOwners(actors, tuple(owner_of_group(groups[stage], max_key_groups)))
        table = ViewTable(self._generation, views)
        if not await self._router.update(table):  # it died (with its node): the data path goes on, views return
            log.warning("pipeline %s: the query router died; starting another", self._config.name)
            self._router.kill()
            self._router = QueryRouterHandle(self._config, router_name(self._config.name))
            self.port = await self._router.serve()
            if not await self._router.update(table):
                log.error("pipeline %s: the new query router died too; views are not served until the next "
                          "assignment", self._config.name)  # fmt: skip

    def suspend(self) -> None:
        """The topology failed: queries wait for the next :meth:`publish`."""
        self._router.suspend()

    def close(self) -> None:
        """Stop the router (its process ends, and its endpoint with it)."""
        self._router.kill()
