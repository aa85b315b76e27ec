"""Group commit: one committer writes every partition's pending records once per tick.

Appends are synchronous and only buffer bytes; the committer wakes after ``commit_interval_ms``
or as soon as a partition holds ``commit_max_records`` / ``commit_max_bytes``, does one write per
partition, fsyncs by policy, then resolves one future per partition batch:

- ``always``: fdatasync before any acknowledgement (survives power loss);
- ``interval``: acknowledged after the write, fdatasync at most ``fsync_interval_ms`` later
  (survives a process crash; an OS crash can lose up to one interval);
- ``never``: the OS decides when to write back (survives a process crash only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from robustmq.store.errors import WRITE_FAILED, StoreWriteError

if TYPE_CHECKING:
    from robustmq.config import StoreSettings
    from robustmq.store.log import PartitionLog

log = logging.getLogger("robustmq.store")


class Ack:
    """What ``append`` returns: the offset is known at once; awaiting it waits for the commit.

    Awaiting raises ``StoreWriteError`` if the commit failed (nothing of the batch was stored).
    """

    __slots__ = ("offset", "_done")

    def __init__(self, offset: int, done: asyncio.Future) -> None:
        self.offset = offset
        self._done = done

    def __await__(self) -> Generator[Any, None, int]:
        yield from self._done.__await__()
        return self.offset

    def done(self) -> bool:
        return self._done.done()

    def exception(self) -> BaseException | None:
        return self._done.exception() if self._done.done() else None

    def add_done_callback(self, fn: Any) -> None:
        self._done.add_done_callback(lambda _f: fn(self))


class BatchAck:
    """What ``append_batch`` returns: one future for many records; awaiting gives their offsets."""

    __slots__ = ("offsets", "_done")

    def __init__(self, offsets: list[int], done: asyncio.Future) -> None:
        self.offsets = offsets
        self._done = done

    def __await__(self) -> Generator[Any, None, list[int]]:
        yield from self._done.__await__()
        return self.offsets

    def done(self) -> bool:
        return self._done.done()


class FailedAck:
    """An append refused before it was buffered (e.g. too large), for callers that only await."""

    __slots__ = ("error", "offset")

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.offset = -1

    def __await__(self) -> Generator[Any, None, int]:
        raise self.error
        yield  # pragma: no cover

    def done(self) -> bool:
        return True

    def exception(self) -> BaseException | None:
        return self.error


class GroupCommitter:
    """Collects dirty partitions and commits them together."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.fsync = settings.fsync
        self.interval_s = settings.commit_interval_ms / 1000.0
        self.fsync_interval_s = settings.fsync_interval_ms / 1000.0
        self.max_records = settings.commit_max_records
        self.max_bytes = settings.commit_max_bytes
        self._dirty: dict[PartitionLog, None] = {}
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._soon = False
        self._unsynced: dict[PartitionLog, None] = {}
        self._sync_timer: asyncio.TimerHandle | None = None
        self._last_sync = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error_logged: set[str] = set()
        self.commits = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def commit_soon(self, plog: PartitionLog) -> None:
        """A partition's batch is full: commit on the next loop iteration."""
        self._dirty[plog] = None
        if self._soon:
            return
        self._soon = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._get_loop().call_soon(self.commit)

    def mark(self, plog: PartitionLog) -> None:
        """A partition has pending records: make sure a commit is coming."""
        self._dirty[plog] = None
        if self._soon:
            return
        if plog.pending_count >= self.max_records or plog.pending_bytes >= self.max_bytes:
            self._soon = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._get_loop().call_soon(self.commit)
        elif self._timer is None:
            self._timer = self._get_loop().call_later(self.interval_s, self.commit)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def commit(self) -> None:
        """Write every dirty partition, sync by policy, then acknowledge."""
        self._timer = None
        self._soon = False
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = {}
        written: list[PartitionLog] = []
        for plog in dirty:
            try:
                plog.write_pending()
            except OSError as exc:
                self._fail(plog, exc)
                continue
            written.append(plog)
        if self.fsync == "always":
            ok: list[PartitionLog] = []
            for plog in written:
                try:
                    plog.sync()
                except OSError as exc:
                    self._fail(plog, exc)
                    continue
                ok.append(plog)
            written = ok
        elif self.fsync == "interval":
            for plog in written:
                self._unsynced[plog] = None
            self._schedule_sync()
        for plog in written:
            plog.complete_pending()
        self.commits += 1

    def _fail(self, plog: PartitionLog, exc: OSError) -> None:
        where = str(plog.directory or f"memory:{plog.stream}")
        err = StoreWriteError(WRITE_FAILED.format(path=where, reason=exc.strerror or exc))
        err.errno = exc.errno
        if where not in self._error_logged:
            self._error_logged.add(where)
            log.error("%s", err)
        plog.fail_pending(err)

    def _schedule_sync(self) -> None:
        if self._sync_timer is not None or not self._unsynced:
            return
        due = self._last_sync + self.fsync_interval_s - time.monotonic()
        if due <= 0:
            self.sync_now()
        else:
            self._sync_timer = self._get_loop().call_later(due, self.sync_now)

    def sync_now(self) -> None:
        """fdatasync everything written since the last sync (``interval`` policy, and at close)."""
        self._sync_timer = None
        unsynced, self._unsynced = self._unsynced, {}
        for plog in unsynced:
            try:
                plog.sync()
            except OSError as exc:
                log.error("fsync failed for %s: %s", plog.directory, exc.strerror or exc)
        self._last_sync = time.monotonic()

    def close(self) -> None:
        for handle in (self._timer, self._sync_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._sync_timer = None
        self.commit()
        self.sync_now()

    def forget(self, plog: PartitionLog) -> None:
        self._dirty.pop(plog, None)
        self._unsynced.pop(plog, None)
