"""Locating the external programs the dev broker needs (java, mvn) and reading process output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ._errors import DevBrokerError

__all__ = ["last_lines", "require_tool", "run_tool"]

_INSTALL_HINTS = {
    "java": "install Java 17+ (e.g. `apt-get install openjdk-17-jre-headless`) so `java` is on PATH",
    "mvn": "install Apache Maven 3.8+ (e.g. `apt-get install maven`) so `mvn` is on PATH",
    "openssl": "install OpenSSL (e.g. `apt-get install openssl`) so `openssl` is on PATH",
}


def require_tool(name: str) -> Path:
    """Return the absolute path of ``name`` on PATH; raise DevBrokerError naming the install step if not."""
    found = shutil.which(name)
    if found is None:
        raise DevBrokerError(
            f"`{name}` was not found on PATH; the dev Kafka broker needs it.\n"
            f"Operator action: {_INSTALL_HINTS.get(name, f'install {name}')}."
        )
    return Path(found)


def last_lines(text: str, count: int = 30) -> str:
    """Return the last ``count`` non-empty lines of ``text``, for error messages."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def run_tool(command: list[str], timeout_s: float, doing: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (no shell) and return it done, exit code unchecked; DevBrokerError naming ``doing`` (e.g.
    "Formatting Kafka storage in X") when it takes over ``timeout_s``."""
    try:
        return subprocess.run(  # noqa: S603 - fixed argv built from our own paths, no shell
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        # not `from exc`: its text is the command line, which may hold passwords (StorageTool --add-scram)
        raise DevBrokerError(
            f"{doing} took over {timeout_s:.0f} s.\nOperator action: check the machine is not overloaded, then retry."
        ) from None
