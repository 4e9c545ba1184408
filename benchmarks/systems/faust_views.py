"""Faust (faust-streaming): the ``balances`` view as its documentation shows a queryable table, the peer of
eventray's query router in ``benchmarks/cqrs.py``.

An agent folds the account events (``pipelines.examples.account_views.balance_after``, the fold eventray's
projection runs) into a ``Table`` keyed by account; web views answer ``GET /balances/{key}/`` through
``app.table_route`` (the request goes to the worker that owns the key's partition; with one worker, this one),
``GET /lookup/?keys=a,b,...`` (a batch, which Faust has no view for: written here the same way) and
``GET /applied/`` (events folded so far, for the driver to wait on).

    python -m benchmarks.systems.faust_views BOOTSTRAP TOPIC WEB_PORT DATADIR
"""

from __future__ import annotations

import sys
import time
from typing import Any

import faust
from faust.web import Request, Response, View

from pipelines.examples.account_views import balance_after

__all__ = ["main"]


def main(bootstrap: str, topic: str, web_port: int, datadir: str) -> None:
    app = faust.App(
        f"bench-faust-views-{time.time_ns()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=True,
        web_port=web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        topic_partitions=4,
        consumer_auto_offset_reset="earliest",
        datadir=datadir,
    )
    events = app.topic(topic, key_type=str, value_serializer="json")
    balances = app.Table("balances", default=lambda: None, key_type=str, value_type=dict, partitions=4)
    applied = [0]

    @app.agent(events)
    async def fold(stream: Any) -> None:
        async for key, event in stream.items():
            balances[key] = balance_after(balances[key], event)
            applied[0] += 1

    @app.page("/balances/{key}/")
    @app.table_route(table=balances, match_info="key")
    async def balance(web: View, request: Request, key: str) -> Response:
        value = balances[key]
        return web.json({"key": key, "found": value is not None, "value": value})

    @app.page("/lookup/")
    async def lookup(web: View, request: Request) -> Response:
        keys = request.query["keys"].split(",")
        return web.json({"keys": keys, "values": [balances[key] for key in keys]})

    @app.page("/applied/")
    async def applied_events(web: View, request: Request) -> Response:
        return web.json({"applied": applied[0]})

    sys.argv = ["faust", "worker", "--loglevel", "warn", "--web-port", str(web_port)]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
