"""The registry client's reading of answers: which HTTP answer is which error, against a stand-in HTTP server
on loopback (the real registry's answers are checked by the integration tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from pipelines.config.registry import RegistryConfig
from pipelines.errors import ConfigError
from pipelines.schemas.registry_client import (
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    SchemaNotFound,
    SchemaRejected,
    with_retries,
)

Answer = tuple[int, str]


async def asked(answer: Answer, call: Callable[[RegistryClient], Awaitable[Any]]) -> Any:
    """``call`` on a client of a server that answers every request with ``answer`` (status, body)."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=answer[0], text=answer[1], content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with RegistryClient(RegistryConfig(url=f"http://127.0.0.1:{port}")) as client:
            return await call(client)
    finally:
        await runner.cleanup()


def by_id(client: RegistryClient) -> Awaitable[Any]:
    return client.schema_by_id(7)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((404, '{"error_code": 40403, "message": "Schema 7 not found"}'), SchemaNotFound),
        ((404, '{"error_code": 404, "detail": "Could not find resource"}'), ConfigError),  # a wrong base URL
        ((404, "<html>nginx</html>"), ConfigError),
        ((409, '{"error_code": 409, "message": "incompatible"}'), SchemaRejected),
        ((422, '{"error_code": 42201, "message": "invalid schema"}'), SchemaRejected),
        ((401, '{"message": "unauthorized"}'), ConfigError),
        ((503, '{"message": "down"}'), RegistryUnavailable),
        ((200, "<html>a login page</html>"), ConfigError),
        ((200, '{"schemaType": "AVRO"}'), RegistryError),  # an answer without the schema
    ],
)
def test_each_answer_is_its_own_error(answer: Answer, error: type[Exception]) -> None:
    with pytest.raises(error):
        asyncio.run(asked(answer, by_id))


def test_a_schema_is_read_with_its_type() -> None:
    found = asyncio.run(asked((200, '{"schema": "\\"string\\"", "schemaType": "JSON"}'), by_id))

    assert (found.id, found.schema, found.schema_type) == (7, '"string"', "JSON")


def test_an_unknown_compatibility_mode_is_an_error_not_a_verdict() -> None:
    with pytest.raises(RegistryError, match="unknown compatibility mode"):
        asyncio.run(asked((200, '{"compatibilityLevel": null}'), lambda client: client.compatibility()))


def test_a_registry_nobody_listens_on_is_unavailable_and_retried_then_given_up() -> None:
    client = RegistryClient(RegistryConfig(url="http://127.0.0.1:1"))
    calls: list[int] = []

    async def ask() -> Any:
        calls.append(1)
        async with client:
            return await client.schema_by_id(1)

    with pytest.raises(RegistryUnavailable, match=r"gave up after 0\.5 s"):
        asyncio.run(with_retries(ask, unavailable_s=0.5))
    assert len(calls) >= 2, "asked again before giving up"


def test_a_url_holding_a_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="password_env"):
        RegistryClient(RegistryConfig(url="http://user:secret@127.0.0.1:8081"))
