"""The external programs the dev broker needs (java, mvn, openssl), found and run by the helpers shared with the
dev schema registry (:mod:`cluster.dev_services.external_tools`), failing with ``DevBrokerError``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cluster import dev_services

from ._errors import BROKER_ERRORS

__all__ = ["require_tool", "run_tool"]


def require_tool(name: str) -> Path:
    """Return the absolute path of ``name`` on PATH; raise DevBrokerError naming the install step if not."""
    return dev_services.require_tool(name, BROKER_ERRORS)


def run_tool(command: list[str], timeout_s: float, doing: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (no shell) and return it done, exit code unchecked; DevBrokerError naming ``doing`` (e.g.
    "Formatting Kafka storage in X") when it takes over ``timeout_s``."""
    return dev_services.run_tool(command, timeout_s, doing, BROKER_ERRORS)
