"""Errors raised by the dev Kafka broker tooling.

Tree (a branch of :mod:`pipelines.errors`)::

    FatalError
    └── DevBrokerError        anything that stops the dev broker from being resolved, started or stopped

Messages are built at the raise site and end with an ``Operator action:`` line naming the fix. Every
error is picklable: only the message string reaches ``Exception.__init__``. The helpers shared with the
dev schema registry (:mod:`cluster.dev_services`) raise ``DevBrokerError`` too, through ``BROKER_ERRORS``.
"""

from __future__ import annotations

from cluster.dev_services import ServiceErrors
from pipelines.errors import FatalError

__all__ = ["BROKER_ERRORS", "DevBrokerError"]


class DevBrokerError(FatalError):
    """The dev broker could not be resolved, started, probed or stopped; the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


BROKER_ERRORS = ServiceErrors(noun="Kafka broker", error=DevBrokerError)
