"""A dev service's pid file and JSON record file, written atomically.

The pid file is written as soon as the JVM is spawned (so a stop can find a service that never became ready);
the record, a frozen dataclass as JSON, only once the service answers. Readers never see a half-written file:
every write goes to a temporary file in the same directory and is renamed over the old one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["PidAndRecordFiles"]

RecordT = TypeVar("RecordT", bound="DataclassInstance")


@dataclass(frozen=True)
class PidAndRecordFiles(Generic[RecordT]):
    """The pid file and the record file of one service, and the dataclass the record holds.

    Reads never raise: a missing or malformed file reads as None. Writes raise ``OSError`` as the file
    system does.
    """

    pid_file: Path
    record_file: Path
    record_type: Callable[..., RecordT]

    def read_pid(self) -> int | None:
        """The recorded pid, or None when there is no pid file or it does not hold a positive integer."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid > 0 else None

    def write_pid(self, pid: int) -> None:
        _write_atomically(self.pid_file, f"{pid}\n")

    def read_record(self) -> RecordT | None:
        """The record, or None when the record file is missing or not a record this code wrote."""
        try:
            raw: Any = json.loads(self.record_file.read_text())
            return self.record_type(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def write_record(self, record: RecordT) -> None:
        _write_atomically(self.record_file, json.dumps(asdict(record), indent=2) + "\n")

    def forget(self) -> None:
        """Remove the pid and record files, if there; nothing else in the state dir (data, logs help debugging)."""
        self.pid_file.unlink(missing_ok=True)
        self.record_file.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temp file + rename so a reader never sees a half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(path)
