"""Every window kind, with and without allowed lateness and early updates, against a plain-Python model.

The model keeps the counted rows themselves and recomputes every window from them at each step, row by row,
as the module docs of pipelines/windows/*.py define the semantics; the operators must emit exactly what it
emits, step by step, for any batching and any watermark schedule (moving back included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config.pipeline import (
    AggregateConfig,
    AggregationConfig,
    HoppingWindowConfig,
    SessionWindowConfig,
    SlidingWindowConfig,
    TumblingWindowConfig,
    WindowConfig,
)
from pipelines.state.keyed_operator import KeyedOperator
from pipelines.windows.tumbling import IS_FINAL, WINDOW_END, WINDOW_START, open_windows

Row = tuple[str | None, int | None, int]  # key, value, event time (ms)
Emission = dict[tuple[str | None, int], dict[str, object]]
NO_WATERMARK = -(1 << 62)
AGGREGATIONS = {
    "n": AggregationConfig(fn="count"),
    "total": AggregationConfig(fn="sum", column="v"),
    "avg": AggregationConfig(fn="mean", column="v"),
    "lo": AggregationConfig(fn="min", column="v"),
    "hi": AggregationConfig(fn="max", column="v"),
}
WINDOWS: dict[str, WindowConfig] = {
    "tumbling": TumblingWindowConfig(size_ms=10),
    "hopping": HoppingWindowConfig(type="hopping", size_ms=12, hop_ms=4),
    "sliding": SlidingWindowConfig(type="sliding", size_ms=10),
    "session": SessionWindowConfig(type="session", gap_ms=6),
}
MODES = {"plain": (0, None), "lateness": (15, None), "early": (0, 7), "both": (8, 5)}


def config_for(kind: str, mode: str = "plain") -> AggregateConfig:
    lateness, early = MODES[mode]
    return AggregateConfig(
        key="k", window=WINDOWS[kind], aggregations=AGGREGATIONS, allowed_lateness_ms=lateness, early_update_ms=early
    )


def batch_of(rows: Sequence[Row], first_id: int = 0) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "k": pa.array([row[0] for row in rows], pa.string()),
            "v": pa.array([row[1] for row in rows], pa.int64()),
            "_timestamp": pa.array([row[2] for row in rows], pa.int64()),
            "id": pa.array(range(first_id, first_id + len(rows)), pa.int64()),
        }
    )


def by_window(table: pa.Table | None) -> Emission:
    if table is None:
        return {}
    rows = table.to_pylist()
    keyed = {(row["k"], row[WINDOW_START]): row for row in rows}
    assert len(keyed) == len(rows), "a window appears twice in one emission"
    return keyed


@dataclass
class Model:
    """The semantics, row by row: ``pool`` holds (window start or None, row id, row) of rows still in state."""

    config: AggregateConfig
    watermark: int = NO_WATERMARK
    pool: list[tuple[int | None, int, Row]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.config.window.type

    @property
    def lateness(self) -> int:
        return self.config.allowed_lateness_ms

    def starts_of(self, time_ms: int) -> list[int]:
        window = self.config.window
        assert isinstance(window, TumblingWindowConfig | HoppingWindowConfig)
        hop = window.hop_ms if isinstance(window, HoppingWindowConfig) else window.size_ms
        last = time_ms - time_ms % hop
        return [last - i * hop for i in range(window.size_ms // hop)]

    def windows(self) -> dict[tuple[str | None, int], tuple[int, list[tuple[int, Row]]]]:
        """(key, start) -> (end, [(id, row)]) of every window in state."""
        found: dict[tuple[str | None, int], tuple[int, list[tuple[int, Row]]]] = {}
        window = self.config.window
        if isinstance(window, TumblingWindowConfig | HoppingWindowConfig):
            for start, row_id, row in self.pool:
                assert start is not None
                found.setdefault((row[0], start), (start + window.size_ms, []))[1].append((row_id, row))
        elif isinstance(window, SlidingWindowConfig):
            for _, _, (key, _, t) in self.pool:
                if t + 1 + self.lateness > self.watermark:
                    members = [(i, r) for _, i, r in self.pool if r[0] == key and t - window.size_ms < r[2] <= t]
                    found[(key, t - window.size_ms + 1)] = (t + 1, members)
        else:
            assert isinstance(window, SessionWindowConfig)
            for key in {row[0] for _, _, row in self.pool}:
                rows = sorted(((i, r) for _, i, r in self.pool if r[0] == key), key=lambda item: item[1][2])
                session: list[tuple[int, Row]] = []
                for item in rows:
                    if session and item[1][2] - max(r[2] for _, r in session) >= window.gap_ms:
                        found[(key, session[0][1][2])] = (max(r[2] for _, r in session) + window.gap_ms, session)
                        session = []
                    session.append(item)
                found[(key, session[0][1][2])] = (max(r[2] for _, r in session) + window.gap_ms, session)
        return found

    def result(
        self, key: str | None, start: int, end: int, members: list[tuple[int, Row]], final: bool
    ) -> dict[str, object]:
        values = [row[1] for _, row in members if row[1] is not None]
        result: dict[str, object] = {
            "k": key,
            WINDOW_START: start,
            WINDOW_END: end,
            "n": len(members),
            "total": sum(values) if values else None,
            "avg": sum(values) / len(values) if values else None,
            "lo": min(values) if values else None,
            "hi": max(values) if values else None,
        }
        if self.config.emits_updates:
            result[IS_FINAL] = final
        return result

    def add(self, rows: Sequence[Row], first_id: int) -> tuple[Emission, list[int]]:
        late: list[int] = []
        new_ids: set[int] = set()
        for offset, row in enumerate(rows):
            row_id, t = first_id + offset, row[2]
            if self.kind in ("tumbling", "hopping"):
                size = self.config.window.size_ms  # type: ignore[union-attr]
                kept = [s for s in self.starts_of(t) if s + size + self.lateness > self.watermark]
                self.pool.extend((start, row_id, row) for start in kept)
                counted = bool(kept)
            else:
                reach = self.config.window.size_ms if self.kind == "sliding" else self.config.window.gap_ms  # type: ignore[union-attr]
                counted = t + reach + self.lateness > self.watermark
                if counted:
                    self.pool.append((None, row_id, row))
            (new_ids.add if counted else late.append)(row_id)
        updates = {
            (key, start): self.result(key, start, end, members, final=False)
            for (key, start), (end, members) in self.windows().items()
            if end <= self.watermark and any(i in new_ids for i, _ in members)
        }
        return updates, late

    def advance(self, watermark: int) -> Emission:
        previous = self.watermark
        if watermark <= previous:
            return {}
        windows = self.windows()
        self.watermark = watermark
        every = self.config.early_update_ms
        early = every is not None and watermark // every > previous // every
        emitted: Emission = {}
        for (key, start), (end, members) in windows.items():
            expired = end + self.lateness <= watermark
            if previous < end <= watermark or (end <= previous and expired):
                emitted[(key, start)] = self.result(key, start, end, members, final=expired)
            elif end > watermark and early:
                emitted[(key, start)] = self.result(key, start, end, members, final=False)
        gone = {
            i
            for (key, start), (end, members) in windows.items()
            if end + self.lateness <= watermark
            for i, _ in members
        }
        if self.kind in ("tumbling", "hopping"):
            size = self.config.window.size_ms  # type: ignore[union-attr]
            self.pool = [entry for entry in self.pool if entry[0] + size + self.lateness > watermark]  # type: ignore[operator]
        elif self.kind == "sliding":
            size = self.config.window.size_ms  # type: ignore[union-attr]
            self.pool = [entry for entry in self.pool if entry[2][2] + size + self.lateness > watermark]
        else:
            self.pool = [entry for entry in self.pool if entry[1] not in gone]
        return emitted


rows_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", None]), st.one_of(st.none(), st.integers(-100, 100)), st.integers(-20, 80)),
    max_size=30,
)
steps_strategy = st.lists(
    st.tuples(st.integers(1, 6), st.one_of(st.none(), st.integers(-30, 110))), min_size=1, max_size=12
)


Step = tuple[list[Row], int, int | None]  # rows, id of the first, watermark after them (None: none)


def schedule(rows: list[Row], steps: list[tuple[int, int | None]]) -> list[Step]:
    """``rows`` cut into chunks by ``steps`` (cycled until every row is fed and every step taken)."""
    planned: list[Step] = []
    position = index = 0
    while position < len(rows) or index < len(steps):
        size, watermark = steps[index % len(steps)]
        planned.append((rows[position : position + size], position, watermark))
        position += size
        index += 1
    return planned


def run(
    operator: KeyedOperator, steps: Sequence[Step], model: Model | None = None, flush: bool = True
) -> list[Emission]:
    """Feed the steps; what each call emitted (checked against ``model`` when given), late rows checked too."""
    trace: list[Emission] = []
    for chunk, first_id, watermark in steps:
        added = operator.add(batch_of(chunk, first_id=first_id))
        late = [] if added.late is None else added.late.column("id").to_pylist()
        trace.append(by_window(added.output))
        if model is not None:
            assert (trace[-1], late) == model.add(chunk, first_id)
        if watermark is not None:
            trace.append(by_window(operator.advance(watermark)))
            if model is not None:
                assert trace[-1] == model.advance(watermark)
    if flush:
        trace.append(by_window(operator.flush()))
        if model is not None:
            assert trace[-1] == model.advance(1 << 62)
        assert operator.state_rows == 0
    return trace


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", sorted(WINDOWS))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(rows=rows_strategy, steps=steps_strategy)
def test_every_window_kind_matches_the_model(
    kind: str, mode: str, rows: list[Row], steps: list[tuple[int, int | None]]
) -> None:
    config = config_for(kind, mode)
    run(open_windows(config), schedule(rows, steps), Model(config))


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", sorted(WINDOWS))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(rows=rows_strategy, steps=steps_strategy, cut=st.integers(0, 12), split=st.booleans())
def test_snapshot_restore_continue_equals_an_uninterrupted_run(
    kind: str, mode: str, rows: list[Row], steps: list[tuple[int, int | None]], cut: int, split: bool
) -> None:
    config = config_for(kind, mode)
    planned = schedule(rows, steps)
    cut = min(cut, len(planned))
    expected = run(open_windows(config), planned)

    first = open_windows(config)
    head = run(first, planned[:cut], flush=False)
    state = first.snapshot()
    if split:  # as key groups moving between actors: subsets of the rows, concatenated again
        is_a = pc.equal(state.column("k"), "a").fill_null(False)
        state = pa.concat_tables([state.filter(pc.invert(is_a)), state.filter(is_a)])
    second = open_windows(config)
    second.restore(state, first.watermark_ms)
    assert head + run(second, planned[cut:]) == expected
