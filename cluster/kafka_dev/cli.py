"""``eventray kafka up|down|status``: the dev broker from a terminal. The only module here that prints.

Exit codes: 0 success (``status``: running and answering), 1 error (``status``: running but not
answering), 3 ``status``: not running (the LSB convention).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cluster.dev_services import config_from_args, display_path

from ._broker import RunningBroker, broker_status, start_broker, stop_broker
from ._config import DevBrokerConfig, bootstrap_from_env
from ._errors import DevBrokerError
from ._probe import broker_reachable
from ._security import PIPELINE_USER, SCRAM_USERS, BrokerSecurity
from ._tls import CLIENT_PRINCIPAL

__all__ = ["add_kafka_commands"]

_EXIT_OK = 0
_EXIT_ERROR = 1
_EXIT_NOT_RUNNING = 3


def add_kafka_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``kafka`` with ``up``, ``down`` and ``status`` to ``subparsers``.

    Each leaf parser sets ``func(args) -> int`` (the exit code), to be called by the main CLI.
    """
    kafka = subparsers.add_parser("kafka", help="run a local dev Kafka broker (KRaft, loopback only)")
    commands = kafka.add_subparsers(dest="kafka_command", required=True, metavar="{up,down,status}")

    up = commands.add_parser("up", help="start the dev broker (downloads its jars with mvn on first use)")
    _add_state_dir(up)
    up.add_argument("--port", type=_port, default=9092, help="client port on 127.0.0.1; 0 picks a free one")
    up.add_argument("--keep-data", action="store_true", help="keep topics from the previous run")
    up.add_argument(
        "--secure",
        action="store_true",
        help="TLS + SCRAM-SHA-512 on --port, mutual TLS on --mtls-port, ACLs enforced",
    )
    up.add_argument("--mtls-port", type=_port, default=0, help="with --secure: the mutual-TLS port; 0 picks one")
    up.add_argument("--json", action="store_true", help="print the broker's addresses and files as JSON")
    up.set_defaults(func=_up)

    down = commands.add_parser("down", help="stop the dev broker started from this state dir")
    _add_state_dir(down)
    down.set_defaults(func=_down)

    status = commands.add_parser("status", help="say whether the dev broker runs and answers")
    _add_state_dir(status)
    status.set_defaults(func=_status)


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="data, logs and pid file (default: .eventray/kafka)"
    )


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535)")
    return port


def _up(args: argparse.Namespace) -> int:
    external = bootstrap_from_env()
    if external is not None:
        print(f"KAFKA_BOOTSTRAP={external} points at an existing broker; not starting one.")
        return _EXIT_OK
    cfg = config_from_args(
        DevBrokerConfig, args, port=args.port, keep_data=args.keep_data, secure=args.secure, mtls_port=args.mtls_port
    )
    current = broker_status(cfg.state_dir)
    if current.running:
        print(f"Kafka already running at {current.bootstrap or '(starting)'} (pid {current.pid}).")
        return _EXIT_OK
    if not args.json:
        print(f"Starting Kafka {cfg.kafka_version} (the first run downloads its jars with mvn)...", flush=True)
    try:
        broker = start_broker(cfg)
    except DevBrokerError as exc:
        print(f"Kafka did not start: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    if args.json:
        print(json.dumps(_broker_facts(broker), indent=2))
        return _EXIT_OK
    print(
        f"Kafka {broker.kafka_version} up at {broker.bootstrap} (pid {broker.pid}, "
        f"logs {display_path(broker.log_path)}) in {broker.ready_after_s:.1f} s."
    )
    if broker.security is not None:
        _print_secured(broker.security)
    return _EXIT_OK


def _broker_facts(broker: RunningBroker) -> dict[str, object]:
    facts: dict[str, object] = {"bootstrap": broker.bootstrap, "pid": broker.pid, "log": str(broker.log_path),
                                "kafka_version": broker.kafka_version}  # fmt: skip
    security = broker.security
    if security is not None:
        facts["secure"] = {
            "sasl_ssl_bootstrap": security.bootstrap,
            "mtls_bootstrap": security.mtls_bootstrap,
            "sasl_mechanism": "SCRAM-SHA-512",
            "ca_file": str(security.tls.ca_cert),
            "client_cert_file": str(security.tls.cert(CLIENT_PRINCIPAL)),
            "client_key_file": str(security.tls.key(CLIENT_PRINCIPAL)),
            "password_files": {user: str(security.password_file(user)) for user in SCRAM_USERS},
        }
    return facts


def _print_secured(security: BrokerSecurity) -> None:
    print(
        "Secured: SASL_SSL (SCRAM-SHA-512) only on that port, mutual TLS on "
        f"{security.mtls_bootstrap}; ACLs are enforced (no ACL: no access).\n"
        f"  users: admin (super user), {PIPELINE_USER} (what ACLs allow: `eventray acls CONFIG --apply`)\n"
        "  a pipeline's kafka section:\n"
        f"    kafka: {{bootstrap_servers: '{security.bootstrap}', security_protocol: SASL_SSL,\n"
        f"            tls: {{ca_file: {display_path(security.tls.ca_cert)}}},\n"
        f"            sasl: {{mechanism: SCRAM-SHA-512, username: {PIPELINE_USER}, password_env: KAFKA_PASSWORD}}}}\n"
        f"  export KAFKA_PASSWORD=$(cat {display_path(security.password_file(PIPELINE_USER))})"
    )


def _down(args: argparse.Namespace) -> int:
    cfg = config_from_args(DevBrokerConfig, args)
    pid = broker_status(cfg.state_dir, probe_timeout_s=0.1).pid
    try:
        stopped = stop_broker(cfg.state_dir, timeout_s=cfg.stop_timeout_s)
    except DevBrokerError as exc:
        print(f"Kafka did not stop: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    if stopped:
        print(f"Kafka stopped (pid {pid}).")
    else:
        print(f"No Kafka broker running for {display_path(cfg.state_dir)}.")
    return _EXIT_OK


def _status(args: argparse.Namespace) -> int:
    external = bootstrap_from_env()
    if external is not None:
        answering = broker_reachable(external)
        print(f"KAFKA_BOOTSTRAP={external}: {'answering' if answering else 'NOT answering'}.")
        return _EXIT_OK if answering else _EXIT_ERROR
    cfg = config_from_args(DevBrokerConfig, args)
    status = broker_status(cfg.state_dir)
    if not status.running:
        print(f"Kafka not running (state dir {display_path(cfg.state_dir)}).")
        return _EXIT_NOT_RUNNING
    where = f"at {status.bootstrap}" if status.bootstrap else "(still starting)"
    answer = "answering" if status.reachable else "NOT answering"
    version = f" {status.kafka_version}" if status.kafka_version else ""
    print(f"Kafka{version} running {where} (pid {status.pid}), {answer}; logs {display_path(status.log_path)}.")
    return _EXIT_OK if status.reachable else _EXIT_ERROR
