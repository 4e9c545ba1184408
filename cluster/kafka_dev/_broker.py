"""Starting, stopping and inspecting one dev broker, identified by its state dir.

A state dir holds at most one broker. Its files are described in ``_state_files``; the process
rules (own session, pid identity checks) in ``_process`` and :mod:`cluster.dev_services`.
"""

from __future__ import annotations

import base64
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cluster.dev_services import (
    LOOPBACK_HOST,
    bound_loopback_socket,
    last_lines,
    read_log_tail,
    start_recorded,
    stop_recorded,
    wait_until_answering,
)

from ._config import DevBrokerConfig
from ._errors import BROKER_ERRORS, DevBrokerError
from ._jars import resolve_kafka_jars
from ._probe import broker_reachable
from ._process import is_broker_process
from ._properties import BrokerPorts, render_log4j2_properties, render_server_properties
from ._security import SCRAM_USERS, BrokerSecurity
from ._state_files import BrokerRecord, StatePaths
from ._tls import TlsFiles, make_tls_files
from ._tools import require_tool, run_tool

__all__ = ["BrokerStatus", "RunningBroker", "broker_security", "broker_status", "start_broker", "stop_broker"]

_FORMAT_TIMEOUT_S = 120.0
_READY_POLL_S = 0.5
_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class RunningBroker:
    """A broker that answered a metadata request at ``bootstrap`` when ``start_broker`` returned."""

    bootstrap: str
    pid: int
    log_path: Path
    state_dir: Path
    kafka_version: str
    ready_after_s: float
    security: BrokerSecurity | None = None


@dataclass(frozen=True)
class BrokerStatus:
    """What a state dir says about its broker.

    ``pid`` is the recorded pid even when ``running`` is False (a stale pid file); ``running`` means
    that pid is this state dir's broker JVM; ``reachable`` means it answered a metadata request.
    ``bootstrap`` and ``kafka_version`` are None until the broker has become ready once.
    """

    running: bool
    reachable: bool
    pid: int | None
    bootstrap: str | None
    kafka_version: str | None
    log_path: Path


def start_broker(cfg: DevBrokerConfig) -> RunningBroker:
    """Start a broker for ``cfg.state_dir`` and return once it answers metadata requests.

    Resolves the jars first (may download on first use). Formats fresh storage unless
    ``cfg.keep_data`` and the data dir is already formatted. The JVM runs in its own session and
    outlives the caller; stop it with ``stop_broker``. Raises DevBrokerError when a broker already
    runs for this state dir, a port is taken, or the JVM exits or stays silent for
    ``cfg.ready_timeout_s`` (the JVM is then stopped, and the message carries its log tail).
    """
    paths = StatePaths(cfg.state_dir)
    _refuse_if_running(paths)
    libs_dir = resolve_kafka_jars(cfg)
    java = require_tool("java")
    ports = _choose_ports(cfg)
    security = _secure(cfg, paths, ports) if cfg.secure else None
    _write_configs(cfg, paths, ports, security)
    _format_storage_if_needed(java, libs_dir, paths, security)
    started = time.monotonic()
    pid = start_recorded(
        _broker_argv(java, libs_dir, cfg, paths),
        paths.log,
        paths.records,
        lambda spawned: _wait_until_ready(spawned, ports.bootstrap, paths, cfg.ready_timeout_s, security),
        cfg.stop_timeout_s,
    )
    paths.records.write_record(
        BrokerRecord(
            bootstrap=ports.bootstrap,
            pid=pid,
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            kafka_version=cfg.kafka_version,
            log_path=str(paths.log),
            mtls_bootstrap=security.mtls_bootstrap if security is not None else None,
        )
    )
    return RunningBroker(
        bootstrap=ports.bootstrap,
        pid=pid,
        log_path=paths.log,
        state_dir=cfg.state_dir,
        kafka_version=cfg.kafka_version,
        ready_after_s=time.monotonic() - started,
        security=security,
    )


def _secure(cfg: DevBrokerConfig, paths: StatePaths, ports: BrokerPorts) -> BrokerSecurity:
    """New certificates, and the users' passwords (kept with the data they were formatted into)."""
    assert ports.mtls is not None  # _choose_ports gives a secured broker its mutual-TLS port
    security = BrokerSecurity(ports.bootstrap, f"{LOOPBACK_HOST}:{ports.mtls}", make_tls_files(paths.tls),
                              paths.secrets)  # fmt: skip
    formatted = (paths.data / "meta.properties").is_file()
    keep = cfg.keep_data and formatted
    if keep and not all(security.password_file(user).is_file() for user in SCRAM_USERS):
        raise DevBrokerError(
            f"--keep-data: the storage in {paths.data} was formatted without the secured broker's users.\n"
            "Operator action: start it once without --keep-data (a fresh secured storage), or without --secure."
        )
    security.ensure_passwords(keep=keep)
    return security


def broker_security(state_dir: Path) -> BrokerSecurity | None:
    """How to connect to the secured broker last started from ``state_dir``; None when it is not secured or
    never became ready."""
    paths = StatePaths(state_dir.expanduser().resolve())
    record = paths.records.read_record()
    if record is None or record.mtls_bootstrap is None:
        return None
    return BrokerSecurity(record.bootstrap, record.mtls_bootstrap, TlsFiles(paths.tls), paths.secrets)


def stop_broker(state_dir: Path, timeout_s: float = 20.0, hard: bool = False) -> bool:
    """Stop the broker recorded in ``state_dir``; True if one was running and is now gone.

    Signals only the recorded pid, and only while it is still this state dir's broker JVM (a stale
    or recycled pid is left alone and its records removed). SIGTERM first, SIGKILL after
    ``timeout_s``; ``hard``: SIGKILL at once (a crash). Keeps the data dir and the log.
    """
    paths = StatePaths(state_dir.expanduser().resolve())
    return stop_recorded(
        paths.records, lambda pid: is_broker_process(pid, paths.config), timeout_s, BROKER_ERRORS, hard=hard
    )


def broker_status(state_dir: Path, probe_timeout_s: float = _PROBE_TIMEOUT_S) -> BrokerStatus:
    """Report on the broker of ``state_dir``; probes it (bounded by ``probe_timeout_s``) only if running.

    Read-only: never signals a process or changes a file.
    """
    paths = StatePaths(state_dir.expanduser().resolve())
    pid = paths.records.read_pid()
    running = pid is not None and is_broker_process(pid, paths.config)
    record = paths.records.read_record()
    if record is None or record.pid != pid:
        return BrokerStatus(running, False, pid, None, None, paths.log)
    security = broker_security(paths.root)
    options = security.admin_options() if security is not None else {}
    reachable = running and broker_reachable(record.bootstrap, probe_timeout_s, options)
    return BrokerStatus(running, reachable, pid, record.bootstrap, record.kafka_version, paths.log)


def _refuse_if_running(paths: StatePaths) -> None:
    pid = paths.records.read_pid()
    if pid is not None and is_broker_process(pid, paths.config):
        raise DevBrokerError(
            f"A Kafka broker (pid {pid}) is already running for {paths.root}.\n"
            "Operator action: use it, or stop it first with `eventray kafka down`."
        )
    paths.records.forget()


def _choose_ports(cfg: DevBrokerConfig) -> BrokerPorts:
    """Fill in free ports for the zeros in ``cfg``; raise DevBrokerError if a requested port is taken."""
    with _bound_socket(cfg.port) as client, _bound_socket(cfg.controller_port) as controller:
        if not cfg.secure:
            return BrokerPorts(
                port=client.getsockname()[1],
                controller=controller.getsockname()[1],
                advertised=cfg.advertised_port or None,
            )
        with _bound_socket(cfg.mtls_port) as mtls:
            return BrokerPorts(client.getsockname()[1], controller.getsockname()[1], mtls.getsockname()[1])


def _bound_socket(port: int) -> socket.socket:
    """A TCP socket bound to ``127.0.0.1:port`` (0: any free port), proving the port can be listened on."""
    return bound_loopback_socket(
        port,
        BROKER_ERRORS,
        f"pick another port (`eventray kafka up --port N`), or, if a Kafka broker "
        f"is listening there, use it with KAFKA_BOOTSTRAP={LOOPBACK_HOST}:{port}.",
    )


def _write_configs(
    cfg: DevBrokerConfig, paths: StatePaths, ports: BrokerPorts, security: BrokerSecurity | None
) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    if not cfg.keep_data:
        shutil.rmtree(paths.data, ignore_errors=True)
    tls = security.tls if security is not None else None
    paths.config.write_text(render_server_properties(ports, paths.data, tls))
    paths.log4j_config.write_text(render_log4j2_properties())


def _format_storage_if_needed(java: Path, libs_dir: Path, paths: StatePaths, security: BrokerSecurity | None) -> None:
    """Run ``kafka.tools.StorageTool format`` (with the SCRAM users of a secured broker) unless the data dir
    already holds a formatted log."""
    if (paths.data / "meta.properties").is_file():
        return
    command = [
        *_java_prefix(java, libs_dir, paths),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        _new_cluster_id(),
        "-c",
        str(paths.config),
        *(security.scram_format_arguments() if security is not None else []),
    ]
    done = run_tool(command, _FORMAT_TIMEOUT_S, f"Formatting Kafka storage in {paths.data}")
    if done.returncode != 0:
        raise DevBrokerError(
            f"Formatting Kafka storage in {paths.data} failed (exit {done.returncode}):\n"
            f"{_without_passwords(last_lines(done.stdout + done.stderr), security)}\n"
            f"Operator action: fix the cause above; deleting {paths.data} is always safe for a dev broker."
        )


def _without_passwords(text: str, security: BrokerSecurity | None) -> str:
    if security is None:
        return text
    for user in SCRAM_USERS:
        text = text.replace(security.password(user), "***")
    return text


def _new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in unpadded URL-safe base64, as ``StorageTool random-uuid``
    prints, saving a JVM start. Like Kafka, avoid ids starting with '-' (they read as CLI options)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _java_prefix(java: Path, libs_dir: Path, paths: StatePaths) -> list[str]:
    return [
        str(java),
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.log4j_config}",
        "-cp",
        str(libs_dir / "*"),
    ]


def _broker_argv(java: Path, libs_dir: Path, cfg: DevBrokerConfig, paths: StatePaths) -> list[str]:
    java_cmd, *rest = _java_prefix(java, libs_dir, paths)
    heap = [f"-Xmx{cfg.heap_mb}m", "-XX:+ExitOnOutOfMemoryError"]
    return [java_cmd, *heap, *rest, "kafka.Kafka", str(paths.config)]


def _wait_until_ready(
    pid: int, bootstrap: str, paths: StatePaths, timeout_s: float, security: BrokerSecurity | None
) -> None:
    """Poll until the broker answers metadata; raise DevBrokerError if it exits or ``timeout_s`` passes."""
    options = security.admin_options() if security is not None else {}
    not_answering = wait_until_answering(
        pid,
        lambda probe_s: broker_reachable(bootstrap, probe_s, options),
        timeout_s,
        poll_s=_READY_POLL_S,
        probe_timeout_s=_PROBE_TIMEOUT_S,
    )
    if not_answering is None:
        return
    if not_answering.exit_code is not None:
        raise DevBrokerError(
            f"The Kafka broker exited during startup (exit code {not_answering.exit_code}). "
            f"Last lines of {paths.log}:\n{read_log_tail(paths.log)}\n"
            "Operator action: fix the cause above, then run `eventray kafka up` again."
        )
    raise DevBrokerError(
        f"The Kafka broker (pid {pid}) did not answer at {bootstrap} within {timeout_s:.0f} s; stopped it.\n"
        f"Last lines of {paths.log}:\n{read_log_tail(paths.log)}\n"
        "Operator action: look for the cause above; on a slow or busy machine raise ready_timeout_s."
    )
