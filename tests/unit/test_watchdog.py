"""The watchdog's judgement, round by round on an injected clock: an actor that answered before and then leaves
a ping unanswered ``unresponsive_after_s`` is killed once; one still starting (never answered) is never judged;
a slow answer is an answer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cluster.control.watchdog import Watchdog


@dataclass(frozen=True)
class Actor:
    actor_id: str


class Rig:
    """Actors answer at once unless ``silent``; a silent actor's pings wait until :meth:`wake`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.silent: set[str] = set()
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.killed: list[str] = []
        self.watchdog: Watchdog[Actor] = Watchdog(10.0, self.ping, lambda actor: self.killed.append(actor.actor_id),
                                                  clock=lambda: self.now)  # fmt: skip

    async def ping(self, actor: Actor) -> None:
        if actor.actor_id in self.silent:
            answer = asyncio.get_running_loop().create_future()
            self.waiting.setdefault(actor.actor_id, []).append(answer)
            await answer

    def wake(self, actor: Actor) -> None:
        self.silent.discard(actor.actor_id)
        for answer in self.waiting.pop(actor.actor_id, []):
            answer.set_result(None)

    async def round_at(self, now: float, actors: list[Actor]) -> list[str]:
        self.now = now
        killed = self.watchdog.tick(actors)
        for _ in range(3):  # let the pings just sent, or just answered, run
            await asyncio.sleep(0)
        return killed


SOURCE, AGGREGATE = Actor("source-0"), Actor("aggregate-0")


async def test_an_actor_whose_ping_waits_the_limit_after_it_answered_before_is_killed_once() -> None:
    rig = Rig()
    await rig.round_at(0, [SOURCE, AGGREGATE])
    rig.silent.add("aggregate-0")  # SIGSTOP
    await rig.round_at(1, [SOURCE, AGGREGATE])  # the answer to the first ping is noted; this one will wait
    for second in range(2, 11):
        assert await rig.round_at(second, [SOURCE, AGGREGATE]) == [], f"not yet at {second} s"
    assert await rig.round_at(11, [SOURCE, AGGREGATE]) == ["aggregate-0"]
    assert await rig.round_at(12, [SOURCE, AGGREGATE]) == [], "killed once: its recovery replaces it"
    assert rig.killed == rig.watchdog.killed == ["aggregate-0"]
    assert len(rig.waiting["aggregate-0"]) == 1, "one ping in flight at a time"


async def test_an_actor_that_never_answered_is_still_starting_and_not_judged() -> None:
    rig = Rig()
    rig.silent.add("source-0")
    for second in range(0, 60, 5):
        assert await rig.round_at(second, [SOURCE]) == []
    rig.wake(SOURCE)
    await rig.round_at(60, [SOURCE])  # its first answer is noted
    rig.silent.add("source-0")
    await rig.round_at(61, [SOURCE])  # a ping that will wait
    assert await rig.round_at(70, [SOURCE]) == []
    assert await rig.round_at(71, [SOURCE]) == ["source-0"]


async def test_a_slow_answer_is_an_answer_and_the_rounds_missed_meanwhile_do_not_count() -> None:
    rig = Rig()
    await rig.round_at(0, [AGGREGATE])
    rig.silent.add("aggregate-0")
    await rig.round_at(1, [AGGREGATE])
    assert await rig.round_at(9, [AGGREGATE]) == []
    rig.wake(AGGREGATE)  # answers after 8.5 s: a long C call holding the GIL, say
    await rig.round_at(9.5, [AGGREGATE])
    rig.silent.add("aggregate-0")
    assert await rig.round_at(40, [AGGREGATE]) == [], "the ping of 9.5 s was answered; the one of 40 s waits"
    assert await rig.round_at(50, [AGGREGATE]) == ["aggregate-0"]


async def test_actors_replaced_by_a_recovery_are_forgotten() -> None:
    rig = Rig()
    await rig.round_at(0, [AGGREGATE])
    rig.silent.add("aggregate-0")
    await rig.round_at(1, [AGGREGATE])
    replacement = Actor("aggregate-0-2")
    assert await rig.round_at(20, [replacement]) == [], "the old actor is no longer watched"
    assert rig.waiting["aggregate-0"][0].cancelled(), "its ping is no longer waited for"
    rig.watchdog.close()
