"""Group commit: one committer writes every partition's pending records once per loop tick.

Appends are synchronous and only buffer bytes. The first record of a batch schedules a commit
with ``call_soon``, so everything appended in the same tick goes into one write per partition
(a batch holding ``commit_max_records`` / ``commit_max_bytes`` is written at once). fdatasync
never runs on the event loop; it runs on the fsync thread:

- ``always``: a batch is acknowledged (and readable) once its fdatasync has returned; the next
  batches are written meanwhile, acknowledgements go out strictly in order (survives power loss);
- ``interval``: acknowledged after the write, the fsync thread syncs what was written every
  ``fsync_interval_ms`` (survives a process crash; an OS crash can lose up to one interval);
- ``never``: acknowledged after the write, the OS decides when to write back (process crash only).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from robustmq.store.errors import WRITE_FAILED, StoreWriteError
from robustmq.store.fsyncer import Fsyncer
from robustmq.store.stats import FsyncTimings

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

    @property
    def future(self) -> asyncio.Future:
        """The commit's future, shared by every append of the same batch: a front-end waiting for
        many appends registers one callback per distinct future instead of one per append."""
        return self._done


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
    """Collects dirty partitions and commits them together, on the next loop iteration."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.fsync = settings.fsync
        self.fsync_interval_s = settings.fsync_interval_ms / 1000.0
        self.max_records = settings.commit_max_records
        self.max_bytes = settings.commit_max_bytes
        self._dirty: dict[PartitionLog, None] = {}
        self._scheduled = False
        self._unsynced: dict[str, None] = {}  # files written since the last interval sync
        self._sync_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fsyncer: Fsyncer | None = None
        self._error_logged: set[str] = set()
        self.commits = 0
        self.appends = 0  # records written since start (counted per commit)
        self.appended_bytes = 0
        self.fsync_timings = FsyncTimings()  # kept across fsync threads (close, reopen)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _get_fsyncer(self) -> Fsyncer:
        if self._fsyncer is None:
            self._fsyncer = Fsyncer(self._get_loop(), self.fsync_timings)
        return self._fsyncer

    def mark(self, plog: PartitionLog) -> None:
        """A partition has pending records or journal entries: commit when the loop is idle."""
        self._dirty[plog] = None
        if not self._scheduled:
            self._scheduled = True
            self._get_loop().call_soon(self._commit_soon)

    def commit_full(self, plog: PartitionLog) -> None:
        """A partition's batch reached its size limits: write it now."""
        self._dirty.pop(plog, None)
        self._commit((plog,))

    def _commit_soon(self) -> None:
        self._scheduled = False
        self.commit()

    def commit(self) -> None:
        """Write every dirty partition now; acknowledgements follow the fsync policy."""
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = {}
        self._commit(dirty)

    def _commit(self, plogs: Any) -> None:
        written: list[PartitionLog] = []
        appends = appended_bytes = 0
        for plog in plogs:
            records, size = len(plog.pending_meta), plog.pending_bytes
            try:
                plog.write_pending()
            except OSError as exc:
                self._fail(plog, exc)
                continue
            written.append(plog)
            appends += records
            appended_bytes += size
        self.appends += appends
        self.appended_bytes += appended_bytes
        self.commits += 1
        if self.fsync == "always":
            batches = []
            paths: dict[str, None] = {}
            for plog in written:
                batch = plog.take_written()
                if batch is not None:
                    batches.append((plog, batch))
                    paths.update(dict.fromkeys(plog.sync_paths()))
            if batches:
                self._get_fsyncer().submit(paths, functools.partial(self._synced, batches))
            return
        if self.fsync == "interval":
            for plog in written:
                self._unsynced.update(dict.fromkeys(plog.sync_paths()))
            if self._sync_timer is None and self._unsynced:
                self._sync_timer = self._get_loop().call_later(self.fsync_interval_s, self.sync_now)
        for plog in written:
            plog.complete_pending()

    def _synced(self, batches: list[tuple[PartitionLog, Any]], exc: OSError | None) -> None:
        err = None
        if exc is not None:
            err = StoreWriteError(WRITE_FAILED.format(path=exc.filename or "?", reason=exc.strerror or exc))
            err.errno = exc.errno
            log.error("fsync failed: %s", err)
        for plog, batch in batches:
            plog.publish(batch, err)

    def _fail(self, plog: PartitionLog, exc: OSError) -> None:
        where = str(plog.directory or f"memory:{plog.stream}")
        err = StoreWriteError(WRITE_FAILED.format(path=where, reason=exc.strerror or exc))
        err.errno = exc.errno
        if where not in self._error_logged:
            self._error_logged.add(where)
            log.error("%s", err)
        plog.fail_pending(err)

    def sync_now(self) -> None:
        """Hand everything written since the last sync to the fsync thread (``interval``)."""
        self._sync_timer = None
        if self._unsynced:
            paths, self._unsynced = self._unsynced, {}
            self._get_fsyncer().submit(paths, self._interval_synced)

    def _interval_synced(self, exc: OSError | None) -> None:
        if exc is not None and "fsync" not in self._error_logged:
            self._error_logged.add("fsync")
            log.error("fsync failed for %s: %s", exc.filename, exc.strerror or exc)

    def durable(self) -> asyncio.Future:
        """Write what is pending; the future is done when everything committed so far is
        acknowledged (synced, under ``always``)."""
        self.commit()
        fut = self._get_loop().create_future()
        if self._fsyncer is None or self.fsync != "always":
            fut.set_result(None)
        else:
            self._fsyncer.after_pending(lambda: fut.done() or fut.set_result(None))
        return fut

    def close(self) -> None:
        """Write what is pending, sync every file written, deliver every acknowledgement."""
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        self.commit()
        if self.fsync == "interval":
            self.sync_now()
        if self._fsyncer is not None:
            self._fsyncer.close()
            self._fsyncer = None

    def forget(self, plog: PartitionLog) -> None:
        self._dirty.pop(plog, None)
