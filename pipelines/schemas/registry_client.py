"""A client of the Confluent Schema Registry REST API (Confluent, Karapace, Apicurio's ``/apis/ccompat/v7``).

Only what eventray needs: a writer schema by id, a subject's versions, looking up and registering a schema
under a subject, a subject's compatibility mode and a compatibility test. Every call is one HTTP request with
the config's timeout; the caller decides about retries. Errors (:class:`RegistryError` subclasses, and
:class:`RegistryUnavailable` for a registry that may answer later) have messages that name the registry, the
subject or id and what to do, never a library's wording alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from pipelines.config.registry import COMPATIBILITY_MODES, RegistryConfig, registry_url
from pipelines.config.tls import tls_context
from pipelines.errors import ConfigError, FatalError, RetriableError

__all__ = [
    "RegisteredSchema",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaNotFound",
    "SchemaRejected",
    "with_retries",
]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_FIRST_RETRY_S = 0.2
_MAX_RETRY_S = 5.0
T = TypeVar("T")

log = logging.getLogger(__name__)


class RegistryError(FatalError):
    """The registry answered with an error."""


class RegistryUnavailable(RetriableError):
    """The registry could not be reached, timed out or failed (5xx): nothing about the schema is known."""


class SchemaNotFound(RegistryError):
    """The registry does not know the id, subject or version asked for (404)."""


class SchemaRejected(RegistryError):
    """The registry refused a schema: incompatible with the subject (409) or invalid (422)."""


@dataclass(frozen=True)
class RegisteredSchema:
    """A schema as the registry holds it: its global id, its text (``schema``), its type (AVRO unless told)
    and, when known, the subject and version it was found under."""

    id: int
    schema: str
    schema_type: str = "AVRO"
    subject: str | None = None
    version: int | None = None


class RegistryClient:
    """One registry, one HTTP session (open it with ``async with``)."""

    def __init__(self, config: RegistryConfig, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.url = registry_url(config, environ)
        if urlsplit(self.url).password is not None:
            raise ConfigError(
                "schema.registry: the registry URL holds a password; give the credentials in username_env and "
                "password_env (never printed), and the URL without them"
            )
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._auth = _basic_auth(config, environ)
        self._ssl: ssl.SSLContext | None = tls_context(config.tls) if config.tls is not None else None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RegistryClient:
        return self.open()

    def open(self) -> RegistryClient:
        """Open the HTTP session (in a running event loop); :meth:`close` it when done."""
        self._session = aiohttp.ClientSession(timeout=self._timeout, auth=self._auth)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        what = f"schema id {schema_id}"
        body = await self._request("GET", f"/schemas/ids/{schema_id}", what=what)
        return RegisteredSchema(schema_id, _answered(body, "schema", self.url, what), body.get("schemaType") or "AVRO")

    async def subjects(self) -> list[str]:
        return list(await self._request("GET", "/subjects", what="the subjects"))

    async def versions(self, subject: str) -> list[int]:
        return [int(v) for v in await self._request("GET", f"/subjects/{_path(subject)}/versions", what=subject)]

    async def version(self, subject: str, version: int | str) -> RegisteredSchema:
        body = await self._request("GET", f"/subjects/{_path(subject)}/versions/{version}", what=subject)
        schema_id, text = _answered(body, "id", self.url, subject), _answered(body, "schema", self.url, subject)
        number = _answered(body, "version", self.url, subject)
        return RegisteredSchema(int(schema_id), text, body.get("schemaType") or "AVRO", subject, int(number))

    async def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        """The id and version ``schema`` is registered with under ``subject``; SchemaNotFound if it is not."""
        body = await self._request("POST", f"/subjects/{_path(subject)}", {"schema": schema}, what=subject)
        schema_id, number = _answered(body, "id", self.url, subject), _answered(body, "version", self.url, subject)
        return RegisteredSchema(int(schema_id), schema, "AVRO", subject, int(number))

    async def register(self, subject: str, schema: str, schema_type: str = "AVRO") -> int:
        """Register ``schema`` (of ``schema_type``: AVRO, JSON, PROTOBUF) under ``subject`` (the registry checks
        the subject's compatibility): its id."""
        body = {"schema": schema} if schema_type == "AVRO" else {"schema": schema, "schemaType": schema_type}
        path = f"/subjects/{_path(subject)}/versions"
        return int(_answered(await self._request("POST", path, body, what=subject), "id", self.url, subject))

    async def compatibility(self, subject: str | None = None) -> str:
        """The subject's compatibility mode, or the registry's default (``subject`` None or without its own)."""
        body: Any = None
        if subject is not None:
            try:
                body = await self._request("GET", f"/config/{_path(subject)}", what=subject)
            except SchemaNotFound:
                body = None
        if body is None:
            body = await self._request("GET", "/config", what="the default compatibility")
        mode = body.get("compatibilityLevel") or body.get("compatibility") if isinstance(body, dict) else None
        if mode not in COMPATIBILITY_MODES:
            raise RegistryError(f"schema registry {self.url} answered an unknown compatibility mode: {str(body)[:200]}")
        return str(mode)

    async def set_compatibility(self, subject: str, mode: str) -> None:
        await self._request("PUT", f"/config/{_path(subject)}", {"compatibility": mode}, what=subject)

    async def is_compatible(self, subject: str, schema: str, version: int | str = "latest") -> bool:
        """The registry's verdict on ``schema`` against the subject's ``version`` under the subject's mode."""
        path = f"/compatibility/subjects/{_path(subject)}/versions/{version}"
        return bool(_answered(await self._request("POST", path, {"schema": schema}, what=subject), "is_compatible",
                              self.url, subject))  # fmt: skip

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None, *, what: str) -> Any:
        if self._session is None:
            raise RuntimeError("open the RegistryClient with `async with` before calling it")
        data = None if body is None else json.dumps(body)
        try:
            async with self._session.request(
                method, self.url + path, data=data, headers={"Content-Type": _CONTENT_TYPE}, ssl=self._ssl
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise RegistryUnavailable(
                f"schema registry {self.url} unreachable asking for {what}: {type(error).__name__} {error}".rstrip()
            ) from None
        if status < 300:
            try:
                return json.loads(text)
            except ValueError:
                raise ConfigError(
                    f"{self.url} answered {method} {path} with something that is not JSON: is it a schema registry's "
                    "Confluent-compatible API? (Apicurio: http://HOST:PORT/apis/ccompat/v7)"
                ) from None
        message = _error_message(text)
        if status == 404 and _error_code(text) // 100 == 404:  # 40401 subject, 40402 version, 40403 schema
            raise SchemaNotFound(f"schema registry {self.url}: {what} not found ({message})")
        if status == 404:
            raise ConfigError(
                f"{self.url} has no schema registry API at {path} (HTTP 404: {message}): check the registry URL "
                "(Confluent, Karapace: http://HOST:8081; Apicurio: http://HOST:PORT/apis/ccompat/v7)"
            )
        if status in (409, 422):
            raise SchemaRejected(f"schema registry {self.url} refused the schema for {what}: {message}")
        if status in (401, 403):
            raise ConfigError(
                f"schema registry {self.url} refused the credentials ({status}): check schema.registry.username_env "
                "and password_env"
            )
        raise RegistryUnavailable(f"schema registry {self.url} failed asking for {what}: HTTP {status} {message}")


def _path(subject: str) -> str:
    return quote(subject, safe="")


def _error_code(text: str) -> int:
    """The ``error_code`` of a Confluent-style error body (0 if none)."""
    try:
        body = json.loads(text)
    except ValueError:
        return 0
    code = body.get("error_code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else 0


def _answered(body: Any, key: str, url: str, what: str) -> Any:
    """``body[key]``, or a RegistryError saying the registry's answer lacks it."""
    if not isinstance(body, dict) or key not in body:
        raise RegistryError(f"schema registry {url} answered about {what} without {key!r}: {str(body)[:200]}")
    return body[key]


def _error_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)[:500]
    return str(body)[:200]


def _basic_auth(config: RegistryConfig, environ: Mapping[str, str]) -> aiohttp.BasicAuth | None:
    if config.username_env is None or config.password_env is None:
        return None
    missing = [name for name in (config.username_env, config.password_env) if not environ.get(name)]
    if missing:
        raise ConfigError(f"schema.registry: export {' and '.join(missing)} (the registry's basic-auth credentials)")
    return aiohttp.BasicAuth(environ[config.username_env], environ[config.password_env])


async def with_retries(call: Callable[[], Awaitable[T]], unavailable_s: float) -> T:
    """``call()`` again while it raises :class:`RegistryUnavailable`, backing off (0.2 s, doubling to 5 s), for
    at most ``unavailable_s``; then that error, saying how long it was tried. Other errors pass at once."""
    deadline = time.monotonic() + unavailable_s
    wait = _FIRST_RETRY_S
    while True:
        try:
            return await call()
        except RegistryUnavailable as error:  # noqa: PERF203 - a retry loop: the error is why it loops
            if time.monotonic() + wait > deadline:
                raise RegistryUnavailable(
                    f"{error}; gave up after {unavailable_s:g} s (schema.registry.unavailable_s)"
                ) from None
            log.warning("%s; retrying in %.1f s", error, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, _MAX_RETRY_S)
