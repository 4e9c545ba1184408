"""The files a dev broker keeps in its state dir, and reading/writing the pid and state records.

``broker.pid`` is written as soon as the JVM is spawned (so ``stop_broker`` can stop a broker that
never became ready); ``broker.json`` only once it answers metadata requests.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def record_file(self) -> Path:
        return self.root / "broker.json"

    def read_pid(self) -> int | None:
        """The recorded pid, or None when there is no pid file or it does not hold a positive integer."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid > 0 else None

    def write_pid(self, pid: int) -> None:
        _write_atomically(self.pid_file, f"{pid}\n")

    def read_record(self) -> BrokerRecord | None:
        """The recorded broker, or None when ``broker.json`` is missing or not a record this code wrote."""
        try:
            raw: Any = json.loads(self.record_file.read_text())
            return BrokerRecord(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def write_record(self, record: BrokerRecord) -> None:
        _write_atomically(self.record_file, json.dumps(asdict(record), indent=2) + "\n")

    def forget_broker(self) -> None:
        """Remove the pid and state records (not the data or the log, which help debugging)."""
        self.pid_file.unlink(missing_ok=True)
        self.record_file.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temp file + rename so a reader never sees a half-written record."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(path)
