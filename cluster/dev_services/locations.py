"""Where a dev service keeps its downloads and its state by default, and the environment variable that moves them.

``EVENTRAY_CACHE_DIR`` (root of eventray's download cache, default ``~/.cache/eventray``) is read here and
nowhere else, at call time (never at import), so every service's cache moves with it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "default_state_dir"]

_CACHE_ROOT_ENV = "EVENTRAY_CACHE_DIR"


def default_cache_dir(service: str) -> Path:
    """Return ``$EVENTRAY_CACHE_DIR/<service>``, or ``~/.cache/eventray/<service>`` when the variable is unset or
    empty; may be relative (the service's config makes it absolute)."""
    root = os.environ.get(_CACHE_ROOT_ENV) or str(Path.home() / ".cache" / "eventray")
    return Path(root).expanduser() / service


def default_state_dir(service: str) -> Path:
    """Return ``.eventray/<service>`` under the current working directory."""
    return Path.cwd() / ".eventray" / service
