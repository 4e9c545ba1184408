"""Errors raised by the dev Kafka broker tooling.

Tree::

    DevBrokerError            anything that stops the dev broker from being resolved, started or stopped

Messages are built at the raise site and end with an ``Operator action:`` line naming the fix. Every
error is picklable: only the message string reaches ``Exception.__init__``.
"""

from __future__ import annotations

__all__ = ["DevBrokerError"]


class DevBrokerError(Exception):
    """The dev broker could not be resolved, started, probed or stopped; the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
