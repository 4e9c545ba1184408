"""What a dead letter may keep of an invalid event's bytes: personal data out of the dead-letter output.

A dead letter keeps the event's original payload and key by default (``raw``), so it can be fixed and replayed.
Personal data in invalid events would then bypass the pipeline's ``mask`` operators. ``dead_letter.payload``:

- ``raw``: the bytes as they arrived;
- ``masked``: a JSON object payload with every field a ``mask`` operator names replaced the way that operator
  masks it (same method, same key: a hashed e-mail still joins); a payload that is not a JSON object, or not
  JSON, cannot be masked field by field and is withheld (null), the reason saying so;
- ``encrypted``: the bytes sealed with AES-256-GCM under the key in ``dead_letter.encryption.key_env``, bound to
  the dead letter's origin (:class:`~pipelines.at_rest.ValueCipher`): nothing readable without the key, nothing
  lost with it (``eventray dead-letters decrypt``);
- ``omitted``: no payload at all.

``dead_letter.key`` is ``raw``, ``encrypted`` (the same way) or ``omitted`` (no Kafka record key either). Every
dead letter keeps its topic, partition, offset, reason and error type under every policy: nothing is lost, the
source topic still holds the event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.at_rest import ValueCipher
from pipelines.config.dead_letter import DeadLetterContent, KeyPolicy, PayloadPolicy
from pipelines.config.pipeline import MaskOp, PipelineConfig
from pipelines.errors import ConfigError
from pipelines.transform.operators import Mask

__all__ = ["WITHHELD", "DeadLetterPolicy", "sealed_place"]
WITHHELD = "; payload withheld: not a JSON object, so its personal fields could not be masked"


@dataclass(frozen=True)
class DeadLetterPolicy:
    payload: PayloadPolicy
    key: KeyPolicy
    masks: tuple[MaskOp, ...]
    cipher: ValueCipher | None = None

    @classmethod
    def of(cls, content: DeadLetterContent, operators: Sequence[object]) -> DeadLetterPolicy:
        """The policy ``content`` says, for a pipeline whose operators are ``operators`` (its masks are applied).

        ``encrypted`` needs the key resolved into ``content.encryption``
        (:func:`pipelines.config.secrets.resolve_secrets`).
        """
        cipher = None
        if content.encrypts:
            if content.encryption.key is None:
                raise ConfigError(
                    f"dead_letter: encrypted needs its key, read from {content.encryption.key_env} by the driver "
                    "(resolve_secrets) before the pipeline starts"
                )
            cipher = ValueCipher(bytes.fromhex(content.encryption.key.get_secret_value()))
        masks = tuple(op for op in operators if isinstance(op, MaskOp))
        return cls(content.payload, content.key, masks, cipher)

    @classmethod
    def of_pipeline(cls, config: PipelineConfig) -> DeadLetterPolicy:
        """The policy of rows that may come from any input (late rows at the keyed stage): every input's masks."""
        return cls.of(config.dead_letter, [op for spec in config.all_inputs for op in spec.operators])

    @property
    def keeps_everything(self) -> bool:
        return self.payload == "raw" and self.key == "raw"

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` (:data:`~pipelines.io.records.DEAD_LETTER_SCHEMA`) with payloads and keys as the policy says."""
        if self.keeps_everything or not batch.num_rows:
            return batch
        if self.key == "omitted":
            batch = _replace(batch, "key", pa.nulls(batch.num_rows, pa.binary()))
        elif self.key == "encrypted":
            batch = self._sealed(batch, "key")
        if self.payload == "omitted":
            return _replace(batch, "payload", pa.nulls(batch.num_rows, pa.binary()))
        if self.payload == "encrypted":
            return self._sealed(batch, "payload")
        if self.payload == "masked":
            return self._masked(batch)
        return batch

    def apply_to_late(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Late events' dead letters: their payloads are rows after the operators, masked by them already."""
        if self.payload != "masked":
            return self.apply(batch)
        return DeadLetterPolicy("raw", self.key, (), self.cipher).apply(batch)

    def _sealed(self, batch: pa.RecordBatch, field: str) -> pa.RecordBatch:
        assert self.cipher is not None, "DeadLetterPolicy.of makes a cipher for every encrypted policy"
        origins = zip(
            batch.column("topic").to_pylist(),
            batch.column("partition").to_pylist(),
            batch.column("offset").to_pylist(),
            batch.column(field).to_pylist(),
            strict=True,
        )
        sealed = [
            None if value is None else self.cipher.seal(value, sealed_place(topic, partition, offset, field))
            for topic, partition, offset, value in origins
        ]
        return _replace(batch, field, pa.array(sealed, pa.binary()))

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


def sealed_place(topic: str, partition: int, offset: int, field: str) -> str:
    """What a sealed dead-letter value is bound to: its origin and which of its values it is."""
    return f"{topic}/{partition}/{offset}/{field}"


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
