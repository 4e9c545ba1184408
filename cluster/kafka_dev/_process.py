"""Recognising the broker's JVM by pid.

A recorded pid is only ever signalled after ``is_broker_process`` confirms it is still a ``java``
running ``kafka.Kafka`` with this state dir's config file, so a pid file outliving its broker (and the
pid being recycled by an unrelated program) can never lead to killing someone else's process. Spawning,
stopping and that rule itself are shared with the dev schema registry: :mod:`cluster.dev_services`.
"""

from __future__ import annotations

from pathlib import Path

from cluster.dev_services import command_line

__all__ = ["is_broker_process"]


def is_broker_process(pid: int, config_path: Path) -> bool:
    """True when ``pid`` is alive and is ``java ... kafka.Kafka <config_path>``."""
    argv = command_line(pid)
    return bool(argv) and Path(argv[0]).name == "java" and "kafka.Kafka" in argv and str(config_path) in argv
