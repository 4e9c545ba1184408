"""Asking a broker for cluster metadata with aiokafka, from synchronous code.

The probe first checks that the port accepts TCP connections (silent, cheap), and only then sends a
metadata request, so polling a broker that is still starting does not fill the caller's log with
aiokafka's connection errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

__all__ = ["broker_reachable", "run_blocking"]

_T = TypeVar("_T")


def broker_reachable(bootstrap: str, timeout_s: float = 3.0, options: Mapping[str, Any] | None = None) -> bool:
    """True when a broker at ``bootstrap`` (``host:port[,host:port...]``) answers a metadata request
    that lists at least one broker; ``options`` are the aiokafka security options (TLS, SASL) to connect
    with.

    Never raises for an unreachable, starting or malformed address; blocks for about ``timeout_s`` at
    most. Safe to call with or without a running event loop in the calling thread.
    """
    if not any(_accepts_tcp(address, timeout_s) for address in bootstrap.split(",")):
        return False
    return run_blocking(_has_brokers(bootstrap, timeout_s, dict(options or {})))


def _accepts_tcp(address: str, timeout_s: float) -> bool:
    host, _, port = address.strip().rpartition(":")
    if not port.isdigit():
        return False
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


async def _has_brokers(bootstrap: str, timeout_s: float, options: dict[str, Any]) -> bool:
    options.update(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    admin = AIOKafkaAdminClient(**options)
    try:
        cluster = await asyncio.wait_for(_describe_cluster(admin), timeout_s)
    except (KafkaError, OSError, asyncio.TimeoutError):
        return False
    finally:
        await admin.close()
    return bool(cluster.get("brokers"))


async def _describe_cluster(admin: AIOKafkaAdminClient) -> dict[str, Any]:
    await admin.start()
    cluster: dict[str, Any] = await admin.describe_cluster()
    return cluster


def run_blocking(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion on a private event loop, in a helper thread if one is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-dev-probe") as pool:
        return pool.submit(asyncio.run, coro).result()
