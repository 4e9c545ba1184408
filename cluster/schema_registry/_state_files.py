"""The files a dev registry keeps in its state dir.

``registry.pid`` is written as soon as the JVM is spawned (so ``stop_registry`` can stop a registry that
never became ready); ``registry.json`` only once it answers. ``registry.log`` is the JVM's output. The pid
and record files are read and written through :class:`cluster.dev_services.PidAndRecordFiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.dev_services import PidAndRecordFiles

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
    def records(self) -> PidAndRecordFiles[RegistryRecord]:
        """``registry.pid`` and ``registry.json``; forgetting them keeps the log, which helps debugging."""
        return PidAndRecordFiles(self.root / "registry.pid", self.root / "registry.json", RegistryRecord)
