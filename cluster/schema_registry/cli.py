"""``eventray registry up|down|status``: the dev schema registry from a terminal. The only module here that prints.

Exit codes: 0 success (``status``: running and answering), 1 error (``status``: running but not answering),
3 ``status``: not running (the LSB convention).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from cluster.dev_services import config_from_args, display_path

from ._config import DEFAULT_PORT, DevRegistryConfig, registry_url_from_env
from ._errors import DevRegistryError
from ._maven_project import APICURIO_VERSION
from ._probe import registry_answers
from ._registry import RegistryStatus, RunningRegistry, registry_status, start_registry, stop_registry

__all__ = ["add_registry_commands"]

_EXIT_OK = 0
_EXIT_ERROR = 1
_EXIT_NOT_RUNNING = 3


def add_registry_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``registry`` with ``up``, ``down`` and ``status`` to ``subparsers``.

    Each leaf parser sets ``func(args) -> int`` (the exit code), to be called by the main CLI.
    """
    registry = subparsers.add_parser(
        "registry", help="run a local dev schema registry (Apicurio, Confluent-compatible API, loopback only)"
    )
    commands = registry.add_subparsers(dest="registry_command", required=True, metavar="{up,down,status}")

    up = commands.add_parser("up", help="start the dev registry (builds it with mvn on first use, a few minutes)")
    _add_common(up)
    up.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"HTTP port on 127.0.0.1 (default {DEFAULT_PORT}); 0 picks a free one",
    )
    up.set_defaults(func=_up)

    down = commands.add_parser("down", help="stop the dev registry started from this state dir")
    _add_common(down)
    down.set_defaults(func=_down)

    status = commands.add_parser("status", help="say whether the dev registry runs and answers, and its URL")
    _add_common(status)
    status.set_defaults(func=_status)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="log, pid file and registry.json (default: .eventray/registry)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535)")
    return port


def _up(args: argparse.Namespace) -> int:
    external = registry_url_from_env()
    if external is not None:
        _say(args, {"url": external, "external": True},
             f"SCHEMA_REGISTRY_URL={external} points at an existing registry; not starting one.")  # fmt: skip
        return _EXIT_OK
    cfg = config_from_args(DevRegistryConfig, args, port=args.port)
    current = registry_status(cfg.state_dir)
    if current.running:
        _say(args, _status_facts(current, cfg.state_dir),
             f"Schema registry already running at {current.url or '(starting)'} (pid {current.pid}).")  # fmt: skip
        return _EXIT_OK
    if not args.json:
        print(f"Starting Apicurio Registry {APICURIO_VERSION} (the first run builds it with mvn)...", flush=True)
    try:
        registry = start_registry(cfg)
    except DevRegistryError as exc:
        print(f"The schema registry did not start: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    _say(
        args,
        _running_facts(registry),
        f"Schema registry (Apicurio {registry.apicurio_version}, in-memory) up at {registry.url} "
        f"(pid {registry.pid}, logs {display_path(registry.log_path)}) in {registry.ready_after_s:.1f} s.\n"
        f"  export SCHEMA_REGISTRY_URL={registry.url}",
    )
    return _EXIT_OK


def _down(args: argparse.Namespace) -> int:
    cfg = config_from_args(DevRegistryConfig, args)
    pid = registry_status(cfg.state_dir, probe_timeout_s=0.1).pid
    try:
        stopped = stop_registry(cfg.state_dir, timeout_s=cfg.stop_timeout_s)
    except DevRegistryError as exc:
        print(f"The schema registry did not stop: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    facts = {"stopped": stopped, "pid": pid if stopped else None, "state_dir": str(cfg.state_dir)}
    if stopped:
        _say(args, facts, f"Schema registry stopped (pid {pid}).")
    else:
        _say(args, facts, f"No schema registry running for {display_path(cfg.state_dir)}.")
    return _EXIT_OK


def _status(args: argparse.Namespace) -> int:
    external = registry_url_from_env()
    if external is not None:
        answering = registry_answers(external)
        _say(args, {"url": external, "external": True, "answering": answering},
             f"SCHEMA_REGISTRY_URL={external}: {'answering' if answering else 'NOT answering'}.")  # fmt: skip
        return _EXIT_OK if answering else _EXIT_ERROR
    cfg = config_from_args(DevRegistryConfig, args)
    status = registry_status(cfg.state_dir)
    facts = _status_facts(status, cfg.state_dir)
    if not status.running:
        _say(args, facts, f"Schema registry stopped (state dir {display_path(cfg.state_dir)}).")
        return _EXIT_NOT_RUNNING
    where = f"at {status.url}" if status.url else "(still starting)"
    answer = "answering" if status.answering else "NOT answering"
    _say(
        args,
        facts,
        f"Schema registry running {where} (pid {status.pid}), {answer}; logs {display_path(status.log_path)}.",
    )
    return _EXIT_OK if status.answering else _EXIT_ERROR


def _running_facts(registry: RunningRegistry) -> dict[str, object]:
    return {
        "url": registry.url,
        "pid": registry.pid,
        "port": registry.port,
        "log": str(registry.log_path),
        "state_dir": str(registry.state_dir),
        "apicurio_version": registry.apicurio_version,
        "ready_after_s": round(registry.ready_after_s, 2),
    }


def _status_facts(status: RegistryStatus, state_dir: Path) -> dict[str, object]:
    return {
        "running": status.running,
        "answering": status.answering,
        "url": status.url,
        "pid": status.pid if status.running else None,
        "log": str(status.log_path),
        "state_dir": str(state_dir),
    }


def _say(args: argparse.Namespace, facts: Mapping[str, object], text: str) -> None:
    """Print ``facts`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(facts, indent=2) if args.json else text)
