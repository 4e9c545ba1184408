"""The files a dev registry keeps in its state dir, and reading/writing the pid and state records.

``registry.pid`` is written as soon as the JVM is spawned (so ``stop_registry`` can stop a registry that
never became ready); ``registry.json`` only once it answers. ``registry.log`` is the JVM's output.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["RegistryRecord", "StatePaths"]


@dataclass(frozen=True)
class RegistryRecord:
    """What ``registry.json`` says about the registry last started from a state dir.

    ``url`` is the base of the Confluent-compatible API (``http://127.0.0.1:<port>/apis/ccompat/v7``), the
    value for ``SCHEMA_REGISTRY_URL``.
    """

    url: str
    pid: int
    port: int
    started_at: str
    apicurio_version: str
    log_path: str


@dataclass(frozen=True)
class StatePaths:
    """Where each file of one registry lives under its (absolute) state dir."""

    root: Path

    @property
    def log(self) -> Path:
        return self.root / "registry.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "registry.pid"

    @property
    def record_file(self) -> Path:
        return self.root / "registry.json"

    def read_pid(self) -> int | None:
        """The recorded pid, or None when there is no pid file or it does not hold a positive integer."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid > 0 else None

    def write_pid(self, pid: int) -> None:
        _write_atomically(self.pid_file, f"{pid}\n")

    def read_record(self) -> RegistryRecord | None:
        """The recorded registry, or None when ``registry.json`` is missing or not a record this code wrote."""
        try:
            raw: Any = json.loads(self.record_file.read_text())
            return RegistryRecord(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def write_record(self, record: RegistryRecord) -> None:
        _write_atomically(self.record_file, json.dumps(asdict(record), indent=2) + "\n")

    def forget_registry(self) -> None:
        """Remove the pid and state records (not the log, which helps debugging)."""
        self.pid_file.unlink(missing_ok=True)
        self.record_file.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temp file + rename so a reader never sees a half-written record."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(path)
