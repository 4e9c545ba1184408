"""``eventray saga``: what happened to sagas, told from the lifecycle events their stage wrote.

- ``show CONFIG SAGA_ID``: one saga's timeline (each event with its step, attempt, status after it and reason),
  what it completed, compensated and retried, and its trace id; when the saga stage serves its state
  (``query:``, CQRS), also its state now, asked of the saga's owner through the query router (while the pipeline
  runs: else the timeline alone, saying why);
- ``list CONFIG [--stuck | --status STATUS] [--limit N]``: one line per saga (status, last step, age or duration,
  reason), newest start first.

The events are read from the pipeline's sinks (:mod:`cluster.commands.saga_io`: its Kafka events topic read
committed, else its Parquet or JSONL files) and folded into stories (:mod:`pipelines.sagas.history`), so
redelivered and out-of-order records tell the same story.

``--json`` prints for scripts. Exit 0 when the answer is there (a list may be empty), 1 when ``show`` finds no
event of the saga, 2 for bad usage or a config without a saga stage or a sink holding its events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import msgspec

from cluster.commands.cqrs import call_router, router_url
from cluster.commands.run_config import parse_set
from cluster.commands.saga_io import SINGLE_STAGE_NAME, SagaEvents, SagaStage, read_saga_events, saga_stage
from pipelines.config.kafka import resolve_kafka_secrets
from pipelines.config.pipeline import PipelineConfig, load_config
from pipelines.config.saga import SagaConfig
from pipelines.errors import ConfigError
from pipelines.sagas.contract import STATUS_STUCK, STATUSES
from pipelines.sagas.definition import load_saga
from pipelines.sagas.history import fold_stories, select_stories, stories_table, story_dict, story_lines

__all__ = ["DEFAULT_LIST_LIMIT", "add_saga_commands"]

DEFAULT_LIST_LIMIT = 50


def add_saga_commands(commands: Any) -> None:
    saga = commands.add_parser("saga", help="sagas: one saga's timeline, or a list (stuck ones, by status)")
    actions = saga.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = _action(actions, "show", "one saga's timeline: its events, steps completed and compensated, trace", _show)
    show.add_argument("saga_id", metavar="SAGA_ID", help="the saga id (the value of the stage's key column)")
    show.add_argument(
        "--url", default=None, help="the query router to ask for the saga's state now (default: the config's serve)"
    )
    listing = _action(actions, "list", "one line per saga: status, last step, age or duration, reason", _list)
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--stuck", action="store_true", help="only parked sagas (status stuck): same as --status stuck")
    which.add_argument("--status", choices=STATUSES, default=None, help="only sagas whose status is this")
    listing.add_argument(
        "--limit",
        type=_count,
        default=DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"at most N sagas, newest start first (default {DEFAULT_LIST_LIMIT}; 0: all)",
    )


def _action(actions: Any, name: str, summary: str, handler: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=summary, description=summary)
    parser.add_argument("config", help="the pipeline config with the saga (or saga_monitor) stage")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a config field")
    parser.add_argument(
        "--stage",
        default=None,
        metavar="NAME",
        help=f"the saga stage to read, by its stages[].name, when the pipeline has several ({SINGLE_STAGE_NAME!r}: "
        "the one of a pipeline written with keyed:)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    parser.set_defaults(func=handler)
    return parser


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, 0 or more")
    return int(text)


def _load(args: argparse.Namespace) -> tuple[PipelineConfig, SagaStage]:
    config = load_config(args.config, parse_set(args.set))
    stage = saga_stage(config, args.stage)  # before secrets: a config without the stage needs none
    if config.kafka is not None:  # only the connection: the reader needs no mask or checkpoint key
        config = config.model_copy(update={"kafka": resolve_kafka_secrets(config.kafka, os.environ)})
    return config, stage


def _read(config: PipelineConfig, stage: SagaStage, saga_id: str | None) -> SagaEvents:
    return asyncio.run(read_saga_events(config, stage, saga_id, progress=_to_stderr))


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _json(value: Any) -> str:
    """Valid JSON for scripts (anything unknown as its text)."""
    return msgspec.json.encode(value, enc_hook=str).decode()


def _show(args: argparse.Namespace) -> int:
    config, stage = _load(args)
    events = _read(config, stage, args.saga_id)
    story = fold_stories(events.rows, stage.key).get(args.saga_id)
    live, unanswered = _state_now(args, config, stage)
    if story is None and live is None:
        print(f"eventray: no lifecycle events of saga {args.saga_id!r} in {events.source}", file=sys.stderr)
        return 1
    if args.json:
        print(_json({**(story_dict(story) if story else {"saga_id": args.saga_id}), "now": live,
                     "now_unanswered": unanswered}))  # fmt: skip
        return 0
    if story is not None:
        print("\n".join(story_lines(story)))
    if live is not None:
        print(f"now (asked of its owner): status {live['status']}, step {live['step_name']}, attempt "
              f"{live['attempt']}, reason {live['reason']}")  # fmt: skip
    elif unanswered:
        print(f"now: not asked ({unanswered})")
    return 0


def _state_now(args: argparse.Namespace, config: PipelineConfig, stage: SagaStage) -> tuple[Any, str | None]:
    """The saga's state as its owner holds it, through the query router, when the stage serves it (``query:``);
    (None, why) when it does not, or the router does not answer."""
    if not isinstance(stage, SagaConfig) or stage.query is None:
        return None, None
    view = stage.query.view
    try:
        answer = call_router(router_url(args), lambda client: client.view(view, args.saga_id))
    except ConfigError as error:
        return None, str(error)
    if not answer.get("found"):
        return None, None
    state: dict[str, Any] = dict(answer["value"])
    steps = load_saga(stage.saga, stage.options).steps  # the state names steps by position
    state["step_name"] = steps[state["step"]].name if 0 <= state.get("step", -1) < len(steps) else None
    return state, None


def _list(args: argparse.Namespace) -> int:
    config, stage = _load(args)
    events = _read(config, stage, None)
    stories = fold_stories(events.rows, stage.key)
    status = STATUS_STUCK if args.stuck else args.status
    matching = select_stories(stories.values(), status)
    shown = matching[: args.limit] if args.limit else matching
    if args.json:
        answer = {"sagas": [story_dict(story, with_events=False) for story in shown],
                  "matching": len(matching), "total": len(stories), "source": events.source}  # fmt: skip
        print(_json(answer))
        return 0
    what = f"{status} saga(s)" if status else "saga(s)"
    if not matching:
        print(f"no {what} among {len(stories):,} in {events.source}")
        return 0
    print("\n".join(stories_table(shown, now_ms=int(time.time() * 1000))))
    more = f" (the newest {len(shown):,}: --limit 0 shows all)" if len(shown) < len(matching) else ""
    print(f"{len(matching):,} {what} of {len(stories):,} in {events.source}{more}")
    return 0
