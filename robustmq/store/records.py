"""The binary record codec of the segment log: length-prefixed, CRC32-checked, pure (no I/O).

A record on disk is ``u32 body_len | u32 crc32(body) | body`` where the body is a fixed header
followed by subject, key, headers, tags and payload; ``scan`` walks a buffer and tells a torn tail
(a record cut short or failing its checksum at the very end) from corruption in the middle.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from zlib import crc32

PRIORITIES = ("normal", "urgent", "critical")
PRIORITY_CODE = {name: code for code, name in enumerate(PRIORITIES)}
NORMAL, URGENT, CRITICAL = 0, 1, 2

PREFIX = struct.Struct("<II")  # body length, crc32 of body
BODY = struct.Struct("<BBqqqqHHIH")  # flags, prio, off, ts_ms, expires_at_ms, deliver_after_ms, lens
PREFIX_BYTES = PREFIX.size
HEADER_BYTES = PREFIX.size + BODY.size
FLAG_KEY = 1  # the record has a key (an empty key is still a key)
TAG_SEPARATOR = "\x1f"
MAX_SUBJECT_BYTES = 0xFFFF
MAX_KEY_BYTES = 0xFFFF
MAX_TAGS_BYTES = 0xFFFF


@dataclass(slots=True)
class Record:
    """One stored message. ``offset`` counts from 0 per stream partition; times are in ms."""

    offset: int
    timestamp_ms: int
    payload: bytes
    subject: str = ""
    headers: bytes | None = None
    key: bytes | None = None
    priority: str = "normal"
    tags: tuple[str, ...] = field(default_factory=tuple)
    expires_at_ms: int | None = None
    deliver_after_ms: int | None = None
    partition: int = 0
    delivery_count: int = 0  # set by consumers: 1 on first delivery, more on redelivery

    @property
    def key_text(self) -> str | None:
        """The key as text (UTF-8, undecodable bytes replaced), for protocols with string keys."""
        return None if self.key is None else self.key.decode("utf-8", "replace")


def as_key(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode()


def encode(
    offset: int,
    ts_ms: int,
    payload: bytes,
    subject: bytes = b"",
    headers: bytes | None = None,
    key: bytes | None = None,
    prio: int = 0,
    tags: bytes = b"",
    expires_at_ms: int = 0,
    deliver_after_ms: int = 0,
) -> bytes:
    """One record as bytes. Text fields arrive already encoded (the caller checked their sizes)."""
    hb = headers or b""
    kb = key if key is not None else b""
    body = b"".join(
        (
            BODY.pack(
                FLAG_KEY if key is not None else 0, prio, offset, ts_ms, expires_at_ms,
                deliver_after_ms, len(subject), len(kb), len(hb), len(tags),
            ),
            subject, kb, hb, tags, payload,
        )
    )  # fmt: skip
    return PREFIX.pack(len(body), crc32(body)) + body


def decode_body(body: bytes | memoryview, partition: int = 0) -> Record:
    """The record in a checked body (the bytes after the prefix)."""
    flags, prio, off, ts, exp, dl, sl, kl, hl, tl = BODY.unpack_from(body, 0)
    p = BODY.size
    subject = bytes(body[p : p + sl]).decode()
    p += sl
    key = bytes(body[p : p + kl]) if flags & FLAG_KEY else None
    p += kl
    headers = bytes(body[p : p + hl]) if hl else None
    p += hl
    tags = tuple(bytes(body[p : p + tl]).decode().split(TAG_SEPARATOR)) if tl else ()
    p += tl
    return Record(
        off, ts, bytes(body[p:]), subject, headers, key, PRIORITIES[prio] if prio < 3 else "normal",
        tags, exp or None, dl or None, partition,
    )  # fmt: skip


_unpack_prefix = PREFIX.unpack_from
_unpack_body = BODY.unpack_from
_BODY_BYTES = BODY.size


def decode_at(buf: bytes, view: memoryview, pos: int, partition: int = 0) -> Record:
    """Check and decode the record at ``pos`` of ``buf`` (``view`` is ``memoryview(buf)``), the
    read path's one call per record. Raises ``Corrupt``."""
    if pos + PREFIX.size > len(buf):
        raise Corrupt(pos, None)
    length, crc = _unpack_prefix(buf, pos)
    start = pos + PREFIX.size
    end = start + length
    if length < _BODY_BYTES or end > len(buf):
        raise Corrupt(pos, None)
    if crc32(view[start:end]) != crc:
        raise Corrupt(pos, PREFIX.size + length)
    flags, prio, off, ts, exp, dl, sl, kl, hl, tl = _unpack_body(buf, start)
    p = start + _BODY_BYTES
    subject = buf[p : p + sl].decode()
    p += sl
    key = buf[p : p + kl] if flags & FLAG_KEY else None
    p += kl
    headers = buf[p : p + hl] if hl else None
    p += hl
    tags = tuple(buf[p : p + tl].decode().split(TAG_SEPARATOR)) if tl else ()
    p += tl
    return Record(
        off, ts, buf[p:end], subject, headers, key, PRIORITIES[prio] if prio < 3 else "normal",
        tags, exp or None, dl or None, partition,
    )  # fmt: skip


def encode_tags(tags: tuple[str, ...] | list[str]) -> bytes:
    return TAG_SEPARATOR.join(tags).encode() if tags else b""


def index_tags(tags: tuple[str, ...] | list[str]) -> str:
    """Tags as one string for the index, each enclosed in separators: ``"\x1fa\x1fb\x1f"``."""
    return TAG_SEPARATOR + TAG_SEPARATOR.join(tags) + TAG_SEPARATOR if tags else ""


class Corrupt(Exception):
    """A record failed its checksum; ``pos`` is where it starts, ``length`` its full size if trusted."""

    def __init__(self, pos: int, length: int | None) -> None:
        super().__init__(pos, length)
        self.pos = pos
        self.length = length


def check_at(buf: bytes | memoryview, pos: int) -> tuple[memoryview, int]:
    """The checked body of the record at ``pos`` and its full size; raises ``Corrupt``."""
    end = len(buf)
    if pos + PREFIX_BYTES > end:
        raise Corrupt(pos, None)
    length, crc = PREFIX.unpack_from(buf, pos)
    if length < BODY.size or pos + PREFIX_BYTES + length > end:
        raise Corrupt(pos, None)
    body = memoryview(buf)[pos + PREFIX_BYTES : pos + PREFIX_BYTES + length]
    if crc32(body) != crc:
        raise Corrupt(pos, PREFIX_BYTES + length)
    return body, PREFIX_BYTES + length


def peek_offset(body: memoryview) -> int:
    return BODY.unpack_from(body, 0)[2]


@dataclass(slots=True)
class ScanResult:
    """What a scan found: every good record's (offset, position, size), corrupt spans, the valid end."""

    entries: list[tuple[int, int, int]]
    corrupt: list[tuple[int, int]]  # (position, size) of records skipped for a bad checksum
    valid_end: int  # bytes up to here are whole records; anything after is a torn tail


def scan(buf: bytes | memoryview) -> ScanResult:
    """Walk a segment's bytes. A bad record is skipped when a good record follows it (corruption),
    otherwise it and everything after it is a torn tail."""
    entries: list[tuple[int, int, int]] = []
    corrupt: list[tuple[int, int]] = []
    pos = 0
    end = len(buf)
    while pos < end:
        try:
            body, size = check_at(buf, pos)
        except Corrupt as bad:
            if bad.length is not None and pos + bad.length < end:
                try:
                    check_at(buf, pos + bad.length)
                except Corrupt:
                    break
                corrupt.append((pos, bad.length))
                pos += bad.length
                continue
            break
        entries.append((peek_offset(body), pos, size))
        pos += size
    return ScanResult(entries, corrupt, pos)


def iter_records(buf: bytes | memoryview, partition: int = 0) -> Iterator[tuple[int, Record]]:
    """Every good record in ``buf`` with its position (bad ones are skipped)."""
    for _off, pos, _size in scan(buf).entries:
        body, _ = check_at(buf, pos)
        yield pos, decode_body(body, partition)
