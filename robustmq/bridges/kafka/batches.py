"""Record batches (magic 2): decoding what producers send and building what consumers fetch.

``kafka.record`` does the byte layout, CRC-32C and the four codecs; this module checks what a broker
must check (magic, CRC, record count, control batches) and converts to and from plain tuples.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from robustmq.bridges.kafka.errors import (
    CORRUPT_MESSAGE,
    UNSUPPORTED_COMPRESSION_TYPE,
    UNSUPPORTED_FOR_MESSAGE_FORMAT,
    CorruptBatch,
)

_BATCH_PREFIX = struct.Struct(">qiib")  # base offset, batch length, leader epoch, magic
BATCH_OVERHEAD_BYTES = DefaultRecordBatchBuilder.header_size_in_bytes()

Header = tuple[str, bytes | None]


@dataclass(slots=True)
class ProducedRecord:
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    timestamp_ms: int


@dataclass(slots=True)
class ProducedBatch:
    """One producer batch with the fields the idempotence checks need."""

    producer_id: int
    producer_epoch: int
    base_sequence: int
    transactional: bool
    records: list[ProducedRecord] = field(default_factory=list)

    @property
    def last_sequence(self) -> int:
        return self.base_sequence + len(self.records) - 1


def read_batches(data: bytes | memoryview | None) -> list[ProducedBatch]:
    """Every batch of a produce request's ``records`` field; raises ``CorruptBatch``."""
    if not data:
        return []
    view = memoryview(data)
    out: list[ProducedBatch] = []
    pos = 0
    while pos < len(view):
        if len(view) - pos < _BATCH_PREFIX.size:
            raise CorruptBatch("record batch cut short")
        _base, length, _epoch, magic = _BATCH_PREFIX.unpack_from(view, pos)
        end = pos + 12 + length
        if magic != 2:
            raise CorruptBatch(f"message format v{magic} is not served", UNSUPPORTED_FOR_MESSAGE_FORMAT)
        if length < BATCH_OVERHEAD_BYTES - 12 or end > len(view):
            raise CorruptBatch("record batch cut short")
        out.append(_read_batch(view[pos:end]))
        pos = end
    return out


def _read_batch(raw: memoryview) -> ProducedBatch:
    batch = DefaultRecordBatch(raw)
    if not batch.validate_crc():
        raise CorruptBatch("record batch fails its CRC")
    if batch.is_control_batch:
        raise CorruptBatch("control batches cannot be produced", CORRUPT_MESSAGE)
    codec = batch.compression_type
    if codec > 4:
        raise CorruptBatch(f"unknown compression codec {codec}", UNSUPPORTED_COMPRESSION_TYPE)
    out = ProducedBatch(batch.producer_id, batch.producer_epoch, batch.base_sequence, batch.is_transactional)
    try:
        for rec in batch:
            headers = [(k, v) for k, v in rec.headers]
            out.records.append(ProducedRecord(rec.key, rec.value, headers, rec.timestamp))
    except CorruptBatch:
        raise
    except Exception as exc:  # a body that does not decompress or parse as records
        raise CorruptBatch(f"record batch does not decode: {exc!r}") from None
    if len(out.records) != batch.records_count:
        raise CorruptBatch("record count does not match the batch header")
    return out


def build_batch(records: list[tuple[int, int, bytes | None, bytes | None, list[Header]]]) -> bytes:
    """One uncompressed batch of ``(offset, timestamp_ms, key, value, headers)`` in offset order
    (offsets may have gaps: deltas are relative to the first)."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 62,
    )  # fmt: skip
    base = records[0][0]
    for offset, ts, key, value, headers in records:
        builder.append(offset - base, ts, key, value, headers)
    buf = builder.build()
    struct.pack_into(">q", buf, 0, base)
    return bytes(buf)


def record_size_bytes(key: bytes | None, value: bytes | None, headers: list[Header]) -> int:
    """An upper bound of one record's size in a batch (for max_bytes accounting)."""
    return DefaultRecordBatchBuilder.size_in_bytes(0, 0, key, value, headers) + 20
