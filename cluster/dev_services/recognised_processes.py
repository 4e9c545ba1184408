"""Stopping a process known only by a recorded pid, signalling it only while it is still recognised as ours.

A pid file can outlive its process, and the pid can then be recycled by an unrelated program. So every signal
here is preceded by the caller's ``recognise(pid)`` check (typically: the command line of ``pid`` is the
service's JVM with this state dir's marker on it), and a pid that fails it is left alone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from .detached_children import POLL_S, send_signal
from .service_errors import ServiceErrors

__all__ = ["Recognise", "terminate_recognised"]

Recognise = Callable[[int], bool]
"""``recognise(pid)``: True while ``pid`` is alive and is the service's own process. Must not raise."""

_KILL_WAIT_S = 5.0


def terminate_recognised(
    pid: int, recognise: Recognise, timeout_s: float, errors: ServiceErrors, *, hard: bool = False
) -> bool:
    """Stop ``pid``: SIGTERM, wait up to ``timeout_s``, then SIGKILL that pid only (``hard``: SIGKILL at once, a
    crash as the clients and the log see it).

    Returns False, signalling nothing, when ``recognise(pid)`` is False; True once it is gone (reaped, when it
    is this process's child). Each signal is preceded by the identity check. Blocks for up to ``timeout_s``
    plus 5 s. Raises ``errors.error(...)`` if the process survives SIGKILL (stuck in the kernel).
    """
    if not recognise(pid):
        return False
    if not hard:
        send_signal(pid, signal.SIGTERM)
        if _wait_gone(pid, recognise, timeout_s):
            return True
    if recognise(pid):
        send_signal(pid, signal.SIGKILL)
    if not _wait_gone(pid, recognise, _KILL_WAIT_S):
        raise errors.error(
            f"The {errors.noun} pid {pid} survived SIGKILL.\n"
            f"Operator action: inspect it with `ps -o pid,stat,args -p {pid}`; it is likely stuck on I/O."
        )
    return True


def _wait_gone(pid: int, recognise: Recognise, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _is_gone(pid, recognise):
            return True
        time.sleep(POLL_S)
    return False


def _is_gone(pid: int, recognise: Recognise) -> bool:
    """For our own child, gone means reaped (an exiting child loses its command line before it can be reaped,
    and must not be left a zombie); for any other process, no longer recognised."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not recognise(pid)
    return waited == pid
