"""``eventray cqrs``: the command gateway and queries of a running pipeline's views.

- ``gateway CONFIG [CONFIG ...] [--port N]``: serve ``POST /commands/{aggregate}/{id}`` for the event-sourced
  pipelines of the configs (each under its pipeline's name) until Ctrl-C (:mod:`cluster.cqrs.gateway`);
- ``send AGGREGATE ID JSON [--gateway URL]``: one command through a gateway, printing its reply;
- ``views CONFIG``: the views a running pipeline serves;
- ``query CONFIG VIEW KEY [KEY ...] [--consistency M] [--min-position TOKEN]``: values from the view's owners;
- ``rebuild CONFIG VIEW --address ADDR [--max-lag N]``: rebuild a running pipeline's view from the events, switch
  the router to it once caught up, stop the pipeline that served it, and run on (:mod:`cluster.cqrs.rebuild`).

``--json`` prints for scripts. Exit 0 when every key has a value (or the command was accepted), 1 when one has
none (or the command was rejected), 2 for bad usage or an endpoint that does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from cluster.commands.run_config import parse_set
from cluster.cqrs.client import CqrsClient, CqrsError
from cluster.cqrs.gateway import CommandGateway
from pipelines.config.pipeline import PipelineConfig, load_config
from pipelines.config.secrets import resolve_secrets
from pipelines.errors import ConfigError

__all__ = ["add_cqrs_commands"]

DEFAULT_GATEWAY_PORT = 8096


def add_cqrs_commands(commands: Any) -> None:
    cqrs = commands.add_parser("cqrs", help="CQRS: the command gateway, and queries of a running pipeline's views")
    actions = cqrs.add_subparsers(dest="action", required=True, metavar="ACTION")
    gateway = _action(actions, "gateway", "serve POST /commands/{aggregate}/{id} until Ctrl-C", _gateway)
    gateway.add_argument("configs", nargs="+", metavar="CONFIG", help="event-sourced pipelines reading Kafka")
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    gateway.add_argument("--port", type=int, default=DEFAULT_GATEWAY_PORT, help="default: %(default)s; 0: any")
    gateway.add_argument("--reply-timeout-s", type=float, default=30.0, help="wait for a reply (default: 30)")
    send = _action(actions, "send", "send one command through a gateway and print its reply", _send)
    send.add_argument("aggregate", help="the aggregate's name (the event-sourced pipeline's name)")
    send.add_argument("id", help="the aggregate id")
    send.add_argument("body", help='the command as JSON, e.g. \'{"command_type": "Deposit", "amount_cents": 500}\'')
    send.add_argument("--gateway", default=f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}", metavar="URL")
    views = _action(actions, "views", "list the views a running pipeline serves", _views)
    views.add_argument("config", help="the pipeline config with query: on a keyed stage")
    query = _action(actions, "query", "read keys of a view from the actors that own them", _query)
    query.add_argument("config", help="the pipeline config with query: on a keyed stage")
    query.add_argument("view", help="the view's name (query.view)")
    query.add_argument("keys", nargs="+", metavar="KEY", help="keys of the view")
    query.add_argument("--consistency", choices=["latest", "committed"], default=None, help="default: the view's")
    query.add_argument("--min-position", default=None, metavar="TOKEN",
                       help="a command's read_token: answer once the owner applied it (one key)")  # fmt: skip
    rebuild = _action(actions, "rebuild", "rebuild a running pipeline's view from its events and switch to it "
                      "without a gap; then run as the view's pipeline until Ctrl-C", _rebuild)  # fmt: skip
    rebuild.add_argument("config", help="the pipeline config (its projection code may be new: it is what runs)")
    rebuild.add_argument("view", help="the view to rebuild (query.view)")
    rebuild.add_argument("--address", default=None, help="the Ray cluster the pipeline runs on (default: RAY_ADDRESS)")
    rebuild.add_argument(
        "--max-lag",
        type=int,
        default=1000,
        metavar="RECORDS",
        help="switch once the rebuild's checkpoint is this close to the log ends (default: 1000)",
    )
    rebuild.add_argument(
        "--keep-previous",
        action="store_true",
        help="leave the pipeline that served the view running (it serves it no more)",
    )
    rebuild.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a field")


def _action(actions: Any, name: str, summary: str, handler: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=summary, description=summary)
    if name in ("views", "query"):
        parser.add_argument("--url", default=None, help="the query router (default: the config's serve)")
        parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a field")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    parser.set_defaults(func=handler)
    return parser


def router_url(args: argparse.Namespace) -> str:
    """``--url``, else the query router of the config's ``serve`` (a listen-all host asked on loopback)."""
    if args.url:
        return str(args.url).rstrip("/")
    config = load_config(args.config, parse_set(args.set))
    if not config.query_views:
        raise ConfigError(f"{args.config}: no keyed stage has query:, so the pipeline serves no view")
    host = "127.0.0.1" if config.serve.host in ("0.0.0.0", "::") else config.serve.host  # noqa: S104 - a listen-all address
    return f"http://{host}:{config.serve.port}"


def _gateway(args: argparse.Namespace) -> int:
    configs: dict[str, PipelineConfig] = {}
    for path in args.configs:
        config = resolve_secrets(load_config(path), os.environ)
        configs[config.name] = config

    async def serve() -> None:
        gateway = CommandGateway(configs, reply_timeout_s=args.reply_timeout_s)
        port = await gateway.start(args.host, args.port)
        urls = {name: f"http://{args.host}:{port}/commands/{name}/<id>" for name in configs}
        print(json.dumps({"gateway": urls}) if args.json else "\n".join(f"POST {url}" for url in urls.values()),
              flush=True)  # fmt: skip
        try:
            await asyncio.Event().wait()
        finally:
            await gateway.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def _send(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.body)
    except json.JSONDecodeError as error:
        raise ConfigError(f"the command body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ConfigError('the command body is a JSON object, e.g. {"command_type": "Open"}')
    reply = call_router(args.gateway, lambda client: client.command(args.aggregate, args.id, body), gateway=True)
    _print(args, reply, [reply])
    return 0 if reply["status"] == "accepted" else 1


def _views(args: argparse.Namespace) -> int:
    url = router_url(args)

    async def listed(client: CqrsClient) -> Any:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/views") as response:
            return await response.json()

    answer = call_router(url, listed)
    _print(args, answer, answer["views"])
    return 0


def _query(args: argparse.Namespace) -> int:
    url = router_url(args)
    if args.min_position is not None and len(args.keys) != 1:
        raise ConfigError("--min-position waits on the owner of one key: give one KEY")

    async def asked(client: CqrsClient) -> Any:
        if len(args.keys) == 1:
            found = await client.view(args.view, args.keys[0], args.consistency, args.min_position)
            return [found]
        values = await client.views(args.view, args.keys, args.consistency)
        return [{"view": args.view, "key": key, "found": value is not None, "value": value}
                for key, value in zip(args.keys, values, strict=True)]  # fmt: skip

    answers: list[dict[str, Any]] = call_router(url, asked)
    _print(args, answers, [{"key": a["key"], "found": a["found"], "value": json.dumps(a["value"])} for a in answers])
    return 0 if all(answer["found"] for answer in answers) else 1


def _rebuild(args: argparse.Namespace) -> int:
    from cluster.control.run_report import summary_json  # noqa: PLC0415 - Ray and the runtime load only here
    from cluster.cqrs.rebuild import rebuild_view  # noqa: PLC0415

    config = load_config(args.config, parse_set(args.set))
    if args.max_lag < 0:
        raise ConfigError("--max-lag is a number of records, 0 or more")
    console = Console(stderr=True, soft_wrap=True)  # a report is one line, also in a log
    try:
        rebuilt = rebuild_view(config, args.view, args.address, args.max_lag, console.print,
                               stop_previous=not args.keep_previous)  # fmt: skip
    except KeyboardInterrupt:
        return 130
    result = {"pipeline": rebuilt.summary.pipeline, "view": args.view, "previous": rebuilt.previous,
              "switched_after_s": rebuilt.switched_after_s}  # fmt: skip
    if args.json:
        print(json.dumps(result | {"summary": json.loads(summary_json(rebuilt.summary))}))
    else:
        _print(args, result, [result])
    return 0 if rebuilt.previous is not None or rebuilt.switched_after_s is not None else 1


def call_router(url: str, ask: Any, gateway: bool = False) -> Any:
    """``ask(client)`` of the router (or gateway) at ``url``; :class:`ConfigError` saying why it did not answer."""

    async def call() -> Any:
        async with CqrsClient(url if gateway else None, url, retries=0) as client:
            return await ask(client)

    try:
        return asyncio.run(call())
    except CqrsError as error:
        raise ConfigError(f"{url}: {error}") from None
    except aiohttp.ClientConnectionError as error:
        what = "gateway (eventray cqrs gateway)" if gateway else "query router (is the pipeline running?)"
        raise ConfigError(f"no {what} answers at {url}: {error}") from None


def _print(args: argparse.Namespace, whole: Any, rows: list[dict[str, Any]]) -> None:
    if args.json:
        print(json.dumps(whole))
        return
    table = Table(*(rows[0].keys() if rows else []))
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    Console().print(table)
