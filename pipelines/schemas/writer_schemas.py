"""What the registry says of each schema id a source meets, learned ahead of decoding and kept (bounded).

:meth:`WriterSchemas.prepare` (async, in the source's event loop) reads the schema ids of a fetch
(:func:`~pipelines.schemas.wire_format.schema_ids`) and asks the registry, concurrently, for the ids it has not
seen; an unreachable registry is retried until ``registry.unavailable_s``, then :class:`RegistryUnavailable`
is raised (the source fails and recovers: no record is dead-lettered for the registry's fault). An id the
registry does not know is asked again after ``registry.unknown_retry_s``. :meth:`WriterSchemas.sorted_out`
then splits a fetch, without I/O, into groups of records of one readable schema id and the dead letters of the
others, each with its own error type.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pipelines.config.registry import RegistryConfig
from pipelines.io.records import RawBatch, dead_letters
from pipelines.schemas.registry_client import RegisteredSchema, RegistryClient, SchemaNotFound, with_retries
from pipelines.schemas.resolution import ReadPlan
from pipelines.schemas.wire_format import NOT_WIRE_FORMAT, schema_ids

__all__ = ["SCHEMA_MISMATCH", "UNKNOWN_SCHEMA", "PlanMaker", "SchemaGroup", "WriterSchemas", "rejected"]

UNKNOWN_SCHEMA = "unknown_schema"
SCHEMA_MISMATCH = "schema_mismatch"
_CONCURRENT_REQUESTS = 8  # a fetch of garbage with a magic byte 0 must not open a request per record

#: (client, the schema as registered, the topic it was met on) -> the plan to read its records
PlanMaker = Callable[[RegistryClient, RegisteredSchema, str], Awaitable[ReadPlan]]


@dataclass(frozen=True)
class SchemaGroup:
    """The records of one fetch (``positions``, increasing) written with one readable schema."""

    plan: ReadPlan
    positions: npt.NDArray[np.int64]


class WriterSchemas:
    """``per_topic``: a plan is of a (topic, schema id), not of an id alone (upcasters need the id's version
    under each topic's subject, which may differ from topic to topic)."""

    def __init__(self, registry: RegistryConfig, make_plan: PlanMaker, per_topic: bool = False) -> None:
        self._registry = registry
        self._make_plan = make_plan
        self._per_topic = per_topic
        self._plans: OrderedDict[tuple[str, int], ReadPlan] = OrderedDict()
        # ids the registry did not know -> when it was asked (monotonic), the oldest first
        self._unknown: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._client: RegistryClient | None = None
        self._asking = asyncio.Semaphore(_CONCURRENT_REQUESTS)

    def _key(self, topic: str, schema_id: int) -> tuple[str, int]:
        return (topic if self._per_topic else "", schema_id)

    async def prepare(self, raw: RawBatch) -> None:
        """Learn the writer schemas of every schema id in ``raw`` that is not known yet."""
        now = time.monotonic()
        wanted = [self._key(raw.topic, int(i)) for i in np.unique(schema_ids(raw.payloads)) if i != NOT_WIRE_FORMAT]
        retry_s = self._registry.unknown_retry_s
        missing = [k for k in wanted if k not in self._plans and now - self._unknown.get(k, -np.inf) >= retry_s]
        for key in wanted:
            if key in self._plans:
                self._plans.move_to_end(key)
        if not missing:
            return
        if self._client is None:
            self._client = RegistryClient(self._registry).open()
        plans = await asyncio.gather(*(self._plan_of(schema_id, raw.topic) for _, schema_id in missing))
        for (_, schema_id), plan in zip(missing, plans, strict=True):
            self.learn(schema_id, plan, raw.topic)
        while len(self._plans) > max(self._registry.cache_size, len(wanted)):
            self._plans.popitem(last=False)
        while len(self._unknown) > max(self._registry.cache_size, len(wanted)):
            self._unknown.popitem(last=False)

    def learn(self, schema_id: int, plan: ReadPlan | None, topic: str = "") -> None:
        """What the registry says of ``schema_id`` (None: it does not know it), for records of ``topic`` (any
        topic, unless plans are per topic); also to teach a decoder without asking a registry: a benchmark's
        warm cache, a unit test."""
        key = self._key(topic, schema_id)
        if plan is None:
            self._unknown[key] = time.monotonic()
            self._unknown.move_to_end(key)
        else:
            self._unknown.pop(key, None)
            self._plans[key] = plan

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def sorted_out(self, raw: RawBatch) -> tuple[list[SchemaGroup], list[pa.RecordBatch]]:
        """``raw`` split into groups of one readable schema id, and dead letters: ``undecodable`` (not in the wire
        format), ``unknown_schema``, ``schema_mismatch`` (the plan's refusal). Every id of ``raw`` must have been
        through :meth:`prepare` (else RuntimeError: a programming error, not the data's)."""
        ids = schema_ids(raw.payloads)
        letters: list[pa.RecordBatch] = []
        not_framed = np.flatnonzero(ids == NOT_WIRE_FORMAT)
        if len(not_framed):
            reason = "not in the Confluent wire format (magic byte 0, then a 4-byte schema id)"
            letters.append(rejected(raw, not_framed, reason, "undecodable"))
        groups = []
        for schema_id in np.unique(ids[ids != NOT_WIRE_FORMAT]).tolist():
            positions = np.flatnonzero(ids == schema_id)
            key = self._key(raw.topic, schema_id)
            plan = self._plans.get(key)
            if plan is None:
                if key not in self._unknown:
                    raise RuntimeError(f"schema id {schema_id} was not prepared: call prepare(raw) before decode")
                reason = f"schema id {schema_id} is not in the schema registry"
                letters.append(rejected(raw, positions, reason, UNKNOWN_SCHEMA))
            elif plan.refusal is not None:
                letters.append(rejected(raw, positions, plan.refusal, SCHEMA_MISMATCH))
            else:
                groups.append(SchemaGroup(plan, positions))
        return groups, letters

    async def _plan_of(self, schema_id: int, topic: str) -> ReadPlan | None:
        client = self._client
        assert client is not None

        async def ask() -> RegisteredSchema:
            async with self._asking:
                return await client.schema_by_id(schema_id)

        try:
            registered = await with_retries(ask, self._registry.unavailable_s)
        except SchemaNotFound:
            return None
        return await self._make_plan(client, registered, topic)


def rejected(
    raw: RawBatch, positions: npt.NDArray[np.int64], reasons: str | list[str], error_type: str
) -> pa.RecordBatch:
    """Dead letters for the records of ``raw`` at ``positions``, with one reason or one each."""
    texts = [reasons] * len(positions) if isinstance(reasons, str) else reasons
    return dead_letters(raw, pa.array(positions, pa.int64()), pa.array(texts, pa.string()), error_type)
