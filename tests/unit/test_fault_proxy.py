"""The network-fault proxy (cluster/kafka_dev/fault_proxy.py) against a loopback echo server: each fault does
what it says, judged by order of events, not by timing."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from cluster.kafka_dev.fault_proxy import fault_proxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback server that echoes every byte back, one thread per connection."""
    server = socket.create_server(("127.0.0.1", 0))

    def echo(connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):  # the proxy resets connections: that ends this one
            while data := connection.recv(65536):
                connection.sendall(data)

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def frame(api_key: int, body: bytes = b"") -> bytes:
    """A Kafka-shaped request frame: its size, then the api key, then the rest."""
    payload = api_key.to_bytes(2, "big") + body
    return len(payload).to_bytes(4, "big") + payload


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client


def receive(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_it_forwards_both_ways(echo_port: int) -> None:
    with fault_proxy(echo_port) as proxy, connect(proxy.port) as client:
        client.sendall(frame(3, b"metadata"))
        assert receive(client, len(frame(3, b"metadata"))) == frame(3, b"metadata")
        assert proxy.connections == 1


def test_a_blackhole_holds_the_bytes_until_healed_then_delivers_them(echo_port: int) -> None:
    with fault_proxy(echo_port) as proxy, connect(proxy.port) as client:
        proxy.blackhole()
        client.sendall(frame(0, b"held"))
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(100)  # nothing comes back while blackholed
        proxy.heal()
        client.settimeout(10)
        assert receive(client, len(frame(0, b"held"))) == frame(0, b"held")


def test_a_delay_holds_each_chunk_at_least_its_delay_then_forwards_it(echo_port: int) -> None:
    """A lower bound only: a slow machine makes the round trip longer, never shorter."""
    with fault_proxy(echo_port) as proxy, connect(proxy.port) as client:
        proxy.delay(0.2)
        started = time.monotonic()
        client.sendall(frame(3, b"slow"))
        assert receive(client, len(frame(3, b"slow"))) == frame(3, b"slow")
        assert time.monotonic() - started >= 0.4, "held once each way"
        proxy.heal()


def test_a_reset_aborts_open_connections_and_refuses_new_ones_until_healed(echo_port: int) -> None:
    with fault_proxy(echo_port) as proxy:
        with connect(proxy.port) as client:
            client.sendall(frame(3))
            assert receive(client, len(frame(3))) == frame(3)
            proxy.reset()
            with pytest.raises(ConnectionError):
                client.sendall(frame(3))
                if not client.recv(100):
                    raise ConnectionResetError("closed")
        assert proxy.resets >= 1
        with pytest.raises(ConnectionError), connect(proxy.port) as refused:  # reset as it connects, or after
            refused.sendall(frame(3))
            if not refused.recv(100):
                raise ConnectionResetError("closed")
        proxy.heal()
        with connect(proxy.port) as client:
            client.sendall(frame(3))
            assert receive(client, len(frame(3))) == frame(3)


def test_a_held_request_waits_with_what_follows_it_while_other_connections_flow_until_healed(echo_port: int) -> None:
    """EndTxn (26) held: its connection's next request waits behind it, another connection's does not, and heal
    lets both held ones go on, in order. Only the EndTxn counts as held."""
    end_txn, produce = frame(26, b"commit"), frame(0, b"records")
    with fault_proxy(echo_port) as proxy, connect(proxy.port) as held, connect(proxy.port) as other:
        proxy.hold_requests(26, 600)
        held.sendall(produce[:3])  # frames split across chunks are reassembled
        held.sendall(produce[3:] + end_txn + produce)
        assert receive(held, len(produce)) == produce, "the request before the EndTxn went on"
        other.sendall(produce)
        assert receive(other, len(produce)) == produce, "another connection flows while the EndTxn is held"
        held.settimeout(0.3)
        with pytest.raises(TimeoutError):
            held.recv(100)  # the EndTxn and the request after it are still held
        proxy.heal()
        held.settimeout(10)
        assert receive(held, len(end_txn) + len(produce)) == end_txn + produce
        assert proxy.held_request_count == 1
