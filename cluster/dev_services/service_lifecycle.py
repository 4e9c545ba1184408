"""Starting and stopping one dev service whose JVM is recorded in a state dir.

``start_recorded`` spawns the JVM detached, records its pid at once and waits for the caller's readiness
check; if that fails in any way (an error, Ctrl-C) the JVM is stopped and reaped and both files are removed,
so a failed start leaves no process and no stale pid behind. ``stop_recorded`` signals the recorded pid only
while the caller still recognises it as the service's JVM, and removes both files either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .detached_children import peek_child_exit, spawn_detached, stop_own_child
from .recognised_processes import Recognise, terminate_recognised
from .service_errors import ServiceErrors
from .state_files import PidAndRecordFiles

__all__ = ["NotAnswering", "start_recorded", "stop_recorded", "wait_until_answering"]


def start_recorded(
    argv: Sequence[str],
    log_path: Path,
    files: PidAndRecordFiles[Any],
    wait_ready: Callable[[int], None],
    stop_timeout_s: float,
) -> int:
    """Spawn ``argv`` detached (output to ``log_path``), write its pid to ``files``, and return the pid once
    ``wait_ready(pid)`` returns.

    Whatever ``wait_ready`` raises is re-raised after the child is stopped (SIGTERM, SIGKILL after
    ``stop_timeout_s``) and reaped, and ``files`` are forgotten. The record file is the caller's to write.
    """
    pid = spawn_detached(argv, log_path)
    files.write_pid(pid)
    try:
        wait_ready(pid)
    except BaseException:
        stop_own_child(pid, stop_timeout_s)
        files.forget()
        raise
    return pid


@dataclass(frozen=True)
class NotAnswering:
    """Why a spawned service never answered: it exited with ``exit_code`` (negative: killed by that signal), or
    (``exit_code`` None) it was still running but silent at the deadline."""

    exit_code: int | None


def wait_until_answering(
    pid: int, answers: Callable[[float], bool], timeout_s: float, *, poll_s: float, probe_timeout_s: float
) -> NotAnswering | None:
    """Poll ``answers(probe_s)`` every ``poll_s`` until it is True (return None), or return why not: child
    ``pid`` exited (it is left unreaped), or ``timeout_s`` passed (it is left running).

    ``answers`` must not raise; each call is given at most ``probe_timeout_s`` (less near the deadline, never
    under 0.1 s). Never reaps ``pid``, so the caller may still stop it with ``stop_own_child``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # Ask the kernel as the JVM's parent rather than check /proc: right after spawn the child's command
        # line can still read empty. Not reaping keeps the pid ours for stop_own_child.
        exit_code = peek_child_exit(pid)
        if exit_code is not None:
            return NotAnswering(exit_code)
        if answers(min(probe_timeout_s, max(deadline - time.monotonic(), 0.1))):
            return None
        time.sleep(poll_s)
    return NotAnswering(None)


def stop_recorded(
    files: PidAndRecordFiles[Any], recognise: Recognise, timeout_s: float, errors: ServiceErrors, *, hard: bool = False
) -> bool:
    """Stop the process whose pid ``files`` record; True if it was running (recognised) and is now gone.

    A stale or recycled pid is left alone. SIGTERM first, SIGKILL after ``timeout_s``; ``hard``: SIGKILL at
    once. Both files are removed in every case but an error. Raises ``errors.error(...)`` if the process
    survives SIGKILL.
    """
    pid = files.read_pid()
    stopped = pid is not None and terminate_recognised(pid, recognise, timeout_s, errors, hard=hard)
    files.forget()
    return stopped
