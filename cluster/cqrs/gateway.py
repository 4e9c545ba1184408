"""The command gateway: ``POST /commands/{aggregate}/{id}`` turns a JSON body into a command on the event-sourced
pipeline's commands topic and answers with its reply.

Each aggregate is an event-sourced pipeline config (``keyed: {type: event_sourced}`` reading a Kafka topic), under
the name commands use in their URL: the gateway produces the command (the body, with the aggregate id in the key
column, a ``command_id`` when the body has none and the command's time when the schema's event-time field is
missing) with an idempotent producer, keyed by the aggregate id, and waits for the reply with that command id on the
replies topic (read committed: a reply is visible once its events are). It answers
``{status, version, first_version, events, reason, duplicate, command_id, read_token}``: 200 accepted, 409
rejected, 504 when no reply came within the wait (send the same ``command_id`` again: the aggregate answers a
command id it has seen with its first reply). ``read_token`` is ``<aggregate id>@<version>``, the
``min_position`` that makes a query of a view read this write (:mod:`cluster.cqrs.router`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from actors.kafka.admin import partition_count
from actors.kafka.clients import start_or_stop
from pipelines.config.kafka import KafkaSourceConfig, client_options
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError

__all__ = ["Aggregate", "CommandGateway", "Reply", "aggregate_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Aggregate:
    """What the gateway needs of an event-sourced pipeline."""

    name: str
    commands_topic: str
    replies_topic: str
    key: str
    command_id_column: str
    time_column: str | None
    config: PipelineConfig


def aggregate_of(config: PipelineConfig, name: str | None = None) -> Aggregate:
    """``config``'s commands and replies; a :class:`ConfigError` naming what is missing when it is not an
    event-sourced pipeline reading Kafka."""
    stage = config.keyed_stages[0].keyed if len(config.keyed_stages) == 1 else None
    source = config.all_inputs[0].source
    if not isinstance(stage, EventSourcedConfig) or not isinstance(source, KafkaSourceConfig):
        raise ConfigError(
            f"pipeline {config.name!r}: the gateway sends commands to an event-sourced pipeline (keyed: "
            "{type: event_sourced}, one stage) reading a Kafka topic"
        )
    if config.kafka is None:
        raise ConfigError(f"pipeline {config.name!r} has no kafka section")
    time_column = config.all_inputs[0].schema.event_time_field
    return Aggregate(name or config.name, source.topic, stage.replies_topic, stage.key, stage.command_id_column,
                     time_column, config)  # fmt: skip


@dataclass(frozen=True)
class Reply:
    """A command's reply as the gateway answers it."""

    status: str
    version: int
    first_version: int | None
    reason: str | None
    duplicate: bool
    command_id: str
    aggregate_id: str

    @property
    def events(self) -> int:
        """Events the command stored (none when rejected or a duplicate)."""
        if self.status != "accepted" or self.first_version is None or self.duplicate:
            return 0
        return self.version - self.first_version + 1

    @property
    def read_token(self) -> str:
        return f"{self.aggregate_id}@{self.version}"

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "version": self.version, "first_version": self.first_version,
                "events": self.events, "reason": self.reason, "duplicate": self.duplicate,
                "command_id": self.command_id, "read_token": self.read_token}  # fmt: skip


class CommandGateway:
    """Serves ``POST /commands/{aggregate}/{id}`` for the event-sourced pipelines it is given (see the module
    docstring): one idempotent producer and one replies consumer (no group, read committed) per aggregate.

    A reply is matched to its command by (aggregate, aggregate id, command id): two commands with one id for two
    aggregates are two commands. Requests sending the same command at once share its reply."""

    def __init__(self, configs: Mapping[str, PipelineConfig], reply_timeout_s: float = 30.0) -> None:
        """``configs``: the event-sourced pipelines by the name commands use in their URL."""
        self._aggregates = {name: aggregate_of(config, name) for name, config in configs.items()}
        self._reply_timeout_s = reply_timeout_s
        self._pending: dict[tuple[str, str, str], _Waiting] = {}  # (aggregate, aggregate id, command id)
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._consumers: list[AIOKafkaConsumer] = []
        self._readers: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.sent = 0

    async def start(self, host: str = "127.0.0.1", port: int = 8096) -> int:
        """Start the Kafka clients (replies read from their end now, before any command is sent) and the HTTP
        endpoint; return the port it listens on."""
        for aggregate in self._aggregates.values():
            connection = aggregate.config.kafka
            assert connection is not None  # aggregate_of checked
            producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=1, **client_options(connection))
            await start_or_stop(producer)
            self._producers[aggregate.name] = producer
            consumer = AIOKafkaConsumer(enable_auto_commit=False, isolation_level="read_committed",
                                        **client_options(connection))  # fmt: skip
            await start_or_stop(consumer)
            self._consumers.append(consumer)
            count = await partition_count(connection, aggregate.replies_topic)
            partitions = [TopicPartition(aggregate.replies_topic, partition) for partition in range(count)]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for partition in partitions:  # resolve the end now: a reply produced from here on is read
                await consumer.position(partition)
            self._readers.append(asyncio.create_task(self._read_replies(aggregate, consumer)))
        app = web.Application()
        app.add_routes([web.post("/commands/{aggregate}/{id}", self._http_command)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound: int = self._runner.addresses[0][1]
        log.warning("command gateway for %s on http://%s:%d", sorted(self._aggregates), host, bound)
        return bound

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        for client in [*self._producers.values(), *self._consumers]:
            with contextlib.suppress(Exception):
                await client.stop()

    async def send(self, aggregate: str, aggregate_id: str, body: dict[str, Any]) -> Reply:
        """Send a command to ``aggregate_id`` and return its reply. ``KeyError``: no such aggregate;
        ``TimeoutError(command_id)``: no reply within the wait (send that command id again); a Kafka error: the
        command may not have been written."""
        target = self._aggregates.get(aggregate)
        if target is None:
            raise KeyError(f"no aggregate {aggregate!r}; the gateway serves {sorted(self._aggregates)}")
        command = dict(body)
        command[target.key] = aggregate_id
        command_id = str(command.get(target.command_id_column) or uuid.uuid4())
        command[target.command_id_column] = command_id
        if target.time_column is not None and command.get(target.time_column) is None:
            command[target.time_column] = int(time.time() * 1000)
        matched = (aggregate, aggregate_id, command_id)
        waiting = self._pending.get(matched)
        if waiting is None:
            waiting = self._pending[matched] = _Waiting(asyncio.get_running_loop().create_future())
        waiting.requests += 1
        try:
            await self._producers[aggregate].send_and_wait(
                target.commands_topic, msgspec.json.encode(command), key=aggregate_id.encode()
            )
            self.sent += 1
            try:
                return await asyncio.wait_for(asyncio.shield(waiting.reply), self._reply_timeout_s)
            except (TimeoutError, asyncio.TimeoutError):
                raise TimeoutError(command_id) from None
        finally:
            waiting.requests -= 1
            if waiting.requests == 0:  # answered, timed out or failed: nothing waits for it any more
                self._pending.pop(matched, None)

    async def _read_replies(self, aggregate: Aggregate, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            except Exception:  # a broker restarting: the consumer reconnects; the commands waiting time out
                log.exception("command gateway: reading %s failed; reading on in 1 s", aggregate.replies_topic)
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self._resolve(aggregate, record.value)

    def _resolve(self, aggregate: Aggregate, value: bytes | None) -> None:
        try:
            row = msgspec.json.decode(value or b"null")
        except msgspec.DecodeError:
            return  # not a reply this gateway wrote: nothing waits for it
        if not isinstance(row, dict) or row.get("status") is None:
            return
        aggregate_id = str(row.get(aggregate.key))
        waiting = self._pending.get((aggregate.name, aggregate_id, str(row.get("command_id"))))
        if waiting is None or waiting.reply.done():
            return
        waiting.reply.set_result(Reply(
            status=str(row["status"]), version=int(row.get("version") or 0), first_version=row.get("first_version"),
            reason=row.get("reason"), duplicate=bool(row.get("duplicate")), command_id=str(row["command_id"]),
            aggregate_id=aggregate_id,
        ))  # fmt: skip

    async def _http_command(self, request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read() or b"{}")
        except msgspec.DecodeError as error:
            return _json({"error": f"the body is not JSON: {error}"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "the body is a JSON object: the command's fields"}, 400)
        try:
            reply = await self.send(request.match_info["aggregate"], request.match_info["id"], body)
        except KeyError as error:
            return _json({"error": error.args[0]}, 404)
        except TimeoutError as error:
            return _json({"error": f"no reply within {self._reply_timeout_s} s; send the same command_id again",
                          "command_id": error.args[0] if error.args else None}, 504)  # fmt: skip
        except KafkaError as error:
            return _json({"error": f"the command could not be written to Kafka ({error}); send it again with "
                                   "the same command_id"}, 503)  # fmt: skip
        return _json(reply.body(), 200 if reply.status == "accepted" else 409)


@dataclass
class _Waiting:
    """A command's reply, and how many requests wait for it."""

    reply: asyncio.Future[Reply]
    requests: int = 0


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json")
