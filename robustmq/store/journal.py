"""The journal of a partition: deletes and consumer state (creations, acks, commits) as small
checksummed JSON entries next to the segments, replayed at start-up.

Per-message state changes live here and in memory, never as database updates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from zlib import crc32

import orjson

from robustmq.store.files import OPEN_FILES, append_all
from robustmq.store.records import PREFIX, PREFIX_BYTES

JOURNAL_FILE = "journal.jnl"


def frame(entry: dict[str, Any]) -> bytes:
    body = orjson.dumps(entry)
    return PREFIX.pack(len(body), crc32(body)) + body


def parse(buf: bytes) -> tuple[list[dict[str, Any]], int]:
    """Entries in ``buf`` and where the valid part ends (a torn or corrupt tail is dropped)."""
    out: list[dict[str, Any]] = []
    pos, end = 0, len(buf)
    while pos + PREFIX_BYTES <= end:
        length, crc = PREFIX.unpack_from(buf, pos)
        body = buf[pos + PREFIX_BYTES : pos + PREFIX_BYTES + length]
        if len(body) != length or crc32(body) != crc:
            break
        try:
            out.append(orjson.loads(body))
        except orjson.JSONDecodeError:
            break
        pos += PREFIX_BYTES + length
    return out, pos


class Journal:
    """An append-only file of entries (or nothing, for memory streams)."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / JOURNAL_FILE if directory is not None else None
        self.fd: int | None = None
        self.size = 0

    def open(self) -> list[dict[str, Any]]:
        if self.path is None:
            return []
        fd = OPEN_FILES.add(self, os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644))
        size = os.fstat(fd).st_size
        buf = os.pread(fd, size, 0) if size else b""
        entries, valid = parse(buf)
        if valid < size:
            os.ftruncate(fd, valid)
        self.size = valid
        return entries

    def open_fd(self) -> int:
        assert self.path is not None
        return os.open(self.path, os.O_RDWR | os.O_APPEND)

    def write(self, data: bytes) -> None:
        if self.path is None:
            return
        append_all(self, data, self.size)
        self.size += len(data)

    def sync(self) -> None:
        if self.path is not None:
            os.fdatasync(OPEN_FILES.fd(self))

    def rewrite(self, entries: list[dict[str, Any]]) -> None:
        """Replace the journal with ``entries`` atomically (a snapshot of the current state)."""
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        data = b"".join(frame(e) for e in entries)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.close()  # the next write opens the new file
        self.size = len(data)

    def close(self) -> None:
        OPEN_FILES.close(self)
