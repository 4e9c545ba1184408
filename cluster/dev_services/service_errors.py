"""How the shared plumbing speaks for one dev service: the name it uses in messages and the error it raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ServiceErrors"]


@dataclass(frozen=True)
class ServiceErrors:
    """The error class and name of the dev service a shared helper works for.

    ``noun`` names the service's process in messages: with "Kafka broker", a missing tool reads "`java` was not
    found on PATH; the dev Kafka broker needs it." and a stuck process "The Kafka broker pid 12 survived SIGKILL.".
    ``error`` builds the service's own error (its ``FatalError`` subclass) from a finished message, which always
    ends with an "Operator action:" line; the shared helpers raise nothing else of their own.
    """

    noun: str
    error: Callable[[str], Exception]
