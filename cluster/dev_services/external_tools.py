"""The external programs a dev service needs (java, mvn, openssl): finding them, running them, quoting their output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .service_errors import ServiceErrors

__all__ = ["last_lines", "read_log_tail", "require_tool", "run_tool"]

_INSTALL_HINTS = {
    "java": "install Java 17+ (e.g. `apt-get install openjdk-17-jre-headless`) so `java` is on PATH",
    "mvn": "install Apache Maven 3.8+ (e.g. `apt-get install maven`) so `mvn` is on PATH",
    "openssl": "install OpenSSL (e.g. `apt-get install openssl`) so `openssl` is on PATH",
}


def require_tool(name: str, errors: ServiceErrors) -> Path:
    """Return the absolute path of ``name`` on PATH; raise ``errors.error(...)`` naming the install step if not.

    Only PATH is searched (not ``JAVA_HOME``): the ``java`` a service runs is the one its user's shell would.
    """
    found = shutil.which(name)
    if found is None:
        raise errors.error(
            f"`{name}` was not found on PATH; the dev {errors.noun} needs it.\n"
            f"Operator action: {_INSTALL_HINTS.get(name, f'install {name}')}."
        )
    return Path(found)


def run_tool(
    command: list[str], timeout_s: float, doing: str, errors: ServiceErrors
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (no shell) and return it done, output captured as text, exit code unchecked.

    Raises ``errors.error(...)`` naming ``doing`` (e.g. "Formatting Kafka storage in X") when it takes over
    ``timeout_s``; the command line is left out of that error, as it may hold passwords.
    """
    try:
        return subprocess.run(  # noqa: S603 - fixed argv built from our own paths, no shell
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        # not `from exc`: its text is the command line, which may hold passwords (StorageTool --add-scram)
        raise errors.error(
            f"{doing} took over {timeout_s:.0f} s.\nOperator action: check the machine is not overloaded, then retry."
        ) from None


def last_lines(text: str, count: int = 30) -> str:
    """Return the last ``count`` non-empty lines of ``text``, for error messages."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def read_log_tail(log_path: Path, count: int = 40) -> str:
    """The last ``count`` non-empty lines of the file ``log_path``, or a note that there is none. Never raises."""
    try:
        return last_lines(log_path.read_text(errors="replace"), count)
    except OSError:
        return "(no log written)"
