"""Actors that stop answering are killed, so the topology is recovered as from a dead one (ARCHITECTURE.md
section 4).

A SIGSTOPped process, a deadlock or a machine that froze leaves a Ray actor alive but silent: every call to it
waits for ever, the pipeline stalls and lag grows, and no ``RayActorError`` ever starts a recovery. The
Supervisor's watchdog asks every running actor ``alive()`` once a second, in a concurrency group of its own
(``cluster/remote.py``), so a busy actor still answers within milliseconds. An actor that has answered before
and then leaves ``unresponsive_after_s`` without an answer is killed; the calls waiting on it fail with
``RayActorError`` and the ordinary recovery restores the topology from the last checkpoint. An actor that has
not answered yet (still starting: imports, connections) is not judged.

Pure apart from the injected ping and kill: time comes from ``clock``, so unit tests drive it tick by tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

__all__ = ["Watchdog", "Watched"]

log = logging.getLogger(__name__)


class Watched(Protocol):
    @property
    def actor_id(self) -> str: ...


Actor = TypeVar("Actor", bound=Watched)


class Watchdog(Generic[Actor]):
    """Pings ``actors()`` every ``interval_s``; kills any that answered once and then stayed silent too long."""

    def __init__(
        self,
        unresponsive_after_s: float,
        ping: Callable[[Actor, float], Awaitable[bool]],
        kill: Callable[[Actor], None],
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 1.0,
    ) -> None:
        """``ping(actor, timeout_s)`` is True when the actor answered within ``timeout_s`` (or is already dead:
        the ordinary recovery handles that), False when it did not answer in time."""
        self._after_s = unresponsive_after_s
        self._ping, self._kill, self._clock = ping, kill, clock
        self._interval_s = interval_s
        self._last_answer: dict[str, float] = {}
        self.killed: list[str] = []

    async def watch(self, actors: Callable[[], Sequence[Actor]]) -> None:
        """Run until cancelled."""
        while True:
            await self.tick(actors())
            await asyncio.sleep(self._interval_s)

    async def tick(self, actors: Sequence[Actor]) -> list[str]:
        """Ping ``actors`` once; kill those silent too long; return the ids killed."""
        answers = await asyncio.gather(*(self._ping(actor, self._interval_s) for actor in actors))
        now = self._clock()
        killed = []
        for actor, answered in zip(actors, answers, strict=True):
            if answered:
                self._last_answer[actor.actor_id] = now
                continue
            last = self._last_answer.get(actor.actor_id)
            if last is None or now - last < self._after_s:
                continue
            log.warning("actor %s has not answered for %.1f s: killing it to recover", actor.actor_id, now - last)
            self._kill(actor)
            self._last_answer.pop(actor.actor_id)
            killed.append(actor.actor_id)
        self.killed += killed
        return killed
