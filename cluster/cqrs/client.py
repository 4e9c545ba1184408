"""A Python client of the command gateway and the query router (asyncio, over their HTTP endpoints).

client = CqrsClient("http://127.0.0.1:8096", "http://127.0.0.1:8095")
reply = await client.command("accounts", "acc-7", {"command_type": "Deposit", "amount_cents": 500})
view = await client.view("balances", "acc-7", min_position=reply["read_token"])   # reads its own write
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import pyarrow as pa

from cluster.cqrs.router import QueryError

__all__ = ["CqrsClient", "CqrsError"]


class CqrsError(QueryError):
    """The gateway or the router answered an error: its HTTP ``status`` and JSON ``body``."""

    def __init__(self, message: str, status: int = 500, body: dict[str, Any] | None = None) -> None:
        super().__init__(message, status)
        self.body = body or {}

    @classmethod
    def answered(cls, status: int, body: dict[str, Any]) -> CqrsError:
        return cls(f"HTTP {status}: {body.get('error', body)}", status, body)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CqrsError, (str(self), self.status, self.body))


class CqrsClient:
    """Commands to ``gateway_url``, queries to ``query_url`` (keys and ids quoted into the URL); a 503 (a move or
    a recovery outlasting the router's own retries) is retried after its ``Retry-After``, and a connection that
    could not be made (a router restarting with its pipeline's Supervisor) after a second, up to ``retries``
    times. A connection lost after the request was sent is not retried: a command may have been written (send it
    again with its ``command_id``). ``async with CqrsClient(...) as client:`` closes it at the end."""

    def __init__(self, gateway_url: str | None, query_url: str, retries: int = 3) -> None:
        self.gateway_url = gateway_url
        self.query_url = query_url
        self._retries = retries
        self._session: aiohttp.ClientSession | None = None
        self.retried_503 = 0  # answers 503 (a move or a recovery past the router's bound) retried

    async def __aenter__(self) -> CqrsClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def command(self, aggregate: str, aggregate_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send a command; its reply (``status`` accepted or rejected, ``version``, ``read_token`` ...)."""
        if self.gateway_url is None:
            raise ValueError("this client has no gateway_url: it only queries")
        url = f"{self.gateway_url}/commands/{quote(aggregate, safe='')}/{quote(aggregate_id, safe='')}"
        reply: dict[str, Any] = await self._call("POST", url, body, ok=(200, 409))
        return reply

    async def view(
        self, view: str, key: str, consistency: str | None = None, min_position: str | None = None
    ) -> dict[str, Any]:
        """``{"found", "value", "consistency", ...}`` of one key."""
        params = {name: value for name, value in (("consistency", consistency), ("min_position", min_position))
                  if value is not None}  # fmt: skip
        url = f"{self.query_url}/views/{quote(view, safe='')}/{quote(key, safe='')}"
        answer: dict[str, Any] = await self._call("GET", url, None, params=params)
        return answer

    async def views(self, view: str, keys: list[str], consistency: str | None = None) -> list[Any]:
        """The value of each key (None: none), in the order of ``keys``."""
        body = {"keys": keys} | ({"consistency": consistency} if consistency else {})
        answer = await self._call("POST", f"{self.query_url}/views/{quote(view, safe='')}/lookup", body)
        values: list[Any] = answer["values"]
        return values

    async def views_arrow(self, view: str, keys: list[str], consistency: str | None = None) -> pa.Table:
        """A batch lookup as Arrow: columns ``key``, ``found``, ``value`` (JSON text)."""
        body = {"keys": keys} | ({"consistency": consistency} if consistency else {})
        url = f"{self.query_url}/views/{quote(view, safe='')}/lookup"
        data = await self._call("POST", url, body, params={"format": "arrow"}, raw=True)
        return pa.ipc.open_stream(data).read_all()

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Return once the router has owners to ask (its run started); TimeoutError past ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        session = self._open()
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{self.query_url}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the query router at {self.query_url} was not ready within {timeout_s} s")

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self._session

    async def _call(
        self, method: str, url: str, body: dict[str, Any] | None, params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,), raw: bool = False,
    ) -> Any:  # fmt: skip
        session = self._open()
        data = None if body is None else msgspec.json.encode(body)
        for attempt in range(self._retries + 1):
            try:
                async with session.request(method, url, data=data, params=params,
                                           headers={"Content-Type": "application/json"}) as response:  # fmt: skip
                    content = await response.read()
                    status, retry_after = response.status, response.headers.get("Retry-After", "1")
            except aiohttp.ClientConnectorError:  # not connected, so not sent: a command is never sent twice
                if attempt == self._retries:
                    raise
                await asyncio.sleep(1.0)  # a router restarting with its pipeline's Supervisor
                continue
            if status in ok:
                return content if raw else msgspec.json.decode(content)
            if status == 503 and attempt < self._retries:
                self.retried_503 += 1
                await asyncio.sleep(float(retry_after))
                continue
            try:
                answer = msgspec.json.decode(content) if content else {}
            except msgspec.DecodeError:  # not one of our answers (a proxy's, aiohttp's own 404)
                answer = {"error": content.decode("utf-8", "replace")[:200]}
            raise CqrsError.answered(status, answer if isinstance(answer, dict) else {"error": answer})
        raise AssertionError("unreachable: the last attempt returns or raises")
