"""Exactly-once recovery of Kafka outputs: redo a slot's last epoch if its transaction never committed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from actors.epoch_outputs import Output, TransactionalKafkaOutput
from pipelines.state.checkpoint_store import CheckpointStore, WriteAhead

__all__ = ["fence_kafka_outputs", "recover_kafka_outputs"]


def fence_kafka_outputs(outputs: Sequence[Output]) -> None:
    """Open a transaction on every exactly-once Kafka output. Each producer's start (in the actor's constructor)
    asked for its producer id, and the broker answers only once it has fenced the dead actor's producer of the
    same slot and aborted its open transaction; opening a transaction waits for that id, so when this returns
    every slot of this actor is fenced.

    The Supervisor fences every slot before any slot reads commit markers: one dead slot's open transaction
    holds back the last stable offset of the marker topic for all readers, hiding later committed markers.
    """
    for output in outputs:
        if isinstance(output, TransactionalKafkaOutput):
            output.sink.producer.begin_transaction()


def recover_kafka_outputs(
    outputs: Sequence[Output],
    epoch: int,
    write_ahead: list[WriteAhead],
    committed: Mapping[str, int],
    store: CheckpointStore,
) -> int:
    """Re-emit, in a new transaction with its marker, every write-ahead of ``epoch`` whose slot has no committed
    marker for it; return the rows re-emitted. Synchronous (runs on a thread of the actor).

    ``committed`` is the newest committed epoch per slot, which the Supervisor read from the marker topic
    (:class:`~actors.kafka.commit_markers.CommitMarkerLog`) after fencing every slot of the topology
    (:func:`fence_kafka_outputs`), so no dead producer can commit behind our back and the markers are final.
    """
    transactional = [output for output in outputs if isinstance(output, TransactionalKafkaOutput)]
    by_slot = {ahead.slot: ahead for ahead in write_ahead}
    redone = 0
    for output in transactional:
        ahead = by_slot.get(output.slot)
        if ahead is None or committed.get(output.slot, -1) >= epoch:
            continue
        rows = store.read_table(ahead.rows)
        output.redo(rows, epoch)
        redone += rows.num_rows
    return redone
