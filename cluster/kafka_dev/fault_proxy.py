"""A loopback TCP proxy between eventray and a dev broker that fails on demand: the chaos tests' and the
guarantees benchmark's network faults.

The broker advertises the proxy's port (``DevBrokerConfig.advertised_port``), so every client connection,
bootstrap or not, goes through it; so do the broker's requests to itself (its inter-broker listener is the
advertised one: a transaction coordinator's markers), which a fault stalls as it would between two brokers.
Faults, set from any thread while a run is under way:

- **blackhole**: connections stay open and new ones are accepted, but no byte moves either way until healed
  (what a dropped route looks like: requests time out; bytes held are delivered after healing, as TCP's
  retransmissions would);
- **reset**: every open connection is aborted with a TCP reset, and new ones are reset at once until healed (a
  broker host that crashed and restarted, as the client sees it);
- **delay**: each chunk is held ``delay_s`` before it is forwarded (a slow or congested network);
- **hold requests** of one Kafka API (:meth:`FaultProxy.hold_requests`, e.g. :data:`END_TXN_API_KEY`): the proxy
  reads the client's request frames (size, api key) and holds each of that kind up to ``seconds`` (or until
  healed) before it is forwarded, with everything after it on that connection (a transaction commit whose
  outcome the client cannot learn in time);
- **heal**: back to forwarding at once; held requests go on.

The proxy runs its own event loop in a thread (:func:`fault_proxy`), so a test that blocks in ``run_pipeline``
can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Literal

__all__ = ["END_TXN_API_KEY", "FaultProxy", "fault_proxy"]

END_TXN_API_KEY = 26  # Kafka's EndTxn: a transaction's commit or abort
Mode = Literal["forward", "blackhole", "reset", "delay"]
_Pair = tuple[asyncio.StreamWriter, asyncio.StreamWriter]  # client side, broker side


class FaultProxy:
    """Listens on ``127.0.0.1:port`` (0: a free one, known once started) and forwards to
    ``127.0.0.1:target_port`` (read for each new connection, so it may be set after start)."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.mode: Mode = "forward"
        self.delay_s = 0.0
        self.hold_s_by_api_key: dict[int, float] = {}
        self.connections = 0  # accepted so far
        self.resets = 0  # open connections reset by reset()
        self.held_chunks = 0  # chunks that waited out a blackhole
        self.held_request_count = 0  # requests held by hold_requests()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()  # clear while blackholed
        self._holds_released = asyncio.Event()  # set by heal(): held requests go on

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def blackhole(self) -> None:
        """Stop every byte, both ways, on open and new connections, until :meth:`heal`."""
        self._set("blackhole")

    def reset(self) -> None:
        """Reset every open connection now; reset new ones until :meth:`heal`."""
        self._set("reset")
        loop = self._running_loop()
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._reset_open(), loop).result(timeout=10)

    def delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before forwarding it, until :meth:`heal`."""
        self.delay_s = seconds
        self._set("delay")

    def hold_requests(self, api_key: int, seconds: float) -> None:
        """Hold every client request of Kafka API ``api_key`` up to ``seconds``, until :meth:`heal`."""
        self.hold_s_by_api_key = {api_key: seconds}
        loop = self._running_loop()
        if loop is not None:
            loop.call_soon_threadsafe(self._holds_released.clear)

    def heal(self) -> None:
        """Forward at once again; requests being held go on."""
        self.hold_s_by_api_key = {}
        self._set("forward")
        loop = self._running_loop()
        if loop is not None:
            loop.call_soon_threadsafe(self._holds_released.set)

    def heal_after_held_requests(self, count: int, ceiling_s: float = 300.0) -> threading.Thread:
        """A started thread that heals once ``count`` requests were held (progress, not time; ``ceiling_s`` only
        ends a stuck run); join it before the proxy closes."""

        def heal_when_held() -> None:
            deadline = time.monotonic() + ceiling_s
            while self.held_request_count < count and time.monotonic() < deadline:
                time.sleep(0.1)
            self.heal()

        thread = threading.Thread(target=heal_when_held, name="fault-proxy-heal", daemon=True)
        thread.start()
        return thread

    async def serve(self, started: threading.Event, stopping: asyncio.Event) -> None:
        """Listen until ``stopping`` is set (:func:`fault_proxy` runs it on a loop of its own); ``started`` is set
        once ``port`` is known. On the way out every connection is closed and every pipe ended."""
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._flowing.set()
        self._holds_released.set()
        started.set()
        async with server:
            await stopping.wait()
            server.close()
            for pair in list(self._open):
                _abort(pair)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _set(self, mode: Mode) -> None:
        """Switch to ``mode`` from any thread; the pipes see it before their next chunk."""
        self.mode = mode
        loop = self._running_loop()
        if loop is not None:
            flowing = self._flowing
            loop.call_soon_threadsafe(flowing.clear if mode == "blackhole" else flowing.set)

    def _resetting(self) -> bool:
        return self.mode == "reset"

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The proxy's loop, or None once it is closed (a late heal does nothing)."""
        loop = self._loop
        return loop if loop is not None and not loop.is_closed() else None

    async def _reset_open(self) -> None:
        for pair in list(self._open):
            _abort(pair)
            self.resets += 1
        self._open.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            _abort((client_writer,))
            return
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _abort((client_writer,))  # the broker is down: the client sees its connection reset
            return
        pair = (client_writer, server_writer)
        if self._resetting():  # reset() ran while this connection was being made
            _abort(pair)
            return
        self._open.add(pair)
        pipes = [
            asyncio.ensure_future(self._pipe_requests(client_reader, pair)),
            asyncio.ensure_future(self._pipe(server_reader, pair)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.difference_update(pipes)
            self._open.discard(pair)
            for writer in pair:
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        """Broker to client, chunk by chunk."""
        writer = pair[0]
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if not await self._may_forward(pair):
                    return
                writer.write(chunk)
                await writer.drain()
        _end(pair, writer, reset=self.mode == "reset")

    async def _pipe_requests(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        """Client to broker, frame by frame (a request is a 4-byte size, then its api key), so that requests of a
        held kind wait before they go on, with what follows them."""
        writer = pair[1]
        pending = bytearray()
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                pending += chunk
                while len(pending) >= 6 and len(pending) >= 4 + (size := int.from_bytes(pending[:4], "big")):
                    request = bytes(pending[: 4 + size])
                    del pending[: 4 + size]
                    await self._hold_if_held(request)
                    if not await self._may_forward(pair):
                        return
                    writer.write(request)
                    await writer.drain()
        _end(pair, writer, reset=self.mode == "reset")

    async def _may_forward(self, pair: _Pair) -> bool:
        """Wait out a blackhole and a delay; False when the connection is to be reset instead."""
        if not self._flowing.is_set():
            self.held_chunks += 1
            await self._flowing.wait()
        if self.mode == "reset":
            _abort(pair)
            return False
        if self.mode == "delay":
            await asyncio.sleep(self.delay_s)
        return True

    async def _hold_if_held(self, request: bytes) -> None:
        held_s = self.hold_s_by_api_key.get(int.from_bytes(request[4:6], "big", signed=True))
        if held_s is not None:
            self.held_request_count += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._holds_released.wait(), held_s)


def _end(pair: _Pair, writer: asyncio.StreamWriter, reset: bool) -> None:
    """A pipe's end: its writer closed after what was sent (FIN), or the connection reset."""
    if reset:
        _abort(pair)
    else:
        writer.close()


def _abort(writers: tuple[asyncio.StreamWriter, ...]) -> None:
    """Close with a TCP reset (linger 0), not a FIN: what a crashed peer or a dropped route ends with."""
    for writer in writers:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


@contextlib.contextmanager
def fault_proxy(target_port: int, port: int = 0) -> Iterator[FaultProxy]:
    """A running :class:`FaultProxy` (on ``port``, 0: a free one) for the body of the ``with``."""
    proxy = FaultProxy(target_port, port)
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stopping = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(proxy.serve(started, stopping))

    thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
    thread.start()
    if not started.wait(timeout=10):
        raise RuntimeError("the fault proxy did not start listening within 10 s")
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=30)
        if not thread.is_alive():
            loop.close()
