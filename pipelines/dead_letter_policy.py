"""What a dead letter may keep of an invalid event's bytes: personal data out of the dead-letter output.

A dead letter keeps the event's original payload and key by default (``raw``), so it can be fixed and replayed.
Personal data in invalid events would then bypass the pipeline's ``mask`` operators. ``dead_letter.payload``:

- ``raw``: the bytes as they arrived;
- ``masked``: a JSON object payload with every field a ``mask`` operator names replaced the way that operator
  masks it (same method, same key: a hashed e-mail still joins); a payload that is not a JSON object, or not
  JSON, cannot be masked field by field and is withheld (null), the reason saying so;
- ``omitted``: no payload at all.

``dead_letter.key: omitted`` also drops the Kafka record key. Every dead letter keeps its topic, partition,
offset, reason and error type under every policy: nothing is lost, the source topic still holds the event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import MaskOp, PipelineConfig
from pipelines.operators import Mask

__all__ = ["WITHHELD", "DeadLetterPolicy"]

PayloadPolicy = Literal["raw", "masked", "omitted"]
KeyPolicy = Literal["raw", "omitted"]
WITHHELD = "; payload withheld: not a JSON object, so its personal fields could not be masked"


@dataclass(frozen=True)
class DeadLetterPolicy:
    payload: PayloadPolicy
    key: KeyPolicy
    masks: tuple[MaskOp, ...]

    @classmethod
    def of(cls, payload: PayloadPolicy, key: KeyPolicy, operators: Sequence[object]) -> DeadLetterPolicy:
        """The policy for a pipeline whose operators are ``operators`` (its ``mask`` ones are applied)."""
        return cls(payload, key, tuple(op for op in operators if isinstance(op, MaskOp)))

    @classmethod
    def of_pipeline(cls, config: PipelineConfig) -> DeadLetterPolicy:
        dead_letter = config.dead_letter
        return cls.of(dead_letter.payload, dead_letter.key, config.operators)

    @property
    def keeps_everything(self) -> bool:
        return self.payload == "raw" and self.key == "raw"

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` (:data:`~pipelines.records.DEAD_LETTER_SCHEMA`) with payloads and keys as the policy says."""
        if self.keeps_everything or not batch.num_rows:
            return batch
        if self.key == "omitted":
            batch = _replace(batch, "key", pa.nulls(batch.num_rows, pa.binary()))
        if self.payload == "omitted":
            return _replace(batch, "payload", pa.nulls(batch.num_rows, pa.binary()))
        if self.payload == "masked":
            return self._masked(batch)
        return batch

    def apply_to_late(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Late events' dead letters: their payloads are rows after the operators, masked by them already."""
        return self.apply(batch) if self.payload != "masked" else DeadLetterPolicy("raw", self.key, ()).apply(batch)

    def _masked(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        objects, withheld = _json_objects(batch.column("payload").to_pylist())
        for mask in self.masks:
            positions = [i for i, obj in enumerate(objects) if obj is not None and mask.column in obj]
            if not positions:
                continue
            values = [objects[i][mask.column] for i in positions]  # type: ignore[index]
            texts = pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])
            masked = Mask(mask).apply(pa.record_batch({mask.column: texts})).column(0).to_pylist()
            for position, value in zip(positions, masked, strict=True):
                objects[position][mask.column] = value  # type: ignore[index]
        payloads = pa.array(
            [None if obj is None else json.dumps(obj, separators=(",", ":")).encode() for obj in objects], pa.binary()
        )
        batch = _replace(batch, "payload", payloads)
        if any(withheld):
            reasons = pc.if_else(pa.array(withheld), pc.binary_join_element_wise(batch.column("reason"), WITHHELD, ""),
                                 batch.column("reason"))  # fmt: skip
            batch = _replace(batch, "reason", reasons)
        return batch


def _json_objects(payloads: list[bytes | None]) -> tuple[list[dict[str, object] | None], list[bool]]:
    """Each payload as a JSON object, or None; and whether a payload there was had to be withheld."""
    objects: list[dict[str, object] | None] = []
    withheld: list[bool] = []
    for payload in payloads:
        parsed: object = None
        if payload is not None:
            try:
                parsed = json.loads(payload)
            except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the parser's depth
                parsed = None
        obj = parsed if isinstance(parsed, dict) else None
        objects.append(obj)
        withheld.append(payload is not None and obj is None)
    return objects, withheld


def _replace(batch: pa.RecordBatch, name: str, column: pa.Array) -> pa.RecordBatch:
    index = batch.schema.get_field_index(name)
    return batch.set_column(index, batch.schema.field(index), column)
