"""The query router: serves the views of a pipeline's queryable keyed stages from the actors that own their keys.

One named actor per pipeline (``<pipeline>-query-router``, made by the Supervisor when a stage has ``query``),
with an HTTP endpoint (``serve``):

- ``GET /views`` — the views, their key column and the consistency modes each offers.
- ``GET /views/{view}/{key}?consistency=latest|committed&min_position=<aggregate>@<version>&format=json|arrow``
- ``POST /views/{view}/lookup`` with ``{"keys": [...], "consistency": ...}`` — a batch (``?format=arrow``: an
  Arrow IPC stream of ``key``, ``found``, ``value`` as JSON text).

The Supervisor pushes the key-group -> owner table at every assignment change (:meth:`QueryRouter.update`), and
withdraws it when a topology fails (:meth:`QueryRouter.suspend`), so a query never looks an actor up: the key's
group (the shuffle's hash) names the owner. The router outlives a Supervisor (a detached actor: a restarted
Supervisor publishes to it again) and holds the table of each pipeline that publishes to it: a view is served by the
first, and a rebuild of the view (``eventray cqrs rebuild``, :mod:`cluster.cqrs.rebuild`) stands by until
:meth:`QueryRouter.switch` serves the view from it. The last pipeline to :meth:`QueryRouter.withdraw` stops it.
During a move or a recovery a query waits and retries inside the router; only past ``serve.retry_bound_s`` is it
answered 503 with ``Retry-After``. A query with ``min_position`` that the owner has not applied within
``serve.position_wait_s`` is answered 504 with how far the owner is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
from aiohttp import web

from cluster.control.handles import OwnerGone, ask_owner, owner_dead
from cluster.cqrs.routing import StageOwners, ViewTable
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.query import QueryConfig
from pipelines.errors import ConfigError, EventrayError, FatalError
from pipelines.stages.plan import compile_pipeline
from pipelines.state.queryable import ViewAnswer, WantedPosition, canonical_key

__all__ = ["Lookup", "QueryError", "QueryRouter", "SwitchRefused", "router_name", "served_as"]

log = logging.getLogger(__name__)

_FIRST_RETRY_S = 0.02
_LAST_RETRY_S = 0.5
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def router_name(pipeline: str) -> str:
    return f"{pipeline}-query-router"


def served_as(config: PipelineConfig) -> str:
    """What a router made from ``config`` serves (each view, its key column and type), where, and with which
    bounds: a router found running serves a pipeline's views only when it is the same (otherwise it is one a
    driver left behind with another config, and is replaced), and a rebuild publishes only to a router that
    serves its views alike."""
    compiled = compile_pipeline(config).stages
    views = {}
    for stage, query in config.query_views.items():
        key = compiled[stage].config.keyed_stage
        assert key is not None  # a queryable stage is keyed
        key_type = str(compiled[stage].input_schema.field(key.key).type)
        views[query.view] = query.model_dump(mode="json") | {"key": key.key, "key_type": key_type}
    serve = config.serve.model_dump(mode="json", exclude={"rebuild_of"})
    return msgspec.json.encode({"views": views, "serve": serve}).decode()


class SwitchRefused(FatalError):
    """A view cannot be switched to the pipeline asked: it publishes no owners of the view to this router."""


class QueryError(EventrayError):
    """A query that cannot be answered: ``status`` is the HTTP status it is answered with (500 unless said),
    ``detail`` what the answer's body adds to the message."""

    def __init__(self, message: str, status: int = 500, retry_after_s: float | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (_query_error, (str(self), self.status, self.retry_after_s, self.detail))

    def as_json(self) -> dict[str, Any]:
        """The answer's body: the message as ``error``, and the detail."""
        return {"error": str(self), **self.detail}


@dataclass(frozen=True)
class Lookup:
    """The router's answer: a value per key (None: the key has none), with the consistency it was read at and,
    for a read-your-writes query, the position it reflects."""

    view: str
    keys: list[str]
    values: list[Any]
    consistency: str
    position: str | None = None
    epochs: list[int | None] | None = None  # committed: per key, the checkpoint its owner's answer is of

    def point(self) -> dict[str, Any]:
        value = self.values[0]
        answer = {"view": self.view, "key": self.keys[0], "found": value is not None, "value": value,
                  "consistency": self.consistency}  # fmt: skip
        if self.epochs is not None:
            answer["epoch"] = self.epochs[0]
        return answer | ({"position": self.position} if self.position is not None else {})

    def batch(self) -> dict[str, Any]:
        answer = {"view": self.view, "consistency": self.consistency, "keys": self.keys, "values": self.values}
        return answer | ({"epochs": self.epochs} if self.epochs is not None else {})

    def arrow(self) -> bytes:
        table = pa.table({
            "key": pa.array(self.keys, pa.string()),
            "found": pa.array([value is not None for value in self.values], pa.bool_()),
            "value": pa.array([None if v is None else msgspec.json.encode(v).decode() for v in self.values],
                              pa.string()),
        })  # fmt: skip
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return bytes(sink.getvalue().to_pybytes())


class QueryRouter:
    """Routes queries of a pipeline's views to their owners (see the module docstring)."""

    def __init__(self, config: PipelineConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._views: dict[str, QueryConfig] = {query.view: query for query in config.query_views.values()}
        compiled = compile_pipeline(config).stages
        self._keys: dict[str, str] = {}
        self._key_types: dict[str, pa.DataType] = {}
        for stage, query in config.query_views.items():
            key = compiled[stage].config.keyed_stage
            assert key is not None  # a queryable stage is keyed
            self._keys[query.view] = key.key
            self._key_types[query.view] = compiled[stage].input_schema.field(key.key).type
        self._tables: dict[str, ViewTable | None] = {}  # by pipeline; None: its topology is recovering
        self._serving: dict[str, str] = {}  # view -> the pipeline whose owners answer it
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._queues: dict[tuple[int, int, str], _OwnerQueue] = {}  # by (owners table, owner, consistency)
        self._draining: set[asyncio.Task[None]] = set()
        self.retries = 0
        self.unavailable = 0  # 503s answered
        self.gathered_calls = 0  # calls to owners that carried gathered point queries

    async def serve(self, host: str | None = None, port: int | None = None) -> int:
        """Start the HTTP endpoint (``serve`` of the config unless given); return the port it listens on (the
        one it listens on already when it was started before, by an earlier Supervisor of the pipeline)."""
        if self._port is not None:
            return self._port
        app = web.Application()
        app.add_routes([
            web.get("/views", self._http_views),
            web.get("/views/{view}/{key}", self._http_point),
            web.post("/views/{view}/lookup", self._http_batch),
            web.get("/health", self._http_health),
        ])  # fmt: skip
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        serve = self._config.serve
        host, port = host or serve.host, serve.port if port is None else port
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as error:
            await self._runner.cleanup()
            raise ConfigError(
                f"serve.port: the query router cannot listen on {host}:{port} ({error.strerror}); set serve.port to "
                "a free port, or 0 for any"
            ) from None
        bound: int = self._runner.addresses[0][1]
        self._port = bound
        log.warning("pipeline %s: views %s served on http://%s:%d", self._config.name, sorted(self._views),
                    host, bound)  # fmt: skip
        return bound

    async def update(self, table: ViewTable, claim: bool = True) -> list[str]:
        """A pipeline's owners from now on (its Supervisor's push after an assignment); return the views served
        from them. With ``claim``, a view is served from them when no pipeline serves it, or when the one
        serving it is gone (its owners dead: a driver killed after a rebuild switched to it); a rebuild
        publishes without, standing by, until it has been switched to."""
        unknown = sorted(set(table.views) - set(self._views))
        if unknown:
            log.warning("pipeline %s publishes views %s, which this router does not serve", table.pipeline, unknown)
        self._tables[table.pipeline] = table
        if claim:
            for view in table.views:
                serving = self._serving.get(view)
                if serving is None or (serving != table.pipeline and await self._gone(serving, view)):
                    self._serving[view] = table.pipeline
        self._changed_tables()
        return sorted(view for view, pipeline in self._serving.items() if pipeline == table.pipeline)

    async def suspend(self, pipeline: str | None = None) -> None:
        """The pipeline's topology failed (``pipeline`` None: the router's own): hold the queries of the views
        it serves until its next :meth:`update` (or their retry bound). A pipeline that withdrew is not held."""
        if (pipeline or self._config.name) in self._tables:
            self._tables[pipeline or self._config.name] = None

    async def switch(self, view: str, pipeline: str) -> tuple[str | None, list[str]]:
        """Serve ``view`` from ``pipeline``'s owners from now on, and with it every other view of the pipeline
        that served it which ``pipeline`` publishes too (that pipeline is replaced as a whole); return that
        pipeline and the views switched. Queries under way finish with the owners they asked; their retries
        and new queries go to ``pipeline``."""
        table = self._tables.get(pipeline)
        if view not in self._views or table is None or view not in table.views:
            raise SwitchRefused(
                f"view {view!r} cannot be switched to pipeline {pipeline!r}: it publishes no owners of it to this "
                f"router (it publishes {sorted(table.views) if table else 'nothing'}; this router serves "
                f"{sorted(self._views)})"
            )
        before = self._serving.get(view)
        views = sorted({view} | {other for other, served_by in self._serving.items()
                                 if before is not None and served_by == before and other in table.views})  # fmt: skip
        for switched in views:
            self._serving[switched] = pipeline
        self._changed_tables()
        log.warning("views %s are served by pipeline %s from now on (they were %s)", views, pipeline, before)
        return before, views

    async def withdraw(self, pipeline: str) -> bool:
        """The pipeline stopped: forget its owners (the views it served wait for another to claim them);
        True when no pipeline is left, and the router can stop."""
        self._tables.pop(pipeline, None)
        self._serving = {view: served_by for view, served_by in self._serving.items() if served_by != pipeline}
        return not self._tables

    async def serving(self) -> dict[str, str | None]:
        """Each view and the pipeline whose owners answer it (None: no pipeline serves it now)."""
        return {view: self._serving.get(view) for view in sorted(self._views)}

    async def served(self) -> str:
        """:func:`served_as` of the config the router was made with."""
        return served_as(self._config)

    async def stats(self) -> dict[str, int]:
        return {"retries": self.retries, "unavailable": self.unavailable}

    async def close(self) -> None:
        """Stop answering HTTP; the calls gathered to owners still in flight finish first."""
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.gather(*self._draining, return_exceptions=True)

    def _changed_tables(self) -> None:
        """Wake the queries waiting for owners (a move, a recovery, a switch); their calls in flight drain."""
        self._queues = {key: queue for key, queue in self._queues.items() if queue.in_flight}
        self._changed.set()
        self._changed = asyncio.Event()

    async def _gone(self, pipeline: str, view: str) -> bool:
        """Whether ``pipeline``, serving ``view``, is gone: it withdrew, or an owner of its table is dead (a
        recovering pipeline, whose table is withdrawn for the time, is not gone)."""
        if pipeline not in self._tables:
            return True
        table = self._tables[pipeline]
        if table is None or not table.views.get(view):
            return False
        owners = table.views[view].actors
        return bool(owners) and await owner_dead(owners[0])

    def _table(self, view: str) -> ViewTable | None:
        """The table ``view`` is answered from now (None: no pipeline serves it, or its topology recovers)."""
        pipeline = self._serving.get(view)
        return None if pipeline is None else self._tables.get(pipeline)

    async def lookup(
        self, view: str, keys: Sequence[str], consistency: str | None = None, min_position: str | None = None
    ) -> Lookup:
        """The values of ``keys`` in ``view`` from their owners; raises :class:`QueryError`."""
        query = self._views.get(view)
        if query is None:
            raise QueryError(status=404, message=f"no view {view!r}; the views are {sorted(self._views)}")
        mode = consistency or query.consistency[0]
        if mode not in query.consistency:
            raise QueryError(status=400, message=f"view {view!r} offers consistency {query.consistency}, not {mode!r}")
        if min_position is not None:
            if query.position is None:
                raise QueryError(
                    status=400, message=f"view {view!r} has no query.position: it cannot wait for a min_position"
                )
            if len(keys) != 1:
                raise QueryError(
                    status=400, message="min_position applies to a point query (one key): the owner of that key waits"
                )
            try:
                WantedPosition.parse(min_position)
            except ValueError as error:
                raise QueryError(status=400, message=str(error)) from None
        values: list[Any] = [None] * len(keys)
        epochs: list[int | None] = [None] * len(keys)
        canonical = [canonical_key(key, self._key_types[view]) for key in keys]
        asked = [position for position, key in enumerate(canonical) if key is not None]  # others are no key
        if not asked:
            return Lookup(view, list(keys), values, mode, None, epochs if mode == "committed" else None)
        answers = await self._until_applied(view, [key for key in canonical if key is not None], mode, min_position)
        reached, applied = True, None
        for positions, answer in answers:
            for position, value in zip(positions, answer.values, strict=True):
                values[asked[position]] = value
                epochs[asked[position]] = answer.epoch
            reached, applied = reached and answer.reached, answer.applied_version
        if not reached:
            waited_s = self._config.serve.position_wait_s
            message = f"the owner of {keys[0]!r} has not applied {min_position} within {waited_s} s"
            raise QueryError(status=504, message=message, wanted=min_position, applied=applied)
        return Lookup(view, list(keys), values, mode, min_position, epochs if mode == "committed" else None)

    async def _until_applied(
        self, view: str, keys: list[str], mode: str, min_position: str | None
    ) -> list[tuple[list[int], ViewAnswer]]:
        """The owners' answers; with ``min_position``, once they applied it or ``serve.position_wait_s`` passed
        (the owner waits, in its position-wait threads; a move or a recovery meanwhile asks the next owner for
        the time left)."""
        deadline = self._clock() + self._config.serve.position_wait_s
        while True:
            left_s = max(0.0, deadline - self._clock())
            answers = await self._from_owners(view, keys, mode, min_position, 0.0 if min_position is None else left_s)
            if all(answer.reached for _, answer in answers) or self._clock() >= deadline:
                return answers

    async def _from_owners(
        self, view: str, keys: list[str], mode: str, min_position: str | None, position_wait_s: float
    ) -> list[tuple[list[int], ViewAnswer]]:
        """Ask each owner for its keys; retry through moves and recoveries up to the bound."""
        bound_s = self._config.serve.retry_bound_s
        deadline = self._clock() + bound_s
        wait_s = _FIRST_RETRY_S
        while True:
            table = self._table(view)
            try:
                owners = _owners(table, view)
                split = owners.split(keys)
                timeout_s = max(deadline - self._clock(), _FIRST_RETRY_S) + position_wait_s
                calls = [self._ask(owners, index, [keys[p] for p in positions], mode, min_position,
                                   position_wait_s, timeout_s)
                         if min_position is not None else
                         self._gathered(owners, index, [keys[p] for p in positions], mode, timeout_s)
                         for index, positions in split.items()]  # fmt: skip
                answers = await asyncio.gather(*calls)
                return list(zip(split.values(), answers, strict=True))
            except (_NoOwners, OwnerGone):
                left_s = deadline - self._clock()
                if left_s <= 0:
                    self.unavailable += 1
                    message = f"view {view!r} is moving or recovering: no owner answered within {bound_s} s"
                    raise QueryError(message, 503, retry_after_s=1.0) from None
                self.retries += 1
                await self._next_table(view, table, min(wait_s, left_s))
                wait_s = min(wait_s * 2, _LAST_RETRY_S)

    async def _next_table(self, view: str, seen: ViewTable | None, wait_s: float) -> None:
        """Wait up to ``wait_s`` for a table of ``view`` other than ``seen`` (a dead owner's replacement)."""
        now = self._table(view)
        if now is not seen and now is not None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), wait_s)

    async def _gathered(
        self, owners: StageOwners, index: int, keys: list[str], mode: str, timeout_s: float
    ) -> ViewAnswer:
        """``keys`` of owner ``index`` asked with the others' queries to it that arrive while a call to it is in
        flight: one call per owner at a time, each taking every query gathered meanwhile (no wait at low load,
        batches as the load grows). Queries waiting for a position are asked alone (their wait would hold the
        others)."""
        queue = self._queues.setdefault((id(owners), index, mode), _OwnerQueue(owners))
        answered: asyncio.Future[ViewAnswer] = asyncio.get_running_loop().create_future()
        queue.waiting.append((keys, answered))
        if not queue.in_flight:
            queue.in_flight = True
            self._draining.add(asyncio.create_task(self._drain(queue, owners, index, mode, timeout_s)))
        return await answered

    async def _drain(self, queue: _OwnerQueue, owners: StageOwners, index: int, mode: str, timeout_s: float) -> None:
        try:
            while queue.waiting:
                batch, queue.waiting = queue.waiting, []
                batch = [(keys, answered) for keys, answered in batch if not answered.done()]  # cancelled: dropped
                try:
                    keys = [key for keys, _ in batch for key in keys]
                    answer = await self._ask(owners, index, keys, mode, None, 0.0, timeout_s)
                except Exception as error:  # noqa: BLE001 - each query gathered gets it (and retries or fails)
                    for _, answered in batch:
                        if not answered.done():
                            answered.set_exception(error)
                    continue
                start = 0
                for keys, answered in batch:
                    if not answered.done():
                        values = answer.values[start : start + len(keys)]
                        answered.set_result(ViewAnswer(values, answer.consistency, True, None, answer.epoch))
                    start += len(keys)
                self.gathered_calls += 1
        finally:
            queue.in_flight = False
            for _, answered in queue.waiting:  # left by a cancelled drain: asked again by their own lookup
                if not answered.done():
                    answered.set_exception(OwnerGone("the call gathering this query was cancelled"))
            queue.waiting = []
            self._draining.discard(asyncio.current_task())

    @staticmethod
    async def _ask(
        owners: StageOwners, index: int, keys: list[str], mode: str, position: str | None, wait_s: float,
        timeout_s: float,
    ) -> ViewAnswer:  # fmt: skip
        try:
            return await ask_owner(owners.actors[index], keys, mode, position, wait_s, timeout_s)
        except OwnerGone:
            raise
        except Exception as error:  # noqa: BLE001 - the owner's own failure: answered 500, not retried
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise QueryError(status=500, message=f"the owner failed: {reason}") from None

    # HTTP

    async def _http_views(self, _: web.Request) -> web.Response:
        views = [
            {"view": name, "key": self._keys[name], "consistency": list(query.consistency),
             "min_position": query.position is not None, "pipeline": self._serving.get(name)}
            for name, query in sorted(self._views.items())
        ]  # fmt: skip
        return _json({"pipeline": self._config.name, "views": views})

    async def _http_health(self, _: web.Request) -> web.Response:
        ready = all(self._table(view) is not None for view in self._views)
        return _json({"ready": ready, "retries": self.retries, "unavailable": self.unavailable}, 200 if ready else 503)

    async def _http_point(self, request: web.Request) -> web.Response:
        view, key = request.match_info["view"], request.match_info["key"]
        args = request.query
        try:
            found = await self.lookup(view, [key], args.get("consistency"), args.get("min_position"))
        except QueryError as error:
            return _error(error)
        if args.get("format") == "arrow":
            return web.Response(body=found.arrow(), content_type=ARROW_STREAM)
        return _json(found.point())

    async def _http_batch(self, request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError as error:
            return _error(QueryError(status=400, message=f"the body is not JSON: {error}"))
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list) or not all(isinstance(key, str | int) for key in keys):
            return _error(QueryError(status=400, message='the body is {"keys": [key, ...]} (strings or integers)'))
        try:
            found = await self.lookup(request.match_info["view"], [str(key) for key in keys], body.get("consistency"))
        except QueryError as error:
            return _error(error)
        if request.query.get("format") == "arrow":
            return web.Response(body=found.arrow(), content_type=ARROW_STREAM)
        return _json(found.batch())


def _query_error(message: str, status: int, retry_after_s: float | None, detail: dict[str, Any]) -> QueryError:
    return QueryError(message, status, retry_after_s, **detail)


class _OwnerQueue:
    """Queries gathered for one owner while a call to it is in flight."""

    def __init__(self, owners: StageOwners) -> None:
        self.owners = owners  # held, so that its id (the queue's key) is not reused while the queue is
        self.in_flight = False
        self.waiting: list[tuple[list[str], asyncio.Future[ViewAnswer]]] = []


class _NoOwners(Exception):
    """No assignment is pushed (the topology is starting or recovering)."""


def _owners(table: ViewTable | None, view: str) -> StageOwners:
    if table is None:
        raise _NoOwners
    return table.views[view]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json")


def _error(error: QueryError) -> web.Response:
    response = _json(error.as_json(), error.status)
    if error.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    return response
