"""The watchdog's judgement, tick by tick on an injected clock: an actor that answered before and then stays
silent ``unresponsive_after_s`` is killed once; one still starting (never answered) is never judged."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.watchdog import Watchdog


@dataclass(frozen=True)
class Actor:
    actor_id: str


class Rig:
    def __init__(self) -> None:
        self.now = 0.0
        self.silent: set[str] = set()
        self.killed: list[str] = []
        self.watchdog: Watchdog[Actor] = Watchdog(10.0, self.ping, lambda actor: self.killed.append(actor.actor_id),
                                                  clock=lambda: self.now)  # fmt: skip

    async def ping(self, actor: Actor, timeout_s: float) -> bool:
        assert timeout_s == 1.0, "one interval to answer"
        return actor.actor_id not in self.silent

    async def tick_at(self, now: float, actors: list[Actor]) -> list[str]:
        self.now = now
        return await self.watchdog.tick(actors)


SOURCE, AGGREGATE = Actor("source-0"), Actor("aggregate-0")


async def test_an_actor_silent_for_the_limit_after_answering_is_killed_once() -> None:
    rig = Rig()
    assert await rig.tick_at(0, [SOURCE, AGGREGATE]) == []
    rig.silent.add("aggregate-0")  # SIGSTOP
    for second in range(1, 10):
        assert await rig.tick_at(second, [SOURCE, AGGREGATE]) == [], f"not yet at {second} s"
    assert await rig.tick_at(10, [SOURCE, AGGREGATE]) == ["aggregate-0"]
    assert await rig.tick_at(11, [SOURCE, AGGREGATE]) == [], "killed once: its recovery replaces it"
    assert rig.killed == rig.watchdog.killed == ["aggregate-0"]


async def test_an_actor_that_never_answered_is_still_starting_and_not_judged() -> None:
    rig = Rig()
    rig.silent.add("source-0")
    for second in range(0, 60, 5):
        assert await rig.tick_at(second, [SOURCE]) == []
    rig.silent.clear()
    await rig.tick_at(60, [SOURCE])
    rig.silent.add("source-0")
    assert await rig.tick_at(69, [SOURCE]) == []
    assert await rig.tick_at(70, [SOURCE]) == ["source-0"]


async def test_an_answer_in_between_starts_the_count_again() -> None:
    rig = Rig()
    await rig.tick_at(0, [AGGREGATE])
    rig.silent.add("aggregate-0")
    await rig.tick_at(9, [AGGREGATE])
    rig.silent.clear()
    await rig.tick_at(9.5, [AGGREGATE])  # a long pause, but it came back
    rig.silent.add("aggregate-0")
    assert await rig.tick_at(19, [AGGREGATE]) == []
    assert await rig.tick_at(19.5, [AGGREGATE]) == ["aggregate-0"]
