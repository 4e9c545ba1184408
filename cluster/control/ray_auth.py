"""Ray token authentication: on unless the user turns it off, and refusals that say which side is wrong.

Every process of a cluster must agree on ``RAY_AUTH_MODE`` (ARCHITECTURE.md section 7). eventray defaults it to
``token``; ``RAY_AUTH_MODE=disabled`` is the user's explicit choice. The token comes from where Ray looks for it, in
Ray's order: ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH`` names, else ``~/.ray/auth_token``.

- An embedded Ray with no token anywhere gets a new one in ``~/.ray/auth_token``, written here with mode 0600
  (Ray would write it with the umask's mode).
- Joining a cluster checks the token against the cluster's GCS first, so a wrong token, or auth disabled here
  against a cluster with token auth, is named at once instead of surfacing as Ray's "Failed to connect" after its
  retries. (A token sent to a cluster without auth is not refused, so that mismatch is not seen.)
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import MutableMapping
from pathlib import Path

from pipelines.errors import ConfigError, FatalError

__all__ = [
    "DEFAULT_AUTH_MODE",
    "RayAuthRefused",
    "check_cluster_accepts",
    "prepare_ray_auth",
    "refresh_ray_auth",
    "token_source",
    "write_new_token",
]

DEFAULT_AUTH_MODE = "token"
AUTH_MODES = ("token", "disabled")
_MODE_VARIABLE = "RAY_AUTH_MODE"
_TOKEN_VARIABLE = "RAY_AUTH_TOKEN"  # noqa: S105 - a variable's name, not a token
_TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"  # noqa: S105
_REACH_TIMEOUT_S = 5.0


class RayAuthRefused(FatalError):
    """The Ray cluster refused this process: a wrong token, or token auth on one side only."""


def default_token_path() -> Path:
    """Ray's own default token file (``ray start`` and ``ray get-auth-token`` use it too)."""
    return Path.home() / ".ray" / "auth_token"


def prepare_ray_auth(environ: MutableMapping[str, str], *, embedded: bool) -> str:
    """Default and check the auth environment before Ray starts; returns the mode.

    ``environ`` is changed in place (it is ``os.environ`` for the CLI), so every process started from here, such as
    Ray's own, inherits the same mode.
    """
    mode = environ.setdefault(_MODE_VARIABLE, DEFAULT_AUTH_MODE).strip().lower()
    if mode not in AUTH_MODES:
        raise ConfigError(
            f"{_MODE_VARIABLE}={environ[_MODE_VARIABLE]!r} is not a Ray auth mode: use one of {', '.join(AUTH_MODES)} "
            "(the same value in every process of the cluster)"
        )
    if mode == "token":
        _ensure_token(environ, embedded=embedded)
    return mode


def refresh_ray_auth() -> None:
    """Make this process's Ray see the auth environment :func:`prepare_ray_auth` wrote: Ray reads
    ``RAY_AUTH_MODE`` into its config when it is imported, and caches the token it loaded (as Ray's own
    ``_enable_token_auth`` refreshes them)."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # noqa: PLC0415

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def token_source(environ: MutableMapping[str, str]) -> str:
    """Where this process's token comes from, for messages: never the token itself."""
    if environ.get(_TOKEN_VARIABLE, "").strip():
        return f"${_TOKEN_VARIABLE}"
    if environ.get(_TOKEN_PATH_VARIABLE):
        return f"{_TOKEN_PATH_VARIABLE}={environ[_TOKEN_PATH_VARIABLE]}"
    return str(default_token_path())


def _ensure_token(environ: MutableMapping[str, str], *, embedded: bool) -> None:
    if environ.get(_TOKEN_VARIABLE, "").strip():
        return
    named = environ.get(_TOKEN_PATH_VARIABLE)
    if named:
        if not _readable_token(Path(named)):
            raise ConfigError(
                f"{_TOKEN_PATH_VARIABLE}={named}: no token there (the file is missing, unreadable or empty). "
                f"Operator action: point it at the cluster's token file, or create one: "
                f"python -c 'import secrets; print(secrets.token_hex(32))' > {named}; chmod 600 {named}"
            )
        return
    default = default_token_path()
    if _readable_token(default):
        return
    if not embedded:
        raise ConfigError(
            f"Ray token authentication is on ({_MODE_VARIABLE}=token) and this process has no token. Operator "
            "action: set "
            f"{_TOKEN_PATH_VARIABLE} to the cluster's token file (`ray get-auth-token` on its head prints the token), "
            f"or {_MODE_VARIABLE}=disabled if the cluster was started without authentication"
        )
    write_new_token(default)


def _readable_token(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except OSError:
        return False


def write_new_token(path: Path) -> None:
    """A new random token in ``path``, readable by its owner only (in a directory made 0700 if missing)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secrets.token_hex(32))


def check_cluster_accepts(address: str, environ: MutableMapping[str, str]) -> None:
    """Ask the GCS at ``host:port`` whether it accepts this process, before ``ray.init`` joins it.

    Other address forms (``auto``, ``ray://``) are left to Ray. A GCS that cannot be reached is named here too: Ray's
    own join retries for a while and then only says it failed.
    """
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=_REACH_TIMEOUT_S).close()
    except OSError as error:
        raise FatalError(
            f"no Ray cluster answers at {address} ({error.strerror or error}). Operator action: start one "
            "(`ray start --head`) or check --address"
        ) from None
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # noqa: PLC0415 - as `ray status` does
    from ray.exceptions import AuthenticationError  # noqa: PLC0415

    try:
        GcsClient(address=address)
    except AuthenticationError:
        raise RayAuthRefused(_refusal(address, environ)) from None


def _refusal(address: str, environ: MutableMapping[str, str]) -> str:
    if environ.get(_MODE_VARIABLE, DEFAULT_AUTH_MODE).lower() == "disabled":
        return (
            f"the Ray cluster at {address} requires token authentication and {_MODE_VARIABLE}=disabled here. "
            f"Operator action: set {_MODE_VARIABLE}=token and {_TOKEN_PATH_VARIABLE} to the cluster's token file"
        )
    return (
        f"the Ray cluster at {address} refused this process's token (from {token_source(environ)}): the cluster was "
        f"started with another one. Operator action: use the cluster's token file ({_TOKEN_PATH_VARIABLE}=...; "
        "`ray get-auth-token` on the head prints it)"
    )
