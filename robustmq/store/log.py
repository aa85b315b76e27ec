"""The log of one stream partition: segments, recovery, rollover, retention, compaction, reads.

The active segment takes group-committed batches; sealed segments carry an index snapshot. The
in-memory state (offset positions, timestamps, priority lists, key map, deleted set, delayed
records, consumer cursors) is rebuilt from snapshots, the active segment and the journal.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import shutil
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zlib import crc32

from robustmq.store import records
from robustmq.store.errors import CORRUPT_RECORD, RECORD_TOO_LARGE, RecordTooLarge
from robustmq.store.journal import Journal, frame
from robustmq.store.records import (
    BODY,
    FLAG_KEY,
    PREFIX,
    PREFIX_BYTES,
    Corrupt,
    Record,
    check_at,
    decode_at,
    decode_body,
)
from robustmq.store.segment import HOLE, Segment, segment_name

if TYPE_CHECKING:
    from robustmq.config import StoreSettings
    from robustmq.store.consumers import ConsumerState
    from robustmq.store.stream import StreamConfig

log = logging.getLogger("robustmq.store")

JOURNAL_REWRITE_BYTES = 4 * 1024 * 1024
CHECKPOINT_BYTES = 16 * 1024 * 1024  # active-segment snapshot after this much new data
_pack_body = BODY.pack
_pack_prefix = PREFIX.pack


def _ignore(_plog: PartitionLog) -> None:
    pass


READ_CHUNK_RECORDS = 512

# a written batch: (end offset, index rows, ack future, journal future, segment path, start, end)
WrittenBatch = tuple[int, list[tuple], Any, Any, str | None, int, int]


def _store_snapshot(seg: Segment, data: bytes) -> None:
    try:
        seg.store_snapshot(data)
    except OSError as exc:
        log.warning("cannot write the index snapshot of %s: %s", seg.path, exc.strerror or exc)


class PartitionLog:
    """Records of one partition of one stream, offsets from 0."""

    def __init__(
        self,
        stream: str,
        partition: int,
        config: StreamConfig,
        directory: Path | None,
        settings: StoreSettings,
        now_ms: Callable[[], int],
    ) -> None:
        self.stream = stream
        self.partition = partition
        self.config = config
        self.directory = directory
        self.settings = settings
        self.now_ms = now_ms
        self.max_record_bytes = settings.max_record_bytes
        self.commit_max_records = settings.commit_max_records
        self.commit_max_bytes = settings.commit_max_bytes
        self.on_pending: Callable[[PartitionLog], None] = _ignore  # first record of a batch
        self.on_full: Callable[[PartitionLog], None] = _ignore  # the batch reached its limits
        self.segments: list[Segment] = []
        self.bases: list[int] = []
        self.first_offset = 0  # first offset retention keeps (logical)
        self.end_offset = 0  # committed: offsets below are readable (and acknowledged)
        self.written_end = 0  # written to the segment (readable once its fsync is done)
        self.next_offset = 0  # assigned to the next append
        self.last_ts = 0
        self.bytes = 0
        self.keys: dict[bytes, int] = {}
        self.deleted: set[int] = set()
        self.by_class = (None, array("q"), array("q"))  # offsets of urgent and critical records
        self.delayed: list[tuple[int, int]] = []  # heap of (deliver_after_ms, offset), not yet due
        self.active_keys: list[tuple[int, bytes]] = []  # keyed records of the active segment
        self.active_delayed: list[tuple[int, int]] = []
        self.consumers: dict[str, ConsumerState] = {}
        self.journal = Journal(directory)
        # pending: appended, not yet committed
        self.pending_chunks: list[bytes] = []
        self.pending_meta: list[tuple] = []  # index rows (see index.COLUMNS)
        self.pending_bytes = 0
        self.pending_future: asyncio.Future | None = None
        self.pending_journal: list[bytes] = []
        self.journal_future: asyncio.Future | None = None
        self.waiters: list[asyncio.Future] = []
        # on_commit(plog, rows, segment path, start, end): a batch became readable
        self.on_commit: Callable[[PartitionLog, list[tuple], str | None, int, int], None] | None = None
        self.on_seal: Callable[[PartitionLog, Segment], None] | None = None
        self.on_drop: Callable[[PartitionLog, list[Segment]], None] | None = None
        self.on_delete: Callable[[PartitionLog, list[int]], None] | None = None
        self.on_delayed: Callable[[PartitionLog, int], None] | None = None
        self.reported_corrupt: set[tuple[int, int]] = set()
        self.write_base = 0  # where the last committed batch starts in the active segment
        self.compact_hints: set[int] = set()  # sealed segments (bases) with something to reclaim
        self.loop: asyncio.AbstractEventLoop | None = None  # the store's loop, for futures
        self.closed = False

    def __repr__(self) -> str:
        return f"<PartitionLog {self.stream}/{self.partition} {self.first_offset}..{self.end_offset}>"

    # -- opening and recovery --------------------------------------------------------------------

    def open(self) -> list[dict[str, Any]]:
        """Recover segments and return the journal entries (for consumers to replay)."""
        now = self.now_ms()
        if self.directory is None or self.config.storage == "memory":
            self.directory = None
            self.journal = Journal(None)
            self._new_segment(0, now)
            return []
        self.directory.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in self.directory.iterdir() if p.suffix == ".log")
        for i, path in enumerate(files):
            last = i == len(files) - 1
            seg = Segment(int(path.stem), path, now)
            seg.size = path.stat().st_size
            seg.open(create=False)
            if self.segments and seg.base > self.segments[-1].end:
                self._pad(self.segments[-1], seg.base)
            snap = seg.load_snapshot(prefix_ok=last)
            if snap is None:
                keys, delayed = self._scan(seg, last)
                if not last:
                    seg.sealed = True
                    seg.write_snapshot(keys, delayed)
            else:
                keys, delayed = snap
                if last:
                    if seg.snapshot_size < seg.size:  # records after the last checkpoint
                        more_keys, more_delayed = self._scan(seg, last, seg.snapshot_size)
                        keys = keys + more_keys
                        delayed = delayed + more_delayed
                else:
                    seg.sealed = True
            self._adopt(seg, keys, delayed, last)
        if not self.segments:
            self._new_segment(0, now)
        elif self.segments[-1].sealed:
            self._new_segment(self.segments[-1].end, now)
        self.end_offset = self.next_offset = self.written_end = self.segments[-1].end
        self.first_offset = self.segments[0].base
        while self.first_offset < self.end_offset:
            seg = self._segment_for(self.first_offset)
            if seg.positions[self.first_offset - seg.base] != HOLE:
                break
            self.first_offset += 1
        entries = self.journal.open()
        return entries

    def _pad(self, seg: Segment, end: int) -> None:
        while seg.end < end:
            seg.positions.append(HOLE)
            seg.timestamps.append(seg.timestamps[-1] if seg.timestamps else 0)
            seg.prios.append(0)

    def _scan(
        self, seg: Segment, last: bool, start: int = 0
    ) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]]]:
        """Rebuild the arrays of ``seg`` from its bytes (from ``start``, when a snapshot covers
        the part before), cutting a torn tail of the active segment."""
        buf = seg.pread(start, seg.size - start)
        result = records.scan(buf)
        keys: list[tuple[int, bytes]] = []
        delayed: list[tuple[int, int]] = []
        corrupt = sorted(result.corrupt)
        ci = 0
        unpack = BODY.unpack_from
        positions, timestamps, prios = seg.positions, seg.timestamps, seg.prios
        for off, pos, _size in result.entries:
            expected = seg.base + len(positions)
            while expected < off:  # a hole: a corrupt record or one removed by compaction
                if ci < len(corrupt) and corrupt[ci][0] < pos:
                    positions.append(start + corrupt[ci][0])
                    seg.corrupt.add(expected)
                    ci += 1
                else:
                    positions.append(HOLE)
                timestamps.append(timestamps[-1] if timestamps else 0)
                prios.append(0)
                expected += 1
            flags, prio, _o, ts, _exp, dl, sl, kl, _hl, _tl = unpack(buf, pos + PREFIX_BYTES)
            positions.append(start + pos)
            timestamps.append(ts)
            prios.append(prio)
            if flags & FLAG_KEY:
                k0 = pos + PREFIX_BYTES + BODY.size + sl
                keys.append((off, bytes(buf[k0 : k0 + kl])))
            if dl > ts:
                delayed.append((off, dl))
        if corrupt:
            for p, _n in corrupt:
                log.error(
                    "corrupt record in %s at position %d: checksum mismatch, skipped", seg.path, start + p
                )
        valid_end = start + result.valid_end
        if valid_end < seg.size:
            if last:
                log.warning(
                    "truncating torn tail of %s: %d bytes after position %d",
                    seg.path, seg.size - valid_end, valid_end,
                )  # fmt: skip
                os.ftruncate(seg.handle(), valid_end)
                seg.size = valid_end
            else:
                log.error("unreadable tail in sealed segment %s after position %d", seg.path, valid_end)
        if timestamps and not start:
            seg.created_ms = timestamps[0]
        return keys, delayed

    def _adopt(self, seg: Segment, keys: list, delayed: list, active: bool) -> None:
        self.segments.append(seg)
        self.bases.append(seg.base)
        self.bytes += seg.size
        if seg.timestamps:
            self.last_ts = max(self.last_ts, seg.timestamps[-1])
        if any(seg.prios):
            urgent, critical = self.by_class[1], self.by_class[2]
            base = seg.base
            for i, p in enumerate(seg.prios):
                if p == 1:
                    urgent.append(base + i)
                elif p == 2:
                    critical.append(base + i)
        self.keys.update((k, o) for o, k in keys)
        now = self.now_ms()
        for off, dl in delayed:
            if dl > now:
                heapq.heappush(self.delayed, (dl, off))
        if active:
            self.active_keys = list(keys)
            self.active_delayed = list(delayed)

    def _new_segment(self, base: int, now: int) -> Segment:
        path = self.directory / (segment_name(base) + ".log") if self.directory is not None else None
        seg = Segment(base, path, now)
        seg.open(create=True)
        self.segments.append(seg)
        self.bases.append(base)
        self.active_keys = []
        self.active_delayed = []
        return seg

    def checkpoint(self, min_new_bytes: int = 0, background: bool = False) -> None:
        """Snapshot the active segment's index so start-up scans only what was written after.

        ``background``: the syncs and the write run on a worker thread, not on the event loop."""
        seg = self.segments[-1]
        if seg.path is None or seg.size - seg.snapshot_size <= min_new_bytes or not seg.positions:
            return
        data = seg.snapshot_bytes(self.active_keys, self.active_delayed)
        seg.snapshot_size = seg.size
        if background and self.loop is not None:
            self.loop.run_in_executor(None, _store_snapshot, seg, data)
        else:
            _store_snapshot(seg, data)

    def close(self) -> None:
        self.closed = True
        self.checkpoint()
        for seg in self.segments:
            seg.close()
        self.journal.close()
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(False)
        self.waiters.clear()

    def destroy(self) -> None:
        self.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- appending -------------------------------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        return self.loop

    @property
    def pending_count(self) -> int:
        return len(self.pending_meta)

    @property
    def config(self) -> StreamConfig:
        return self._config

    @config.setter
    def config(self, config: StreamConfig) -> None:
        self._config = config
        self.default_ttl_ms = config.default_ttl_ms

    def append(
        self,
        payload: bytes,
        subject: str,
        headers: bytes | None,
        key: bytes | None,
        prio: int,
        tags: tuple[str, ...] | list[str],
        ttl_ms: int | None,
        deliver_after_ms: int | None,
        now: int,
    ) -> int:
        """Buffer one record for the next commit and return its offset (no I/O here, unless
        the batch is already full: then it is written first and this record starts the next)."""
        if self.pending_meta and (
            self.pending_bytes >= self.commit_max_bytes or len(self.pending_meta) >= self.commit_max_records
        ):
            self.on_full(self)
        if now < self.last_ts:
            now = self.last_ts
        else:
            self.last_ts = now
        off = self.next_offset
        if ttl_ms is None:
            ttl_ms = self.default_ttl_ms
        exp = now + ttl_ms if ttl_ms else 0
        dl = now + deliver_after_ms if deliver_after_ms and deliver_after_ms > 0 else 0
        sb = subject.encode()
        if tags:
            tb = records.encode_tags(tags)
            itags = records.index_tags(tags)
        else:
            tb = b""
            itags = ""
        if key is None:
            kb = b""
            flags = 0
        else:
            kb = key
            flags = FLAG_KEY
        hb = headers or b""
        if (
            len(sb) > records.MAX_SUBJECT_BYTES
            or len(tb) > records.MAX_TAGS_BYTES
            or len(kb) > records.MAX_KEY_BYTES
        ):
            raise RecordTooLarge("subject, key or tags too long")
        body = b"".join(
            (
                _pack_body(flags, prio, off, now, exp, dl, len(sb), len(kb), len(hb), len(tb)),
                sb,
                kb,
                hb,
                tb,
                payload,
            )
        )
        size = len(body) + PREFIX_BYTES
        if size > self.max_record_bytes:
            raise RecordTooLarge(RECORD_TOO_LARGE.format(size=size, limit=self.max_record_bytes))
        chunks = self.pending_chunks
        chunks.append(_pack_prefix(size - PREFIX_BYTES, crc32(body)))
        chunks.append(body)
        self.pending_meta.append(
            (self.stream, self.partition, off, now, subject, key, prio, itags, exp, dl, size)
        )
        self.pending_bytes += size
        self.next_offset = off + 1
        if self.pending_future is None:
            self.pending_future = self._loop().create_future()
            self.on_pending(self)
        return off

    def add_journal(self, entry: dict[str, Any]) -> asyncio.Future:
        self.pending_journal.append(frame(entry))
        if self.journal_future is None:
            self.journal_future = self._loop().create_future()
        return self.journal_future

    def write_pending(self) -> None:
        """Write the pending batch (called by the committer; raises OSError, nothing half-written)."""
        if self.pending_chunks:
            seg = self.segments[-1]
            now = self.now_ms()
            if seg.size and (
                seg.size + self.pending_bytes > self.settings.segment_max_bytes
                or now - seg.created_ms >= self.settings.segment_max_age_s * 1000
            ):
                self._roll(now)
                seg = self.segments[-1]
            self.write_base = seg.size
            seg.write(b"".join(self.pending_chunks))
        if self.pending_journal:
            self.journal.write(b"".join(self.pending_journal))

    def sync_paths(self) -> list[str]:
        """The files a commit of this partition wrote to (for the fsync thread)."""
        out = []
        seg = self.segments[-1]
        if seg.path is not None:
            out.append(str(seg.path))
        if self.journal.path is not None:
            out.append(str(self.journal.path))
        return out

    def take_written(self) -> WrittenBatch | None:
        """The batch just written: index it in memory (positions, classes, keys, delays) and hand
        it over; it becomes readable and acknowledged at ``publish`` (after its fsync, if any)."""
        meta = self.pending_meta
        fut, self.pending_future = self.pending_future, None
        jfut, self.journal_future = self.journal_future, None
        if not meta and fut is None and jfut is None:
            self.pending_journal = []
            return None
        seg = self.segments[-1]
        if meta:
            pos = self.write_base
            positions, timestamps, prios = seg.positions, seg.timestamps, seg.prios
            keys, by_class = self.keys, self.by_class
            for m in meta:
                positions.append(pos)
                pos += m[10]
                timestamps.append(m[3])
                prio = m[6]
                prios.append(prio)
                if prio:
                    by_class[prio].append(m[2])
                if m[8] and (not seg.min_expires_ms or m[8] < seg.min_expires_ms):
                    seg.min_expires_ms = m[8]
                if m[5] is not None:
                    old = keys.get(m[5])
                    if old is not None and old < seg.base:
                        self.compact_hints.add(self._segment_for(old).base)
                    keys[m[5]] = m[2]
                    self.active_keys.append((m[2], m[5]))
                if m[9]:
                    heapq.heappush(self.delayed, (m[9], m[2]))
                    self.active_delayed.append((m[2], m[9]))
                    if self.on_delayed is not None:
                        self.on_delayed(self, m[9])
            self.bytes += self.pending_bytes
            self.written_end = self.next_offset
            self.pending_chunks = []
            self.pending_meta = []
            self.pending_bytes = 0
        self.pending_journal = []
        path = str(seg.path) if seg.path is not None else None
        return (self.written_end, meta, fut, jfut, path, self.write_base, seg.size)

    def publish(self, batch: WrittenBatch, err: BaseException | None = None) -> None:
        """A written batch is durable by the policy: make it readable, feed the index, acknowledge,
        wake readers. With ``err`` (its fsync failed) the producers get the error instead."""
        end, meta, fut, jfut, path, start, stop = batch
        if meta and not self.closed:
            if end > self.end_offset:
                self.end_offset = end
            if self.on_commit is not None:
                self.on_commit(self, meta, path, start, stop)
            if self.config.max_msgs:
                self.apply_retention(self.now_ms())
        for f in (fut, jfut):
            if f is not None and not f.done():
                if err is None:
                    f.set_result(None)
                else:
                    f.set_exception(err)
                    f.exception()  # retrieved: the producer may not be waiting
        if meta:
            self.wake()

    def complete_pending(self) -> None:
        """The batch is on disk and needs no fsync: publish it at once."""
        batch = self.take_written()
        if batch is not None:
            self.publish(batch)

    def fail_pending(self, err: Exception) -> None:
        """The batch could not be written: forget it, give the error to its producers."""
        self.next_offset = self.written_end
        self.pending_chunks = []
        self.pending_meta = []
        self.pending_bytes = 0
        self.pending_journal = []
        for fut in (self.pending_future, self.journal_future):
            if fut is not None and not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved: the producer may not be waiting
        self.pending_future = self.journal_future = None

    def _roll(self, now: int) -> None:
        old = self.segments[-1]
        nxt = Segment(
            old.end, self.directory / (segment_name(old.end) + ".log") if self.directory else None, now
        )
        nxt.open(create=True)  # raises before anything changes if the directory is unwritable
        try:
            old.sync()  # once per segment (64 MiB); the fsync policy has synced most of it already
            old.sealed = True
            old.write_snapshot(self.active_keys, self.active_delayed)
        except OSError:
            nxt.close()
            if nxt.path is not None:
                nxt.path.unlink(missing_ok=True)
            old.sealed = False
            raise
        self.segments.append(nxt)
        self.bases.append(nxt.base)
        if self.config.compact or any(o >= old.base for o in self.deleted):
            self.compact_hints.add(old.base)
        self.active_keys = []
        self.active_delayed = []
        if self.on_seal is not None:
            self.on_seal(self, old)

    def seal_active(self) -> None:
        """Seal the active segment now (if it holds anything), e.g. before compaction."""
        if self.segments[-1].positions:
            self._roll(self.now_ms())

    # -- waiting ---------------------------------------------------------------------------------

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(True)

    async def wait(self, timeout_s: float) -> bool:
        """Until something new may be visible (a commit, a delayed record released) or the timeout."""
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return False
        finally:
            if fut in self.waiters:
                self.waiters.remove(fut)

    def release_due(self, now: int) -> bool:
        """Pop delayed records that are now due; True when any was released."""
        released = False
        while self.delayed and self.delayed[0][0] <= now:
            heapq.heappop(self.delayed)
            released = True
        if released:
            self.wake()
        return released

    # -- reading ---------------------------------------------------------------------------------

    def _segment_for(self, off: int) -> Segment:
        return self.segments[bisect_right(self.bases, off) - 1]

    def visible(self, rec: Record, now: int) -> bool:
        if rec.expires_at_ms is not None and rec.expires_at_ms <= now:
            return False
        if rec.deliver_after_ms is not None and rec.deliver_after_ms > now:
            return False
        if self.config.compact and rec.key is not None and self.keys.get(rec.key) != rec.offset:
            return False
        return True

    def _report(self, seg: Segment, pos: int, off: int) -> None:
        seg.corrupt.add(off)
        if (seg.base, pos) not in self.reported_corrupt:
            self.reported_corrupt.add((seg.base, pos))
            log.error("%s", CORRUPT_RECORD.format(path=seg.path or "memory", pos=pos, offset=off))

    def read(
        self,
        offset: int,
        max_records: int,
        now: int,
        not_due: list[tuple[int, int]] | None = None,
        end: int | None = None,
        include_invisible: bool = False,
    ) -> list[Record]:
        """Up to ``max_records`` visible records from ``offset`` on, in offset order.

        Not-yet-due records met on the way are reported in ``not_due`` as (deliver_after, offset).
        """
        out: list[Record] = []
        off = max(offset, self.first_offset)
        end = self.end_offset if end is None else min(end, self.end_offset)
        deleted = self.deleted
        part = self.partition
        compact = self._config.compact
        keys = self.keys
        while off < end and len(out) < max_records:
            si = bisect_right(self.bases, off) - 1
            seg = self.segments[si]
            i0 = off - seg.base
            n = min(len(seg.positions) - i0, end - off, max(max_records - len(out), 16), READ_CHUNK_RECORDS)
            if n <= 0:
                off = seg.end
                continue
            positions = seg.positions
            start = None
            for i in range(i0, i0 + n):
                if positions[i] != HOLE:
                    start = positions[i]
                    break
            if start is None:
                off += n
                continue
            stop = seg.span_end(i0 + n - 1)
            buf = seg.pread(start, stop - start)
            view = memoryview(buf)
            corrupt = seg.corrupt
            base = seg.base
            for i in range(i0, i0 + n):
                pos = positions[i]
                o = base + i
                if pos == HOLE or (deleted and o in deleted) or (corrupt and o in corrupt):
                    continue
                try:
                    rec = decode_at(buf, view, pos - start, part)
                except Corrupt:
                    self._report(seg, pos, o)
                    continue
                exp = rec.expires_at_ms
                dl = rec.deliver_after_ms
                if include_invisible or not (
                    (exp is not None and exp <= now)
                    or (dl is not None and dl > now)
                    or (compact and rec.key is not None and keys.get(rec.key) != o)
                ):
                    out.append(rec)
                    if len(out) >= max_records:
                        break
                elif not_due is not None and dl is not None and dl > now:
                    not_due.append((dl, o))
            else:
                off = seg.base + i0 + n
                continue
            break
        return out

    def get(self, off: int, now: int, include_invisible: bool = False) -> Record | None:
        """The record at ``off`` if it is readable (and visible, unless asked otherwise)."""
        if off < self.first_offset or off >= self.end_offset or off in self.deleted:
            return None
        seg = self._segment_for(off)
        i = off - seg.base
        pos = seg.positions[i]
        if pos == HOLE or off in seg.corrupt:
            return None
        buf = seg.pread(pos, seg.span_end(i) - pos)
        try:
            body, _ = check_at(buf, 0)
        except Corrupt:
            self._report(seg, pos, off)
            return None
        rec = decode_body(body, self.partition)
        if include_invisible or self.visible(rec, now):
            return rec
        return None

    def priority_of(self, off: int) -> int:
        seg = self._segment_for(off)
        return seg.prios[off - seg.base]

    def read_class(
        self, prio: int, offset: int, max_records: int, now: int, not_due: list | None = None
    ) -> tuple[list[Record], int]:
        """Visible records of one priority class from ``offset``; also the next offset to look at."""
        if prio == 0:
            out: list[Record] = []
            off = max(offset, self.first_offset)
            end = self.end_offset
            while off < end and len(out) < max_records:
                chunk = self.read(off, max_records - len(out), now, not_due, include_invisible=True)
                if not chunk:
                    return out, end
                for rec in chunk:
                    if len(out) >= max_records:
                        break
                    off = rec.offset + 1
                    if self.priority_of(rec.offset) != 0:
                        continue
                    if self.visible(rec, now):
                        out.append(rec)
                    elif not_due is not None and rec.deliver_after_ms and rec.deliver_after_ms > now:
                        not_due.append((rec.deliver_after_ms, rec.offset))
            return out, off
        offs = self.by_class[prio]
        i = bisect_left(offs, max(offset, self.first_offset))
        out = []
        nxt = offset
        while i < len(offs) and len(out) < max_records:
            o = offs[i]
            i += 1
            nxt = o + 1
            rec = self.get(o, now, include_invisible=True)
            if rec is None:
                continue
            if self.visible(rec, now):
                out.append(rec)
            elif not_due is not None and rec.deliver_after_ms and rec.deliver_after_ms > now:
                not_due.append((rec.deliver_after_ms, o))
        if i >= len(offs):
            nxt = max(nxt, self.end_offset)
        return out, nxt

    def first_offset_at_or_after(self, time_ms: int) -> int | None:
        for seg in self.segments:
            ts = seg.timestamps
            if not ts or seg.end <= self.first_offset or ts[-1] < time_ms:
                continue
            i = bisect_left(ts, time_ms)
            off = max(seg.base + i, self.first_offset)
            while off < self.end_offset:
                s = self._segment_for(off)
                if s.positions[off - s.base] != HOLE and off not in self.deleted:
                    return off
                off += 1
            return None
        return None

    # -- deleting, retention, compaction ---------------------------------------------------------

    def delete(self, off: int) -> asyncio.Future | None:
        """Tombstone one record; None when it is not there (or already deleted)."""
        if off < self.first_offset or off >= self.end_offset or off in self.deleted:
            return None
        seg = self._segment_for(off)
        if seg.positions[off - seg.base] == HOLE:
            return None
        self.deleted.add(off)
        if seg is not self.segments[-1]:
            self.compact_hints.add(seg.base)
        if self.on_delete is not None:
            self.on_delete(self, [off])
        return self.add_journal({"t": "del", "o": off})

    def apply_retention(self, now: int) -> int:
        """Move the first offset by max_msgs / max_age, drop whole segments; returns records dropped."""
        cfg = self.config
        first = self.first_offset
        if cfg.max_msgs:
            first = max(first, self.end_offset - cfg.max_msgs)
        if cfg.max_age_ms:
            cut = self.first_offset_at_or_after(now - cfg.max_age_ms)
            first = max(first, self.end_offset if cut is None else cut)
        if cfg.drop_consumed and self.consumers:
            first = max(first, min(self.end_offset, min(c.floor for c in self.consumers.values())))
        if cfg.max_bytes:
            total = self.bytes
            i = 0
            while total > cfg.max_bytes and i < len(self.segments) - 1:
                total -= self.segments[i].size
                first = max(first, self.segments[i].end)
                i += 1
        dropped = first - self.first_offset
        self.first_offset = first
        gone: list[Segment] = []
        while len(self.segments) > 1 and self.segments[0].end <= first:
            seg = self.segments.pop(0)
            self.bases.pop(0)
            self.bytes -= seg.size
            seg.close()
            if seg.path is not None:
                seg.path.unlink(missing_ok=True)
                seg.idx_path.unlink(missing_ok=True)
            gone.append(seg)
        if gone:
            lo = self.segments[0].base
            self.deleted = {o for o in self.deleted if o >= lo}
            for cls in (1, 2):
                offs = self.by_class[cls]
                cut_i = bisect_left(offs, lo)
                if cut_i:
                    del offs[:cut_i]
            if self.on_drop is not None:
                self.on_drop(self, gone)
        if gone:  # forget keys whose newest record is gone (not on every move: O(keys))
            lo = self.segments[0].base
            self.keys = {k: o for k, o in self.keys.items() if o >= lo}
        return dropped

    def compactable_segments(self, hinted_only: bool = False, now: int = 0) -> list[Segment]:
        """Sealed segments to compact: all, or only those known to hold something to reclaim."""
        out = []
        for seg in self.segments[:-1]:
            if seg.end <= self.first_offset or seg.path is None:
                continue
            if (
                hinted_only
                and seg.base not in self.compact_hints
                and not (seg.min_expires_ms and seg.min_expires_ms <= now)
            ):
                continue
            out.append(seg)
        return out

    def plan_compaction(self, seg: Segment, now: int) -> list[int]:
        """Indexes of records of a sealed segment that can go: deleted, expired, superseded by key,
        below the first offset. The newest record of each key always stays (its tombstone or expiry
        still hides it), so the key map rebuilt at start-up is the same. Safe off the event loop."""
        drop: list[int] = []
        data = seg.read_all()
        compact = self.config.compact
        keys = self.keys
        for i, pos in enumerate(seg.positions):
            if pos == HOLE:
                continue
            off = seg.base + i
            if off < self.first_offset:
                drop.append(i)
                continue
            try:
                body, _size = check_at(data, pos)
            except Corrupt:
                continue  # kept for verify() to report
            rec = decode_body(body, self.partition)
            if rec.key is not None and keys.get(rec.key) == off:
                continue
            if (
                off in self.deleted
                or (rec.expires_at_ms is not None and rec.expires_at_ms <= now)
                or (compact and rec.key is not None)
            ):
                drop.append(i)
        return drop

    def rewrite_segment(self, seg: Segment, drop: list[int]) -> tuple[Path, Path, array] | None:
        """Write the survivors of a sealed segment to temporary files (safe off the event loop)."""
        if seg.path is None:
            return None
        data = seg.read_all()
        dropset = set(drop)
        new_positions = array("I")
        chunks: list[bytes] = []
        pos = 0
        for i, p in enumerate(seg.positions):
            if p == HOLE or i in dropset:
                new_positions.append(HOLE)
                continue
            end = seg.span_end(i)
            chunks.append(data[p:end])
            new_positions.append(pos)
            pos += end - p
        tmp = seg.path.with_suffix(".log.compact")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"".join(chunks))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return tmp, seg.path, new_positions

    def install_rewrite(self, seg: Segment, tmp: Path, new_positions: array, drop: list[int]) -> int:
        """Swap a compacted segment in (on the event loop); returns bytes reclaimed."""
        if seg not in self.segments:
            tmp.unlink(missing_ok=True)
            return 0
        assert seg.path is not None
        old_size = seg.size
        os.replace(tmp, seg.path)
        seg.close()
        seg.size = os.stat(seg.path).st_size
        seg.positions = new_positions
        self.bytes += seg.size - old_size
        for i in drop:
            seg.corrupt.discard(seg.base + i)
        keys = []
        delayed = []
        self.compact_hints.discard(seg.base)
        seg.min_expires_ms = 0
        for _pos, rec in records.iter_records(seg.read_all(), self.partition):
            if rec.expires_at_ms and (not seg.min_expires_ms or rec.expires_at_ms < seg.min_expires_ms):
                seg.min_expires_ms = rec.expires_at_ms
            if rec.key is not None:
                keys.append((rec.offset, rec.key))
            if rec.deliver_after_ms and rec.deliver_after_ms > rec.timestamp_ms:
                delayed.append((rec.offset, rec.deliver_after_ms))
        seg.write_snapshot(keys, delayed)
        dropped_offsets = {seg.base + i for i in drop}
        self.deleted -= dropped_offsets
        if self.on_seal is not None:
            self.on_seal(self, seg)
        return old_size - seg.size

    # -- journal snapshot ------------------------------------------------------------------------

    def journal_snapshot(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = [{"t": "del", "o": o} for o in sorted(self.deleted)]
        for state in self.consumers.values():
            entries.extend(state.snapshot_entries())
        return entries

    def maybe_rewrite_journal(self) -> None:
        if self.journal.size > JOURNAL_REWRITE_BYTES and not self.pending_journal:
            self.journal.rewrite(self.journal_snapshot())
