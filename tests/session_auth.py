"""The test session's Ray auth: token mode, as users get it, with a token file of the session's own.

Imported by ``tests/conftest.py`` before anything imports Ray. It never touches ``~/.ray/auth_token``; the token's
directory goes at the session's end (``pytest_unconfigure``: an ``atexit`` hook can be skipped by Ray's own).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cluster.control.ray_auth import write_new_token  # imports no Ray

__all__ = ["remove_session_token", "session_ray_auth"]

_made: list[Path] = []


def session_ray_auth(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add: ``RAY_AUTH_MODE=token`` unless set, and a new token file unless a token is given."""
    added = {"RAY_AUTH_MODE": environ.get("RAY_AUTH_MODE", "token")}
    if added["RAY_AUTH_MODE"] == "token" and not (environ.get("RAY_AUTH_TOKEN") or environ.get("RAY_AUTH_TOKEN_PATH")):
        directory = Path(tempfile.mkdtemp(prefix="eventray-tests-ray-auth-"))  # mode 0700
        _made.append(directory)
        token_file = directory / "auth_token"
        write_new_token(token_file)
        added["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    return added


def remove_session_token() -> None:
    """Remove the token file this module made, if any."""
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)
