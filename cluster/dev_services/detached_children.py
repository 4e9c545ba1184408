"""JVMs this process spawns detached: spawning one, asking whether it has exited, and stopping one it still owns.

A child this process spawned and has not reaped keeps its pid reserved for us (the kernel cannot hand it to
another program), so ``peek_child_exit`` and ``stop_own_child`` need no identity check; a pid read back from
a file later is another matter (:mod:`.recognised_processes`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["POLL_S", "peek_child_exit", "send_signal", "spawn_detached", "stop_own_child"]

POLL_S = 0.2  # how often a stopping process is looked at again


def spawn_detached(argv: Sequence[str], log_path: Path) -> int:
    """Start ``argv`` in its own session, stdin from /dev/null, stdout+stderr truncating ``log_path``.

    Returns the pid; ``argv[0]`` is the program's path (PATH is not searched). The child outlives the caller and
    is not tied to the caller's terminal (Ctrl-C in the caller's shell does not reach it). No ``Popen``
    object is kept, so nothing warns when the caller exits first; a caller still alive when the child exits
    reaps it in ``stop_own_child`` or :func:`.recognised_processes.terminate_recognised`.
    """
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], list(argv), dict(os.environ), file_actions=file_actions, setsid=True)


def peek_child_exit(pid: int) -> int | None:
    """The exit code of child ``pid`` if it has exited (negative: killed by that signal), else None.

    Does not reap it, so the pid stays reserved for this process and may still be signalled safely. None too
    when ``pid`` is not (or no longer) an unreaped child of this process.
    """
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if result is None:
        return None
    return result.si_status if result.si_code == os.CLD_EXITED else -result.si_status


def stop_own_child(pid: int, timeout_s: float) -> None:
    """Stop and reap ``pid``, a child this process spawned and has not reaped: SIGTERM, then SIGKILL.

    Blocks for up to ``timeout_s`` before the SIGKILL, then until the child is reaped. No identity check is
    needed (or possible: right after spawn the command line may still read empty): an unreaped child's pid
    cannot be reused by another process.
    """
    send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # already reaped
        if waited == pid:
            return
        time.sleep(POLL_S)
    send_signal(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def send_signal(pid: int, sig: signal.Signals) -> None:
    """``os.kill``, where a process already gone counts as done."""
    # Exiting between the identity check and the signal is the outcome we want anyway.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
