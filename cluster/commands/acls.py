"""``eventray acls CONFIG``: the Kafka ACLs a pipeline needs (:mod:`pipelines.io.kafka_acls`), to review and grant.

Prints one ``kafka-acls.sh --add`` argument line per ACL (or ``--json``); ``--apply`` grants them on the secured
dev broker of ``--state-dir`` as its ``admin`` user, for a test rig. On a real cluster an operator applies the
printed lines with an admin's credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from pipelines.config.pipeline import load_config
from pipelines.errors import ConfigError
from pipelines.io.kafka_acls import required_acls

__all__ = ["add_acls_command"]


def add_acls_command(commands: Any) -> None:
    acls = commands.add_parser("acls", help="list (or grant on the dev broker) the Kafka ACLs a pipeline needs")
    acls.add_argument("config", help="the pipeline config (YAML)")
    acls.add_argument(
        "--principal",
        default=None,
        help="who runs it (default: User:<kafka.sasl user>; required without SASL)",
    )
    acls.add_argument("--json", action="store_true", help="print the ACLs as JSON (for scripts)")
    acls.add_argument("--apply", action="store_true", help="grant them on the secured dev broker of --state-dir")
    acls.add_argument("--state-dir", type=Path, default=Path(".eventray/kafka"), help="with --apply: the dev broker")
    acls.set_defaults(func=_acls)


def _acls(args: argparse.Namespace) -> int:
    config = load_config(args.config, {})
    principal = args.principal or _default_principal(config.kafka, needed=args.apply)
    bindings = required_acls(config)
    if args.json:
        print(json.dumps({"principal": principal, "acls": [binding.as_dict() for binding in bindings]}, indent=2))
    else:
        if not bindings:
            print(f"{config.name} uses no Kafka resources: no ACLs needed.")
        for binding in bindings:
            print(binding.describe(principal))
    if args.apply:
        _apply(args.state_dir, principal, bindings)
    return 0


def _default_principal(kafka: Any, needed: bool) -> str:
    """``User:<the SASL user>`` (from the config or the variable ``username_env`` names); without SASL the
    principal is the broker's (a certificate's mapped name): ``--principal`` must say it to grant, and a list
    shows a placeholder."""
    sasl = kafka.sasl if kafka is not None else None
    username = (sasl.username or os.environ.get(sasl.username_env or "", "")) if sasl is not None else ""
    if not username and not needed:
        return "User:<principal>"
    if not username:
        raise ConfigError(
            "acls: the principal cannot be told from the config (no SASL user name). Operator action: give it, "
            "e.g. --principal User:pipeline, or the name your brokers map the client certificate to"
        )
    return f"User:{username}"


def _apply(state_dir: Path, principal: str, bindings: list[Any]) -> None:
    from actors.kafka.admin import create_acls  # noqa: PLC0415 - keep `--help` fast
    from cluster.kafka_dev import broker_security  # noqa: PLC0415

    security = broker_security(state_dir)
    if security is None:
        raise ConfigError(
            f"--apply: no secured dev broker was started from {state_dir}. Operator action: start one with "
            "`eventray kafka up --secure`, or grant the ACLs above on your cluster with kafka-acls.sh"
        )
    asyncio.run(create_acls(security.sasl_connection("admin"), principal, bindings))
    print(f"granted {len(bindings)} ACLs to {principal} on {security.bootstrap}")
