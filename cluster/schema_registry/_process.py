"""The registry's JVM: its command line, spawning it detached, recognising it by pid, and stopping it.

A recorded pid is only ever signalled after ``is_registry_process`` confirms it is still a ``java``
running a ``quarkus-run.jar`` with this state dir's marker property on its command line, so a pid
file outliving its registry (and the pid being recycled by an unrelated program) never leads to
killing someone else's process. The one exception is ``stop_own_child``, for a child this process
spawned and has not reaped: the kernel keeps such a pid reserved for us.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ._errors import DevRegistryError

__all__ = [
    "LOOPBACK_HOST",
    "command_line",
    "is_registry_process",
    "peek_child_exit",
    "registry_argv",
    "spawn_detached",
    "stop_own_child",
    "terminate_registry",
]

LOOPBACK_HOST = "127.0.0.1"
_STATE_DIR_PROPERTY = "eventray.registry.state-dir"
_POLL_S = 0.2
_KILL_WAIT_S = 5.0


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


def spawn_detached(argv: Sequence[str], log_path: Path) -> int:
    """Start ``argv`` in its own session, stdin from /dev/null, stdout+stderr truncating ``log_path``.

    Returns the pid. The child outlives the caller and is not tied to the caller's terminal (Ctrl-C in the
    caller's shell does not reach it). A caller still alive when the child exits reaps it in
    ``terminate_registry`` or ``stop_own_child``.
    """
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], list(argv), dict(os.environ), file_actions=file_actions, setsid=True)


def command_line(pid: int) -> list[str]:
    """Return the argv of ``pid``, or [] when it does not exist, is a zombie or cannot be read."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    done = subprocess.run(  # noqa: S603 - fixed argv, pid is an int; systems without /proc (macOS)
        ["/bin/ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return done.stdout.split() if done.returncode == 0 else []


def is_registry_process(pid: int, state_dir: Path) -> bool:
    """True when ``pid`` is alive and is ``java ... -D<marker>=<state_dir> ... -jar .../quarkus-run.jar``."""
    argv = command_line(pid)
    if not argv or Path(argv[0]).name != "java" or "-jar" not in argv:
        return False
    jar_index = argv.index("-jar") + 1
    runs_registry = jar_index < len(argv) and argv[jar_index].endswith("quarkus-run.jar")
    return runs_registry and f"-D{_STATE_DIR_PROPERTY}={state_dir}" in argv


def peek_child_exit(pid: int) -> int | None:
    """The exit code of child ``pid`` if it has exited (negative: killed by that signal), else None.

    Does not reap it, so the pid stays reserved for this process and may still be signalled safely.
    """
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if result is None:
        return None
    return result.si_status if result.si_code == os.CLD_EXITED else -result.si_status


def terminate_registry(pid: int, state_dir: Path, timeout_s: float) -> bool:
    """Stop the registry ``pid``: SIGTERM, wait up to ``timeout_s``, then SIGKILL that pid only.

    Returns False, signalling nothing, when ``pid`` is not the registry of ``state_dir``; True once it is
    gone. Each signal is preceded by the identity check. Raises DevRegistryError if the process survives
    SIGKILL (stuck in the kernel).
    """
    if not is_registry_process(pid, state_dir):
        return False
    _signal(pid, signal.SIGTERM)
    if _wait_gone(pid, state_dir, timeout_s):
        return True
    if is_registry_process(pid, state_dir):
        _signal(pid, signal.SIGKILL)
    if not _wait_gone(pid, state_dir, _KILL_WAIT_S):
        raise DevRegistryError(
            f"The schema registry pid {pid} survived SIGKILL.\n"
            f"Operator action: inspect it with `ps -o pid,stat,args -p {pid}`; it is likely stuck on I/O."
        )
    return True


def stop_own_child(pid: int, timeout_s: float) -> None:
    """Stop and reap ``pid``, a child this process spawned and has not reaped: SIGTERM, then SIGKILL.

    No identity check is needed (or possible: right after spawn the command line may still read empty):
    an unreaped child's pid cannot be reused by another process.
    """
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # already reaped
        if waited == pid:
            return
        time.sleep(_POLL_S)
    _signal(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _signal(pid: int, sig: signal.Signals) -> None:
    # Exiting between the identity check and the signal is the outcome we want anyway.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, state_dir: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _is_gone(pid, state_dir):
            return True
        time.sleep(_POLL_S)
    return False


def _is_gone(pid: int, state_dir: Path) -> bool:
    """For our own child, gone means reaped (an exiting child loses its command line before it can be reaped,
    and must not be left a zombie); for any other process, no longer this registry."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not is_registry_process(pid, state_dir)
    return waited == pid
