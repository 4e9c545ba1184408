"""The Confluent wire format: magic byte 0, the writer schema's id (4 bytes, big-endian), then the encoded body.

Producers on Kafka that use a schema registry (Confluent's serializers, Apicurio's and Karapace's in their
Confluent-compatible mode) write every record this way. :func:`schema_ids` reads the header of a whole fetch at
once, from the Arrow buffers with numpy, without a Python object per record.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["HEADER_BYTES", "MAGIC_BYTE", "NOT_WIRE_FORMAT", "framed", "schema_ids"]

MAGIC_BYTE = 0
HEADER_BYTES = 5
#: The id of a record that is not in the wire format (null, shorter than the header, another first byte).
NOT_WIRE_FORMAT = -1


def schema_ids(payloads: pa.Array) -> npt.NDArray[np.int64]:
    """Each record's schema id, or :data:`NOT_WIRE_FORMAT`. Ids are unsigned on the wire; Confluent's and
    Apicurio's are small positive integers, and an id is read as the unsigned 32-bit value it is."""
    binary = payloads if payloads.type == pa.binary() else payloads.cast(pa.binary())
    count = len(binary)
    ids = np.full(count, NOT_WIRE_FORMAT, dtype=np.int64)
    if count == 0:
        return ids
    lengths = pc.fill_null(pc.binary_length(binary), 0).to_numpy(zero_copy_only=False)
    offsets_buffer, data_buffer = binary.buffers()[1], binary.buffers()[2]
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=binary.offset + count + 1)[binary.offset :]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    framed_enough = lengths >= HEADER_BYTES
    starts = offsets[:-1][framed_enough].astype(np.int64)
    magic = data[starts] == MAGIC_BYTE
    header = np.stack([data[starts + i] for i in range(1, HEADER_BYTES)]).astype(np.int64)
    read = (header[0] << 24) | (header[1] << 16) | (header[2] << 8) | header[3]
    positions = np.flatnonzero(framed_enough)
    ids[positions[magic]] = read[magic]
    return ids


def framed(schema_id: int, body: bytes) -> bytes:
    """``body`` with the wire-format header for ``schema_id``."""
    return struct.pack(">bI", MAGIC_BYTE, schema_id) + body
