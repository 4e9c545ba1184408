"""A client of the Confluent Schema Registry REST API (Confluent, Karapace, Apicurio's ``/apis/ccompat/v7``).

Only what eventray needs: a writer schema by id, a subject's versions, looking up and registering a schema
under a subject, a subject's compatibility mode and a compatibility test. Every call is one HTTP request with
the config's timeout; the caller decides about retries. Errors (:class:`RegistryError` subclasses, and
:class:`RegistryUnavailable` for a registry that may answer later) have messages that name the registry, the
subject or id and what to do, never a library's wording alone.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from pipelines.config.registry import RegistryConfig, registry_url
from pipelines.config.tls import tls_context
from pipelines.errors import ConfigError, FatalError, RetriableError

__all__ = [
    "RegisteredSchema",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaNotFound",
    "SchemaRejected",
]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


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
        body = await self._request("GET", f"/schemas/ids/{schema_id}", what=f"schema id {schema_id}")
        return RegisteredSchema(schema_id, body["schema"], body.get("schemaType") or "AVRO")

    async def subjects(self) -> list[str]:
        return list(await self._request("GET", "/subjects", what="the subjects"))

    async def versions(self, subject: str) -> list[int]:
        return [int(v) for v in await self._request("GET", f"/subjects/{_path(subject)}/versions", what=subject)]

    async def version(self, subject: str, version: int | str) -> RegisteredSchema:
        body = await self._request("GET", f"/subjects/{_path(subject)}/versions/{version}", what=subject)
        return RegisteredSchema(
            int(body["id"]), body["schema"], body.get("schemaType") or "AVRO", subject, int(body["version"])
        )

    async def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        """The id and version ``schema`` is registered with under ``subject``; SchemaNotFound if it is not."""
        body = await self._request("POST", f"/subjects/{_path(subject)}", {"schema": schema}, what=subject)
        return RegisteredSchema(int(body["id"]), schema, "AVRO", subject, int(body["version"]))

    async def register(self, subject: str, schema: str, schema_type: str = "AVRO") -> int:
        """Register ``schema`` (of ``schema_type``: AVRO, JSON, PROTOBUF) under ``subject`` (the registry checks
        the subject's compatibility): its id."""
        body = {"schema": schema} if schema_type == "AVRO" else {"schema": schema, "schemaType": schema_type}
        path = f"/subjects/{_path(subject)}/versions"
        return int((await self._request("POST", path, body, what=subject))["id"])

    async def compatibility(self, subject: str | None = None) -> str:
        """The subject's compatibility mode, or the registry's default (``subject`` None or without its own)."""
        if subject is not None:
            try:
                body = await self._request("GET", f"/config/{_path(subject)}", what=subject)
                return str(body.get("compatibilityLevel") or body.get("compatibility"))
            except SchemaNotFound:
                pass
        body = await self._request("GET", "/config", what="the default compatibility")
        return str(body.get("compatibilityLevel") or body.get("compatibility"))

    async def set_compatibility(self, subject: str, mode: str) -> None:
        await self._request("PUT", f"/config/{_path(subject)}", {"compatibility": mode}, what=subject)

    async def is_compatible(self, subject: str, schema: str, version: int | str = "latest") -> bool:
        """The registry's verdict on ``schema`` against the subject's ``version`` under the subject's mode."""
        path = f"/compatibility/subjects/{_path(subject)}/versions/{version}"
        return bool((await self._request("POST", path, {"schema": schema}, what=subject))["is_compatible"])

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
            return json.loads(text)
        message = _error_message(text)
        if status == 404:
            raise SchemaNotFound(f"schema registry {self.url}: {what} not found ({message})")
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
