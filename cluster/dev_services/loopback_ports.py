"""Choosing loopback ports for a dev service: a requested one shown free, or any free one for 0."""

from __future__ import annotations

import socket

from .service_errors import ServiceErrors

__all__ = ["LOOPBACK_HOST", "bound_loopback_socket", "free_loopback_port"]

LOOPBACK_HOST = "127.0.0.1"  # every dev service listens here only: never reachable from another machine


def bound_loopback_socket(port: int, errors: ServiceErrors, operator_action: str) -> socket.socket:
    """A TCP socket bound to ``127.0.0.1:port`` (0: any free port), proving the port can be listened on.

    The caller closes it (it is a context manager). Holding several at once gives distinct free ports.
    SO_REUSEADDR matches what the JVM does, so a port in TIME_WAIT from a previous run counts as free. Raises
    ``errors.error(...)`` when the port is taken, ending with "Operator action: <operator_action>".
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK_HOST, port))
    except OSError as exc:
        sock.close()
        raise errors.error(
            f"Port {port} on {LOOPBACK_HOST} is already in use ({exc.strerror}).\nOperator action: {operator_action}"
        ) from exc
    return sock


def free_loopback_port(port: int, errors: ServiceErrors, operator_action: str) -> int:
    """``port``, once shown free on 127.0.0.1, or a free one for 0; raises as ``bound_loopback_socket`` does.

    The socket is closed before the service binds the port, so another program could take it in between: the
    service then fails at start-up, which its own start reports.
    """
    with bound_loopback_socket(port, errors, operator_action) as sock:
        chosen: int = sock.getsockname()[1]
        return chosen
