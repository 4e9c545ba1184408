"""Queryable keyed state (the CQRS read side): what an owner answers for a view's keys.

An actor of a stage with ``query`` holds a :class:`QueryableState` beside its operator. Queries run in a
concurrency group of their own (threads beside the one that processes batches), so they never queue behind
batches; they read the operator through a :class:`StateReader`, which only reads: dictionary lookups of values
replaced whole (process values, aggregate states) or an immutable Arrow table (an upsert table's state).

Consistency: ``latest`` reads what the owner has applied; ``committed`` reads the state of the last complete
checkpoint (a reader frozen at the checkpoint's barrier, promoted when the epoch completes), so it never shows
what a crash could roll back. Read-your-writes: with ``query.position``, every row applied records the version
of the aggregate it carries (:class:`Positions`, checkpointed with the state and moved with its key groups); a
query with ``min_position`` waits until that version is applied (or committed), and past the wait says how far
the owner is.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.query import Consistency, PositionConfig, QueryConfig
from pipelines.errors import RetriableError

__all__ = [
    "KeyedValues",
    "NotOwner",
    "Positions",
    "QueryableState",
    "StateReader",
    "TableRows",
    "ViewAnswer",
    "WantedPosition",
    "as_keys",
    "canonical_key",
]

_KEY_GROUP = "_key_group"


class NotOwner(RetriableError):
    """The actor asked does not own (or is taking over) a key's group: a rescale is moving it. The router asks
    again once the Supervisor pushed the new owners."""


class StateReader(Protocol):
    """Reads a view's values: one JSON-able value per key (None when the key has none)."""

    def values(self, keys: Sequence[str]) -> list[Any]: ...


class Viewable(Protocol):
    """A keyed operator whose state can be served: a reader of its current state (``frozen``: a copy that later
    batches do not change)."""

    def view(self, frozen: bool) -> StateReader: ...


def as_keys(keys: Sequence[str], key_type: pa.DataType) -> list[Any]:
    """Keys as they arrive in a URL (text) as values of the key column's type (``"7"`` -> 7 for an int64 key); a
    key that cannot be one is None, which readers answer with no value (never the value of a null key)."""
    if pa.types.is_null(key_type) or pa.types.is_string(key_type) or pa.types.is_large_string(key_type):
        return list(keys)
    return [_as_key(key, key_type) for key in keys]


def canonical_key(key: str, key_type: pa.DataType) -> str | None:
    """The text the shuffle hashes for ``key`` as a value of ``key_type`` (``"007"`` -> ``"7"`` for int64), so a
    router finds the owner the rows went to; None when ``key`` is no value of that type."""
    if pa.types.is_null(key_type) or pa.types.is_string(key_type) or pa.types.is_large_string(key_type):
        return key
    value = _as_key(key, key_type)
    if value is None:
        return None
    text: str = pc.cast(pa.array([value], key_type), pa.string())[0].as_py()
    return text


def _as_key(key: str, key_type: pa.DataType) -> Any:
    try:
        return pa.array([key], pa.string()).cast(key_type).to_pylist()[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


class KeyedValues:
    """Values stored MessagePack-encoded per key (a process function's values, an aggregate's states)."""

    def __init__(self, encoded: dict[Any, bytes], key_type: pa.DataType, versions: dict[Any, int] | None = None):
        self._encoded = encoded
        self._key_type = key_type
        self._versions = versions

    def values(self, keys: Sequence[str]) -> list[Any]:
        # None: text that is no key of this type
        return [None if key is None else self._value(key) for key in as_keys(keys, self._key_type)]

    def _value(self, key: Any) -> Any:
        if self._versions is None:
            stored = self._encoded.get(key)
            return None if stored is None else msgspec.msgpack.decode(stored)
        while True:  # the batch thread writes the state, then the version: a version read on both sides of the
            version = self._versions.get(key, 0)  # state that did not change says they go together
            stored = self._encoded.get(key)
            if self._versions.get(key, 0) == version:
                return None if stored is None else {"version": version, "state": msgspec.msgpack.decode(stored)}


class TableRows:
    """The row of each key in an immutable table (an upsert table's state), tombstones left out."""

    def __init__(self, table: pa.Table | None, key: str, delete_column: str | None) -> None:
        self._table = table
        self._key = key
        self._delete_column = delete_column

    def values(self, keys: Sequence[str]) -> list[Any]:
        table = self._table
        if table is None or table.num_rows == 0:
            return [None] * len(keys)
        stored = table.column(self._key)
        wanted = pa.array(as_keys(keys, stored.type), stored.type)
        positions = pc.index_in(wanted, value_set=stored, skip_nulls=True).to_pylist()  # text no key: no match
        rows = table.take(pa.array([p if p is not None else 0 for p in positions], pa.int64())).to_pylist()
        found: list[Any] = []
        for position, row in zip(positions, rows, strict=True):
            deleted = self._delete_column is not None and bool(row.get(self._delete_column))
            found.append(None if position is None or deleted else row)
        return found


class Positions:
    """Per aggregate: the newest version applied here, with the key group of the row that carried it (so the
    positions move with their key groups at a rescale, and restore with them)."""

    def __init__(self, config: PositionConfig) -> None:
        self._config = config
        self._versions: dict[str, int] = {}
        self._groups: dict[str, int] = {}

    def apply(self, batch: pa.RecordBatch, key_groups: np.ndarray) -> None:
        """Record the versions ``batch`` carries (rows without an aggregate or a version are not positions)."""
        names = batch.schema.names
        if self._config.aggregate_column not in names or self._config.version_column not in names:
            return
        rows = pa.table({
            "aggregate": pc.cast(batch.column(self._config.aggregate_column), pa.string()),
            "version": pc.cast(batch.column(self._config.version_column), pa.int64()),
            "group": pa.array(key_groups, pa.int32()),
        })  # fmt: skip
        rows = rows.filter(pc.and_(pc.is_valid(rows["aggregate"]), pc.is_valid(rows["version"])))
        if rows.num_rows == 0:
            return
        # per aggregate, its newest version in the batch and the key group of the row that carried it: the
        # reduction is columnar, the loop below runs once per aggregate
        maxima = rows.group_by("aggregate").aggregate([("version", "max")])
        newest = pa.table({"aggregate": maxima["aggregate"], "version": maxima["version_max"]})
        carried = newest.join(rows, keys=["aggregate", "version"], join_type="inner")
        columns = (carried[name].to_pylist() for name in ("aggregate", "version", "group"))
        for aggregate, version, group in zip(*columns, strict=True):
            if version > self._versions.get(aggregate, 0):
                self._versions[aggregate] = version
                self._groups[aggregate] = group

    def version(self, aggregate: str) -> int:
        return self._versions.get(aggregate, 0)

    def frozen(self) -> dict[str, int]:
        return dict(self._versions)

    def table(self) -> pa.Table:
        """The positions as rows (aggregate, version, _key_group), for a checkpoint."""
        aggregates = list(self._versions)
        return pa.table({
            "aggregate": pa.array(aggregates, pa.string()),
            "version": pa.array([self._versions[a] for a in aggregates], pa.int64()),
            _KEY_GROUP: pa.array([self._groups[a] for a in aggregates], pa.int32()),
        })  # fmt: skip

    def keep(self, key_groups: Sequence[int], taken_over: Sequence[pa.Table] = ()) -> None:
        """Own ``key_groups`` from now on: forget the positions of others, add those of ``taken_over`` (tables of
        :meth:`table`) in the groups owned."""
        owned = set(key_groups)
        for aggregate in [a for a, group in self._groups.items() if group not in owned]:
            del self._versions[aggregate], self._groups[aggregate]
        for table in taken_over:
            rows = table.filter(pc.is_in(table.column(_KEY_GROUP), pa.array(sorted(owned), pa.int32())))
            for aggregate, version, group in zip(*(rows.column(c).to_pylist() for c in rows.column_names), strict=True):
                if version > self._versions.get(aggregate, 0):
                    self._versions[aggregate] = version
                    self._groups[aggregate] = group


@dataclass(frozen=True)
class WantedPosition:
    """``<aggregate>@<version>``: the write a read-your-writes query must see (the gateway's ``read_token``)."""

    aggregate: str
    version: int

    @classmethod
    def parse(cls, token: str) -> WantedPosition:
        aggregate, _, version = token.rpartition("@")
        if not aggregate or not version.isdigit():
            raise ValueError(f"min_position {token!r} is not <aggregate>@<version> (e.g. acc-7@3)")
        return cls(aggregate, int(version))

    def __str__(self) -> str:
        return f"{self.aggregate}@{self.version}"


@dataclass(frozen=True)
class ViewAnswer:
    """An owner's answer: a value per key (None: none); with a wanted position, whether it was reached and the
    version of that aggregate the answer reflects."""

    values: list[Any]
    consistency: Consistency
    reached: bool = True
    applied_version: int | None = None
    epoch: int | None = None  # committed: the checkpoint whose state it is (None: not known yet)


class QueryableState:
    """The queryable side of one actor's keyed state (see the module docstring). Called by the actor's batch
    thread (:meth:`applied`, :meth:`prepare`, :meth:`commit`, :meth:`reset`) and by query threads (:meth:`answer`)."""

    def __init__(self, config: QueryConfig, operator: Viewable) -> None:
        self.config = config
        self._operator = operator
        self.positions = None if config.position is None else Positions(config.position)
        self._changed = threading.Condition()
        # what committed reads: the reader, the positions and the epoch of one checkpoint, replaced together
        self._committed: tuple[StateReader, dict[str, int], int | None] = (operator.view(frozen=True), {}, None)
        self._prepared: dict[int, tuple[StateReader, dict[str, int]]] = {}

    @property
    def needs_key_groups(self) -> bool:
        return self.positions is not None

    def applied(self, batch: pa.RecordBatch, key_groups: np.ndarray | None) -> None:
        """``batch`` was applied to the operator: record its positions and wake the queries waiting on them."""
        if self.positions is not None and key_groups is not None:
            with self._changed:
                self.positions.apply(batch, key_groups)
                self._changed.notify_all()

    def prepare(self, epoch: int) -> None:
        """At ``epoch``'s barrier: freeze what the checkpoint holds, to serve as committed once it completes (not
        for a view that does not offer ``committed``: freezing copies the state)."""
        if "committed" not in self.config.consistency:
            return
        positions = self.positions.frozen() if self.positions is not None else {}
        self._prepared[epoch] = (self._operator.view(frozen=True), positions)

    def commit(self, epoch: int) -> None:
        """``epoch`` completed: what its barrier froze is the committed state now."""
        prepared = self._prepared.pop(epoch, None)
        for older in [e for e in self._prepared if e < epoch]:
            del self._prepared[older]
        if prepared is not None:
            with self._changed:
                self._committed = (*prepared, epoch)
                self._changed.notify_all()

    def reset(self, epoch: int | None) -> None:
        """The operator's state was restored from a complete checkpoint (a start, a recovery or a rescale): it is
        the committed state, of checkpoint ``epoch`` (None: not known)."""
        with self._changed:
            self._prepared.clear()
            positions = self.positions.frozen() if self.positions is not None else {}
            self._committed = (self._operator.view(frozen=True), positions, epoch)
            self._changed.notify_all()

    def answer(
        self, keys: Sequence[str], consistency: Consistency, wanted: WantedPosition | None, wait_s: float
    ) -> ViewAnswer:
        """The values of ``keys`` (``consistency``: latest or committed); with ``wanted``, once that position is
        applied (or committed), or after ``wait_s`` with ``reached`` false and the version the owner has."""
        if consistency not in self.config.consistency:
            raise ValueError(f"view {self.config.view!r} offers {self.config.consistency}, not {consistency!r}")
        if wanted is not None and self.positions is None:
            raise ValueError(f"view {self.config.view!r} has no query.position: it cannot wait for a min_position")
        applied: int | None = None
        reached = True
        if wanted is not None:
            with self._changed:
                reached = self._changed.wait_for(lambda: self._version(wanted, consistency) >= wanted.version, wait_s)
                applied = self._version(wanted, consistency)
        if consistency == "committed":
            reader, _, epoch = self._committed
            return ViewAnswer(reader.values(keys), consistency, reached, applied, epoch)
        return ViewAnswer(self._operator.view(frozen=False).values(keys), consistency, reached, applied)

    def _version(self, wanted: WantedPosition, consistency: Consistency) -> int:
        if consistency == "committed":
            return self._committed[1].get(wanted.aggregate, 0)
        assert self.positions is not None
        return self.positions.version(wanted.aggregate)
