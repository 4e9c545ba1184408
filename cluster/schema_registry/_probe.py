"""Asking a registry whether it answers, through the Confluent-compatible API, with the standard library."""

from __future__ import annotations

import http.client
import json
import urllib.request

__all__ = ["ccompat_url", "registry_answers"]

_CCOMPAT_PATH = "/apis/ccompat/v7"


def ccompat_url(host: str, port: int) -> str:
    """The base URL of the Confluent-compatible API of an Apicurio Registry at ``host:port``."""
    return f"http://{host}:{port}{_CCOMPAT_PATH}"


def registry_answers(url: str, timeout_s: float = 3.0) -> bool:
    """True when ``GET <url>/subjects`` answers 200 with a JSON list, as a Confluent-compatible registry does.

    ``url`` is an ``http(s)`` base URL such as ``ccompat_url`` returns. Never raises for an unreachable,
    starting or malformed address; blocks for about ``timeout_s`` at most.
    """
    if not url.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/subjects", timeout=timeout_s) as response:  # noqa: S310 - scheme checked above
            return response.status == 200 and isinstance(json.loads(response.read()), list)
    except (OSError, ValueError, http.client.HTTPException):
        return False
