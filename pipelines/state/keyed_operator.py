"""The one interface of keyed state in an AggregateActor: windows, upsert tables, dedup, process functions.

Every stateful operator keeps its state as Arrow tables with the key column in them, so the actor can split
a snapshot by key group (ARCHITECTURE.md section 3: key groups move between actors) without knowing what the state is.
Time is the watermark passed in; nothing here reads a clock, so every operator is tested without Ray.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from pipelines.errors import FatalError

__all__ = [
    "STATE_FORMAT_KEY",
    "STATE_MEANING_KEY",
    "Added",
    "KeyedOperator",
    "StateFormatError",
    "StateMeaning",
    "check_state_format",
    "tag_state",
]

STATE_FORMAT_KEY = b"eventray.state"
STATE_MEANING_KEY = b"eventray.state_meaning"


class StateFormatError(FatalError):
    """A snapshot was written by another operator, or another version of it, than the one restoring it.

    Operator action: restore with the pipeline version that wrote the checkpoint, or start the pipeline without
    it (delete the checkpoint directory) to rebuild state from the input.
    """


@dataclass(frozen=True)
class Added:
    """What :meth:`KeyedOperator.add` did with a batch, each part None when empty.

    ``output``: results emitted right away (upsert changelog, dedup survivors, early window updates).
    ``late``: rows whose window or timer had already fired (beyond allowed lateness): the caller writes them to
    the late side output, never drops them, with ``late_reason`` (the caller adds the watermark).
    ``no_event_time``: rows with a null ``_timestamp`` where event time is needed; the caller dead-letters them.
    """

    output: pa.Table | None = None
    late: pa.RecordBatch | None = None
    no_event_time: pa.RecordBatch | None = None
    late_reason: str = "late event: its window had closed"

    @property
    def intended_drops(self) -> int:
        """Rows the operator dropped on purpose (an upsert's stale versions, dedup's duplicates): the caller
        counts them and writes them nowhere. None here; operators that drop rows override it."""
        return 0


class KeyedOperator(Protocol):
    """Keyed state driven by batches and watermarks.

    Contract: :meth:`add` folds rows in and may emit; :meth:`advance` moves the watermark forward (never back)
    and emits what it closes; :meth:`flush` closes everything (end of input). :meth:`snapshot` returns the whole
    state as one table holding the ``key`` column (so rows can be split by key group) and tagged with
    :func:`tag_state`; :meth:`restore` replaces the state with (a subset of the rows of) snapshots of the same
    operator and version, and raises :class:`StateFormatError` otherwise. A snapshot is immutable: later calls
    never change a table already returned.
    """

    @property
    def key(self) -> str: ...

    @property
    def watermark_ms(self) -> int: ...

    @property
    def state_rows(self) -> int: ...

    def add(self, batch: pa.RecordBatch) -> Added: ...

    def advance(self, watermark_ms: int) -> pa.Table | None: ...

    def flush(self) -> pa.Table | None: ...

    def snapshot(self) -> pa.Table: ...

    def restore(self, state: pa.Table, watermark_ms: int) -> None: ...


def tag_state(state: pa.Table, state_format: str) -> pa.Table:
    """Name the operator and version that wrote ``state`` (e.g. ``"tumbling/1"``) in its schema metadata."""
    return state.replace_schema_metadata({**(state.schema.metadata or {}), STATE_FORMAT_KEY: state_format.encode()})


@dataclass(frozen=True)
class StateMeaning:
    """What a keyed operator's state means beyond its layout: written into every snapshot, checked by restore,
    so a checkpoint is never read under other meanings (a resized window, another key column, a reordered or
    changed aggregation set).

    ``state_format`` names the operator and the version of its layout (``"tumbling/2"``). ``facts`` are the
    settings the rows' meaning depends on (key column, window size, function path): a snapshot restores only under
    the same values. ``holds`` names what each row carries (partial aggregates, event columns): a snapshot must
    hold at least these; one that holds more restores too, its extra columns dropped (an aggregation removed from
    the config). ``needed_by`` says, for messages, what needs each held item (``"aggregation 'avg_cents'"``).
    A snapshot without a recorded meaning was written before meanings were; it is checked by format only
    (operators whose layout changed since then bumped their format version).
    """

    state_format: str
    facts: Mapping[str, str] = field(default_factory=dict)
    holds: frozenset[str] = frozenset()
    needed_by: Mapping[str, str] = field(default_factory=dict)

    def tag(self, state: pa.Table) -> pa.Table:
        """``state`` with this meaning in its schema metadata."""
        recorded = json.dumps({"facts": dict(self.facts), "holds": sorted(self.holds)}, sort_keys=True)
        return state.replace_schema_metadata(
            {**(state.schema.metadata or {}), STATE_FORMAT_KEY: self.state_format.encode(), STATE_MEANING_KEY: recorded}
        )

    def check(self, state: pa.Table) -> None:
        """Raise :class:`StateFormatError` naming every difference if ``state`` does not mean what this does."""
        check_state_format(state, self.state_format)
        recorded = (state.schema.metadata or {}).get(STATE_MEANING_KEY)
        if recorded is None:
            return
        written = json.loads(recorded)
        written_facts: dict[str, str] = written.get("facts", {})
        problems = [
            f"{name} was {written_facts.get(name)!r} where this pipeline has {value!r}"
            for name, value in sorted(self.facts.items())
            if written_facts.get(name) != value
        ]
        problems += [
            f"it holds no {item}, which {self.needed_by.get(item, 'this operator')} needs"
            for item in sorted(self.holds - set(written.get("holds", [])))
        ]
        if problems:
            raise StateFormatError(
                f"checkpointed {self.state_format} state does not fit this pipeline: {'; '.join(problems)}. "
                "Operator action: run with the config that wrote the checkpoint, or delete the checkpoint "
                "directory to rebuild state from the input"
            )


def check_state_format(state: pa.Table, state_format: str) -> None:
    written = (state.schema.metadata or {}).get(STATE_FORMAT_KEY, b"").decode() or "(untagged)"
    if written != state_format:
        raise StateFormatError(
            f"checkpointed state was written as {written!r}, this operator reads {state_format!r}. Operator "
            "action: run the pipeline version that wrote it, or delete the checkpoint to rebuild state from input"
        )
