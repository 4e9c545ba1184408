"""A loopback TCP proxy between eventray and a dev broker that fails on demand: the chaos tests' and the
guarantees benchmark's network faults.

The broker advertises the proxy's port (``DevBrokerConfig.advertised_port``), so every client connection,
bootstrap or not, goes through it. Faults, set from any thread while a run is under way:

- **blackhole**: connections stay open and new ones are accepted, but no byte moves either way until healed
  (what a dropped route looks like: requests time out; bytes held are delivered after healing, as TCP's
  retransmissions would);
- **reset**: every open connection is aborted (a TCP reset) and new ones are refused by an immediate reset
  until healed (a broker host that crashed and restarted, as the client sees it);
- **delay**: each chunk is held ``delay_s`` before it is forwarded (a slow or congested network);
- **delay requests** of one Kafka API (:meth:`FaultProxy.delay_requests`, e.g. EndTxn, api key 26): the proxy
  reads the client's request frames (size, api key) and holds each of that kind ``seconds`` before it is
  forwarded, with everything after it on that connection (a transaction commit whose outcome the client cannot
  know in time);
- **heal**: back to forwarding at once.

The proxy runs its own event loop in a thread, so a test that blocks in ``run_pipeline`` can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["FaultProxy", "fault_proxy"]

Mode = Literal["forward", "blackhole", "reset", "delay"]


@dataclass
class FaultProxy:
    """Listens on ``127.0.0.1:port`` and forwards to ``127.0.0.1:target_port`` (see the module docstring)."""

    target_port: int
    port: int = 0
    mode: Mode = "forward"
    delay_s: float = 0.0
    connections: int = 0  # accepted so far
    resets: int = 0  # connections aborted by reset()
    delayed: int = 0  # requests held by delay_requests()
    held_requests: dict[int, float] = field(default_factory=dict)  # api key -> seconds
    _loop: asyncio.AbstractEventLoop | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)  # clear while blackholed

    def blackhole(self) -> None:
        self._set("blackhole")

    def reset(self) -> None:
        """Abort every open connection now; refuse new ones until :meth:`heal`."""
        self._set("reset")
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._abort_all(), self._loop).result(timeout=10)

    def delay(self, seconds: float) -> None:
        self.delay_s = seconds
        self._set("delay")

    def delay_requests(self, api_key: int, seconds: float) -> None:
        """Hold every client request of Kafka API ``api_key`` for ``seconds`` (until :meth:`heal`)."""
        self.held_requests = {api_key: seconds}

    def heal(self) -> None:
        self.held_requests = {}
        self._set("forward")

    def _set(self, mode: Mode) -> None:
        """Switch to ``mode`` from any thread; the pipes see it before their next chunk."""
        self.mode = mode
        assert self._loop is not None
        flowing = self._flowing
        self._loop.call_soon_threadsafe(flowing.clear if mode == "blackhole" else flowing.set)

    async def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
            self.resets += 1
        self._writers.clear()

    async def serve(self, started: threading.Event, stopping: asyncio.Event) -> None:
        """Listen until ``stopping`` is set (:func:`fault_proxy` runs it on a loop of its own); ``started`` is set
        once ``port`` is known."""
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._flowing.set()
        started.set()
        async with server:
            await stopping.wait()
            server.close()
            await self._abort_all()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()  # the broker is down: the client sees its connection refused
            return
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(
            self._pipe_requests(client_reader, server_writer),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, server_writer):
            self._writers.discard(writer)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                await self._flowing.wait()  # blackholed: the chunk is held, as TCP would retransmit it
                if self.mode == "reset":
                    return
                if self.mode == "delay":
                    await asyncio.sleep(self.delay_s)
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def _pipe_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to broker, frame by frame (a request is a 4-byte size, then its api key first), so that
        requests of a held kind wait before they go on."""
        pending = bytearray()
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                if self.mode == "reset":
                    return
                if self.mode == "delay":
                    await asyncio.sleep(self.delay_s)
                pending += chunk
                while len(pending) >= 6 and len(pending) >= 4 + (size := int.from_bytes(pending[:4], "big")):
                    frame = bytes(pending[: 4 + size])
                    del pending[: 4 + size]
                    held_s = self.held_requests.get(int.from_bytes(frame[4:6], "big", signed=True))
                    if held_s is not None:
                        self.delayed += 1
                        await asyncio.sleep(held_s)
                    writer.write(frame)
                    await writer.drain()
        writer.close()


@contextlib.contextmanager
def fault_proxy(target_port: int, port: int = 0) -> Iterator[FaultProxy]:
    """A running :class:`FaultProxy` (on ``port``, 0: a free one) for the body of the ``with``."""
    proxy = FaultProxy(target_port, port)
    started = threading.Event()
    stop: list[asyncio.Event] = []
    loop = asyncio.new_event_loop()

    def run() -> None:
        asyncio.set_event_loop(loop)
        stopping = asyncio.Event()
        stop.append(stopping)
        loop.run_until_complete(proxy.serve(started, stopping))

    thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
    thread.start()
    if not started.wait(timeout=10):
        raise RuntimeError("the fault proxy did not start listening within 10 s")
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(timeout=10)
        loop.close()
