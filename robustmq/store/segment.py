"""One segment of a partition log: a file of records (or a buffer, for memory streams) plus the
in-memory offset index that maps an offset to its position, and the snapshot written at seal.

The snapshot (``.idx``) holds positions, timestamps, priorities, keys and delays of a sealed
segment, checksummed, so start-up loads arrays instead of rescanning every record.
"""

from __future__ import annotations

import os
import struct
import threading
from array import array
from pathlib import Path
from zlib import crc32

import orjson

from robustmq.store.files import OPEN_FILES, append_all
from robustmq.store.fsyncer import fdatasync_path

HOLE = 0xFFFFFFFF  # a position of a record removed by compaction
IDX_MAGIC = b"RMQIDX1\n"


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class Segment:
    """Records ``base`` .. ``base + len(positions) - 1`` of a partition."""

    __slots__ = (
        "base", "path", "positions", "timestamps", "prios", "size", "created_ms", "sealed",
        "fd", "mem", "corrupt", "min_expires_ms", "snapshot_size",
    )  # fmt: skip

    def __init__(self, base: int, path: Path | None, created_ms: int) -> None:
        self.base = base
        self.path = path  # None: memory segment
        self.positions = array("I")
        self.timestamps = array("q")
        self.prios = bytearray()
        self.size = 0
        self.created_ms = created_ms
        self.sealed = False
        self.fd: int | None = None
        self.mem: bytearray | None = None if path is not None else bytearray()
        self.corrupt: set[int] = set()  # offsets whose record failed its checksum
        self.min_expires_ms = 0  # earliest TTL among its records (0: none known), for compaction
        self.snapshot_size = 0  # bytes covered by the last .idx written or loaded

    # -- files -----------------------------------------------------------------------------------

    @property
    def end(self) -> int:
        return self.base + len(self.positions)

    @property
    def idx_path(self) -> Path:
        assert self.path is not None
        return self.path.with_suffix(".idx")

    def open(self, create: bool) -> None:
        """Create the file (``create``); otherwise it is opened on first use (see files.py)."""
        if self.path is not None and create:
            OPEN_FILES.add(self, os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644))

    def open_fd(self) -> int:
        assert self.path is not None
        return os.open(self.path, os.O_RDWR | os.O_APPEND)

    def handle(self) -> int:
        """The open descriptor of the file (reopened when it was closed to save descriptors)."""
        return OPEN_FILES.fd(self)

    def close(self) -> None:
        OPEN_FILES.close(self)

    def write(self, data: bytes) -> None:
        """Append all of ``data`` or nothing: on error the file is cut back and OSError raised."""
        if self.mem is not None:
            self.mem += data
            self.size += len(data)
            return
        append_all(self, data, self.size)
        self.size += len(data)

    def sync(self) -> None:
        if self.path is not None:
            os.fdatasync(OPEN_FILES.fd(self))

    def pread(self, pos: int, n: int) -> bytes:
        if self.mem is not None:
            return bytes(self.mem[pos : pos + n])
        return os.pread(OPEN_FILES.fd(self), n, pos)

    def read_all(self) -> bytes:
        """The whole segment; by path for files, so it is safe on any thread."""
        if self.mem is not None:
            return bytes(self.mem[: self.size])
        assert self.path is not None
        with open(self.path, "rb") as f:
            return f.read(self.size)

    def span_end(self, i: int) -> int:
        """Where the record at index ``i`` ends: the next present record's position or the end."""
        positions = self.positions
        for j in range(i + 1, len(positions)):
            p = positions[j]
            if p != HOLE:
                return p
        return self.size

    # -- snapshot --------------------------------------------------------------------------------

    def write_snapshot(self, keys: list[tuple[int, bytes]], delayed: list[tuple[int, int]]) -> None:
        """Write ``.idx`` atomically (temp file, fsync, rename), here and now."""
        if self.path is None:
            return
        self.store_snapshot(self.snapshot_bytes(keys, delayed), sync_segment=False)
        self.snapshot_size = self.size

    def snapshot_bytes(self, keys: list[tuple[int, bytes]], delayed: list[tuple[int, int]]) -> bytes:
        """The ``.idx`` content for the segment as it is now (cheap: the arrays are copied)."""
        head = orjson.dumps(
            {
                "base": self.base,
                "count": len(self.positions),
                "size": self.size,
                "created_ms": self.created_ms,
                # the newest record per key in this segment is enough to rebuild the key map
                "keys": [[o, k.decode("latin-1")] for k, o in dict((k, o) for o, k in keys).items()],
                "delayed": delayed,
                "corrupt": sorted(self.corrupt),
            }
        )
        rest = b"".join(
            (
                struct.pack("<I", len(head)), head, self.positions.tobytes(),
                self.timestamps.tobytes(), bytes(self.prios),
            )
        )  # fmt: skip
        return IDX_MAGIC + struct.pack("<I", crc32(rest)) + rest

    def store_snapshot(self, data: bytes, sync_segment: bool = True) -> None:
        """Write ``data`` as ``.idx`` by path, after syncing the records it covers (any thread)."""
        assert self.path is not None
        if sync_segment:
            fdatasync_path(str(self.path))
        tmp = self.idx_path.with_suffix(f".idx.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.idx_path)

    def load_snapshot(
        self, prefix_ok: bool = False
    ) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]]] | None:
        """Fill the arrays from ``.idx``; ``None`` when it is missing, damaged or stale.

        ``prefix_ok`` (the active segment): a snapshot of the first ``snapshot_size`` bytes will
        do, the caller scans the rest."""
        try:
            data = self.idx_path.read_bytes()
        except OSError:
            return None
        if not data.startswith(IDX_MAGIC) or len(data) < len(IDX_MAGIC) + 8:
            return None
        (crc,) = struct.unpack_from("<I", data, len(IDX_MAGIC))
        rest = memoryview(data)[len(IDX_MAGIC) + 4 :]
        if crc32(rest) != crc:
            return None
        (hlen,) = struct.unpack_from("<I", rest, 0)
        try:
            head = orjson.loads(rest[4 : 4 + hlen])
        except orjson.JSONDecodeError:
            return None
        count, size = head["count"], head["size"]
        if head["base"] != self.base or size > self.size or (size != self.size and not prefix_ok):
            return None
        self.snapshot_size = size
        p = 4 + hlen
        self.positions = array("I")
        self.positions.frombytes(rest[p : p + 4 * count])
        p += 4 * count
        self.timestamps = array("q")
        self.timestamps.frombytes(rest[p : p + 8 * count])
        p += 8 * count
        self.prios = bytearray(rest[p : p + count])
        self.created_ms = head["created_ms"]
        self.corrupt = set(head.get("corrupt", ()))
        keys = [(o, k.encode("latin-1")) for o, k in head["keys"]]
        delayed = [(o, d) for o, d in head["delayed"]]
        return keys, delayed
