"""Locating the external programs the dev registry needs (java, mvn) and reading their output."""

from __future__ import annotations

import shutil
from pathlib import Path

from ._errors import DevRegistryError

__all__ = ["last_lines", "read_log_tail", "require_tool"]

_INSTALL_HINTS = {
    "java": "install Java 17+ (e.g. `apt-get install openjdk-17-jre-headless`) so `java` is on PATH",
    "mvn": "install Apache Maven 3.8+ (e.g. `apt-get install maven`) so `mvn` is on PATH",
}


def require_tool(name: str) -> Path:
    """Return the absolute path of ``name`` on PATH; raise DevRegistryError naming the install step if not."""
    found = shutil.which(name)
    if found is None:
        raise DevRegistryError(
            f"`{name}` was not found on PATH; the dev schema registry needs it.\n"
            f"Operator action: {_INSTALL_HINTS.get(name, f'install {name}')}."
        )
    return Path(found)


def last_lines(text: str, count: int = 30) -> str:
    """Return the last ``count`` non-empty lines of ``text``, for error messages."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def read_log_tail(log_path: Path, count: int = 40) -> str:
    """The last ``count`` non-empty lines of the file ``log_path``, or a note that there is none."""
    try:
        return last_lines(log_path.read_text(errors="replace"), count)
    except OSError:
        return "(no log written)"
