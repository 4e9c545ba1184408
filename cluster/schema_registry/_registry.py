"""Starting, stopping and inspecting one dev schema registry, identified by its state dir.

A state dir holds at most one registry. Its files are described in ``_state_files``; the process rules
(own session, pid identity checks) in ``_process`` and :mod:`cluster.dev_services`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cluster.dev_services import (
    LOOPBACK_HOST,
    free_loopback_port,
    read_log_tail,
    start_recorded,
    stop_recorded,
    wait_until_answering,
)

from ._build import build_registry_app
from ._config import DevRegistryConfig
from ._errors import REGISTRY_ERRORS, DevRegistryError
from ._maven_project import APICURIO_VERSION
from ._probe import ccompat_url, registry_answers
from ._process import is_registry_process, registry_argv
from ._state_files import RegistryRecord, StatePaths
from ._tools import require_tool

__all__ = ["RegistryStatus", "RunningRegistry", "registry_status", "start_registry", "stop_registry"]

_READY_POLL_S = 0.25
_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class RunningRegistry:
    """A registry that answered ``GET <url>/subjects`` when ``start_registry`` returned."""

    url: str
    pid: int
    port: int
    log_path: Path
    state_dir: Path
    apicurio_version: str
    ready_after_s: float


@dataclass(frozen=True)
class RegistryStatus:
    """What a state dir says about its registry.

    ``pid`` is the recorded pid even when ``running`` is False (a stale pid file); ``running`` means that
    pid is this state dir's registry JVM; ``answering`` means it answered ``GET <url>/subjects``. ``url``
    is None until the registry has become ready once.
    """

    running: bool
    answering: bool
    pid: int | None
    url: str | None
    log_path: Path


def start_registry(cfg: DevRegistryConfig) -> RunningRegistry:
    """Start a registry for ``cfg.state_dir`` and return once its Confluent-compatible API answers.

    Builds the app first if the cache lacks it (minutes on first use). Storage is in memory: every start
    begins empty. The JVM runs in its own session and outlives the caller; stop it with ``stop_registry``.
    Raises DevRegistryError when a registry already runs for this state dir, the port is taken, or the
    JVM exits or stays silent for ``cfg.ready_timeout_s`` (the JVM is then stopped, and the message
    carries its log tail).
    """
    paths = StatePaths(cfg.state_dir)
    _refuse_if_running(paths)
    run_jar = build_registry_app(cfg)
    java = require_tool("java")
    port = _free_port(cfg.port)
    url = ccompat_url(LOOPBACK_HOST, port)
    paths.root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pid = start_recorded(
        registry_argv(java, run_jar, cfg.state_dir, port, cfg.heap_mb),
        paths.log,
        paths.records,
        lambda spawned: _wait_until_answering(spawned, url, paths, cfg.ready_timeout_s),
        cfg.stop_timeout_s,
    )
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    paths.records.write_record(RegistryRecord(url, pid, port, started_at, APICURIO_VERSION, str(paths.log)))
    return RunningRegistry(
        url=url,
        pid=pid,
        port=port,
        log_path=paths.log,
        state_dir=cfg.state_dir,
        apicurio_version=APICURIO_VERSION,
        ready_after_s=time.monotonic() - started,
    )


def stop_registry(state_dir: Path, timeout_s: float = 20.0) -> bool:
    """Stop the registry recorded in ``state_dir``; True if one was running and is now gone.

    Signals only the recorded pid, and only while it is still this state dir's registry JVM (a stale or
    recycled pid is left alone and its records removed). SIGTERM first, SIGKILL after ``timeout_s``.
    Keeps the log.
    """
    paths = StatePaths(state_dir.expanduser().resolve())
    return stop_recorded(paths.records, lambda pid: is_registry_process(pid, paths.root), timeout_s, REGISTRY_ERRORS)


def registry_status(state_dir: Path, probe_timeout_s: float = _PROBE_TIMEOUT_S) -> RegistryStatus:
    """Report on the registry of ``state_dir``; probes it (bounded by ``probe_timeout_s``) only if running.

    Read-only: never signals a process or changes a file.
    """
    paths = StatePaths(state_dir.expanduser().resolve())
    pid = paths.records.read_pid()
    running = pid is not None and is_registry_process(pid, paths.root)
    record = paths.records.read_record()
    if record is None or record.pid != pid:
        return RegistryStatus(running, False, pid, None, paths.log)
    answering = running and registry_answers(record.url, probe_timeout_s)
    return RegistryStatus(running, answering, pid, record.url, paths.log)


def _refuse_if_running(paths: StatePaths) -> None:
    pid = paths.records.read_pid()
    if pid is not None and is_registry_process(pid, paths.root):
        raise DevRegistryError(
            f"A schema registry (pid {pid}) is already running for {paths.root}.\n"
            "Operator action: use it, or stop it first with `eventray registry down`."
        )
    paths.records.forget()


def _free_port(port: int) -> int:
    """``port``, once shown free on 127.0.0.1, or a free one for 0; DevRegistryError if it is taken.

    The socket is closed before the JVM binds the port, so another program could take it in between: the
    JVM then exits at start-up and ``start_registry`` reports that with its log.
    """
    return free_loopback_port(
        port,
        REGISTRY_ERRORS,
        "pick another port (`eventray registry up --port N`, 0 picks a free one), or, "
        "if a schema registry listens there, export SCHEMA_REGISTRY_URL as its API's base URL "
        f"(http://{LOOPBACK_HOST}:{port}/apis/ccompat/v7 for an Apicurio Registry).",
    )


def _wait_until_answering(pid: int, url: str, paths: StatePaths, timeout_s: float) -> None:
    """Poll until the registry answers; raise DevRegistryError if it exits or ``timeout_s`` passes."""
    not_answering = wait_until_answering(
        pid,
        lambda probe_s: registry_answers(url, probe_s),
        timeout_s,
        poll_s=_READY_POLL_S,
        probe_timeout_s=_PROBE_TIMEOUT_S,
    )
    if not_answering is None:
        return
    if not_answering.exit_code is not None:
        raise DevRegistryError(
            f"The schema registry exited during start-up (exit code {not_answering.exit_code}). "
            f"Last lines of {paths.log}:\n{read_log_tail(paths.log)}\n"
            "Operator action: fix the cause above, then run `eventray registry up` again."
        )
    raise DevRegistryError(
        f"The schema registry (pid {pid}) did not answer at {url} within {timeout_s:.0f} s; stopped it.\n"
        f"Last lines of {paths.log}:\n{read_log_tail(paths.log)}\n"
        "Operator action: look for the cause above; on a slow or busy machine raise ready_timeout_s."
    )
