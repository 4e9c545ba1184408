"""Errors raised by the dev schema registry tooling.

Tree (a branch of :mod:`pipelines.errors`)::

    FatalError
    └── DevRegistryError      anything that stops the dev registry from being built, started or stopped

Messages are built at the raise site and end with an ``Operator action:`` line naming the fix. Every
error is picklable: only the message string reaches ``Exception.__init__``. The helpers shared with the
dev Kafka broker (:mod:`cluster.dev_services`) raise ``DevRegistryError`` too, through ``REGISTRY_ERRORS``.
"""

from __future__ import annotations

from cluster.dev_services import ServiceErrors
from pipelines.errors import FatalError

__all__ = ["REGISTRY_ERRORS", "DevRegistryError"]


class DevRegistryError(FatalError):
    """The dev registry could not be built, started, probed or stopped; the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


REGISTRY_ERRORS = ServiceErrors(noun="schema registry", error=DevRegistryError)
