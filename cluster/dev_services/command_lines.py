"""Reading another process's command line, which is how a dev service recognises its own JVM by pid."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["command_line"]


def command_line(pid: int) -> list[str]:
    """Return the argv of ``pid``, or [] when it does not exist, is a zombie or cannot be read.

    Never raises and never signals ``pid``; reads ``/proc`` where there is one, else asks ``ps``.
    """
    proc = Path("/proc")
    if proc.is_dir():
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    return _command_line_from_ps(pid)


def _command_line_from_ps(pid: int) -> list[str]:
    """Fallback for systems without /proc (macOS): ``ps`` joins argv with spaces, good enough to match."""
    done = subprocess.run(  # noqa: S603 - fixed argv, pid is an int
        ["/bin/ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return done.stdout.split() if done.returncode == 0 else []
