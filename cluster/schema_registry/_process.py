"""The registry's JVM: its command line, and recognising it by pid.

A recorded pid is only ever signalled after ``is_registry_process`` confirms it is still a ``java``
running a ``quarkus-run.jar`` with this state dir's marker property on its command line, so a pid
file outliving its registry (and the pid being recycled by an unrelated program) never leads to
killing someone else's process. Spawning, stopping and that rule itself are shared with the dev Kafka
broker: :mod:`cluster.dev_services`.
"""

from __future__ import annotations

from pathlib import Path

from cluster.dev_services import LOOPBACK_HOST, command_line

__all__ = ["is_registry_process", "registry_argv"]

_STATE_DIR_PROPERTY = "eventray.registry.state-dir"


def registry_argv(java: Path, run_jar: Path, state_dir: Path, port: int, heap_mb: int) -> list[str]:
    """The command line of a registry serving HTTP on ``127.0.0.1:port`` only, with in-memory storage (the
    registry's default). ``state_dir`` rides along as a property so ``is_registry_process`` can tell whose it is.
    """
    return [
        str(java),
        f"-Xmx{heap_mb}m",
        "-XX:+ExitOnOutOfMemoryError",
        f"-D{_STATE_DIR_PROPERTY}={state_dir}",
        f"-Dquarkus.http.host={LOOPBACK_HOST}",
        f"-Dquarkus.http.port={port}",
        "-jar",
        str(run_jar),
    ]


def is_registry_process(pid: int, state_dir: Path) -> bool:
    """True when ``pid`` is alive and is ``java ... -D<marker>=<state_dir> ... -jar .../quarkus-run.jar``."""
    argv = command_line(pid)
    if not argv or Path(argv[0]).name != "java" or "-jar" not in argv:
        return False
    jar_index = argv.index("-jar") + 1
    runs_registry = jar_index < len(argv) and argv[jar_index].endswith("quarkus-run.jar")
    return runs_registry and f"-D{_STATE_DIR_PROPERTY}={state_dir}" in argv
