"""The files a dev broker keeps in its state dir.

``broker.pid`` is written as soon as the JVM is spawned (so ``stop_broker`` can stop a broker that
never became ready); ``broker.json`` only once it answers metadata requests. Both are read and written
through :class:`cluster.dev_services.PidAndRecordFiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.dev_services import PidAndRecordFiles

__all__ = ["BrokerRecord", "StatePaths"]


@dataclass(frozen=True)
class BrokerRecord:
    """What ``broker.json`` says about the broker last started from a state dir."""

    bootstrap: str
    pid: int
    started_at: str
    kafka_version: str
    log_path: str
    mtls_bootstrap: str | None = None  # set for a secured broker only


@dataclass(frozen=True)
class StatePaths:
    """Where each file of one broker lives under its (absolute) state dir."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "broker.log"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def records(self) -> PidAndRecordFiles[BrokerRecord]:
        """``broker.pid`` and ``broker.json``; forgetting them keeps the data and the log, which help debugging."""
        return PidAndRecordFiles(self.root / "broker.pid", self.root / "broker.json", BrokerRecord)
