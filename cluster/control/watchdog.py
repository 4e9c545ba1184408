"""Actors that stop answering are killed, so the topology is recovered as from a dead one (ARCHITECTURE.md
section 4).

A SIGSTOPped process, a deadlock or a machine that froze leaves a Ray actor alive but silent: every call to it waits
for ever, the pipeline stalls and lag grows, and no ``RayActorError`` ever starts a recovery. The Supervisor's
watchdog keeps one ping (``alive()``, in a concurrency group of its own: ``cluster/control/remote.py``, so a busy
actor still answers) in flight per running actor, a new one as soon as the last was answered, at most one per
``interval_s``. An actor that has answered before and whose ping has waited ``unresponsive_after_s`` is killed; the
calls waiting on it fail with ``RayActorError`` and the ordinary recovery restores the topology from the last
checkpoint. An actor that has not answered yet (still starting: imports, connections) is not judged. Judging by the
age of the unanswered ping, not by missed rounds, keeps a slow answer or a late round of the Supervisor's own loop
from counting as silence.

Pure apart from the injected ping and kill: time comes from ``clock``, so unit tests drive it tick by tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Watchdog", "Watched"]

log = logging.getLogger(__name__)


class Watched(Protocol):
    @property
    def actor_id(self) -> str: ...


Actor = TypeVar("Actor", bound=Watched)


@dataclass
class _Ping:
    sent_at: float
    answer: asyncio.Future[object]


class Watchdog(Generic[Actor]):
    """Kills the actors of ``actors()`` that answered once and then left a ping unanswered too long."""

    def __init__(
        self,
        unresponsive_after_s: float,
        ping: Callable[[Actor], Awaitable[object]],
        kill: Callable[[Actor], None],
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 1.0,
    ) -> None:
        """``ping(actor)`` completes when the actor answers (or is found dead: the ordinary recovery handles
        that); it is never cancelled, however long it waits."""
        self._after_s = unresponsive_after_s
        self._ping, self._kill, self._clock = ping, kill, clock
        self._interval_s = interval_s
        self._pending: dict[str, _Ping] = {}
        self._answered: set[str] = set()
        self.killed: list[str] = []

    async def watch(self, actors: Callable[[], Sequence[Actor]]) -> None:
        """Run until cancelled; a round that fails is logged and the next one tried."""
        while True:
            try:
                self.tick(actors())
            except Exception:
                log.exception("watchdog round failed")
            await asyncio.sleep(self._interval_s)

    def tick(self, actors: Sequence[Actor]) -> list[str]:
        """One round: note answers, kill actors silent too long, send pings where none is in flight; return the
        ids killed."""
        now = self._clock()
        self._forget(gone=set(self._pending) - {actor.actor_id for actor in actors})
        killed = []
        for actor in actors:
            ping = self._pending.get(actor.actor_id)
            if ping is not None and ping.answer.done():
                self._answered.add(actor.actor_id)
                del self._pending[actor.actor_id]
                ping = None
            if ping is None:
                self._pending[actor.actor_id] = _Ping(now, asyncio.ensure_future(self._ping(actor)))
            elif actor.actor_id in self._answered and now - ping.sent_at >= self._after_s:
                log.warning("actor %s has not answered for %.1f s: killing it to recover", actor.actor_id,
                            now - ping.sent_at)  # fmt: skip
                self._kill(actor)
                self._answered.discard(actor.actor_id)
                killed.append(actor.actor_id)
        self.killed += killed
        return killed

    def close(self) -> None:
        """Stop waiting for the pings in flight."""
        self._forget(gone=set(self._pending))

    def _forget(self, gone: set[str]) -> None:
        """Drop the pings of actors no longer watched (replaced by a recovery or a rescale)."""
        for actor_id in gone:
            self._pending.pop(actor_id).answer.cancel()
            self._answered.discard(actor_id)
