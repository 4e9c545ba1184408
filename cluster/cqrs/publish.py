"""The Supervisor's side of the query router: start it with the run (or find it running), push the key-group ->
owner table of each queryable stage at every assignment change, suspend it when the topology fails, withdraw it
when the run ends. A rebuild (``serve.rebuild_of``) publishes to the router of the pipeline it rebuilds, standing
by until ``eventray cqrs rebuild`` switches the view to it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cluster.control.handles import AggregateHandle, QueryRouterHandle
from cluster.cqrs.router import router_name, served_as
from cluster.cqrs.routing import StageOwners, ViewTable
from pipelines.config.pipeline import PipelineConfig
from pipelines.state.keygroups import owner_of_group

__all__ = ["ViewPublisher"]

log = logging.getLogger(__name__)


class ViewPublisher:
    """A pipeline's publisher of owners to its query router (the router of the pipeline it rebuilds, for a
    rebuild)."""

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self._rebuild_of = config.serve.rebuild_of
        self._router_name = router_name(self._rebuild_of or config.name)
        self._router = QueryRouterHandle(config, self._router_name)
        self._claim = self._rebuild_of is None  # a rebuild stands by until it is switched to
        self._generation = 0
        self.port: int | None = None

    async def start(self) -> int:
        """Start the router's HTTP endpoint (or find it running); return its port. A router left running with
        another config (by a driver that died) is replaced; a rebuild publishes to the one it finds."""
        if self._rebuild_of is None and await self._router.served() != served_as(self._config):
            log.warning("pipeline %s: the query router running was made with another config; replacing it",
                        self._config.name)  # fmt: skip
            self._router.kill()
            self._router = QueryRouterHandle(self._config, self._router_name)
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
        table = ViewTable(self._generation, views, self._config.name)
        served = await self._router.update(table, self._claim)
        if served is None:  # it died (with its node): the data path goes on
            log.warning("pipeline %s: the query router died; starting another", self._config.name)
            self._router.kill()
            self._router = QueryRouterHandle(self._config, self._router_name)
            self.port = await self._router.serve()
            served = await self._router.update(table, self._claim)
            if served is None:
                log.error("pipeline %s: the new query router died too; views are not served until the next "
                          "assignment", self._config.name)  # fmt: skip
                return
        self._claim = self._claim or bool(served)  # a rebuild switched to claims from then on (a new router)

    def suspend(self) -> None:
        """The topology failed: queries wait for the next :meth:`publish`."""
        self._router.suspend(self._config.name)

    async def close(self) -> None:
        """Withdraw the pipeline's owners; the last pipeline on the router stops it (its endpoint with it)."""
        if await self._router.withdraw(self._config.name):
            self._router.kill()
