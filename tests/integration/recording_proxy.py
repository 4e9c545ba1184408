"""A loopback TCP proxy that records every byte it forwards, both ways: what an eavesdropper on the wire sees."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["Recording", "recording_proxy"]


@dataclass
class Recording:
    """The proxy's address and the bytes that crossed it so far."""

    address: str
    wire: bytearray = field(default_factory=bytearray)

    def count(self, needle: bytes) -> int:
        return bytes(self.wire).count(needle)


@contextlib.asynccontextmanager
async def recording_proxy(target: str) -> AsyncIterator[Recording]:
    """Listen on ``127.0.0.1:<free port>`` and forward each connection to ``target`` (``host:port``)."""
    host, _, port = target.rpartition(":")
    recording = Recording("")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                recording.wire.extend(chunk)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def forward(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    recording.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield recording
    finally:
        server.close()
        await server.wait_closed()
