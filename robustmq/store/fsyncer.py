"""The fsync thread: fdatasync of segment and journal files off the event loop.

A sync can take milliseconds; on the loop it would stall every connection of the broker. Jobs
are synced in submission order (many queued jobs share one fdatasync per file) and reported
back on the loop, in order, by one callback per wake-up.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from robustmq.store.stats import FsyncTimings

log = logging.getLogger("robustmq.store")

# done(error): error is None when every file of the job reached the disk
SyncDone = Callable[[OSError | None], None]


class _Job:
    __slots__ = ("seq", "paths", "done", "delivered")

    def __init__(self, seq: int, paths: tuple[str, ...], done: SyncDone | None) -> None:
        self.seq = seq
        self.paths = paths
        self.done = done
        self.delivered = False


def fdatasync_path(path: str) -> None:
    """fdatasync a file by name (its data written through any descriptor reaches the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class Fsyncer:
    """One thread that syncs files for the loop: ``submit(paths, done)``; ``done`` runs on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timings: FsyncTimings | None = None) -> None:
        self._loop = loop
        self.timings = timings if timings is not None else FsyncTimings()
        self._queue: deque[_Job] = deque()  # submitted, not yet taken by the thread
        self._waiting: deque[_Job] = deque()  # submitted, not yet delivered (loop side)
        self._cond = threading.Condition()
        self._stop = False
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="store-fsync", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return bool(self._waiting)

    def submit(self, paths: Iterable[str], done: SyncDone | None = None) -> None:
        self._seq += 1
        job = _Job(self._seq, tuple(paths), done)
        self._waiting.append(job)
        with self._cond:
            self._queue.append(job)
            self._cond.notify()

    def after_pending(self, done: Callable[[], None]) -> None:
        """Run ``done`` on the loop once every job submitted so far has been delivered."""
        if not self._waiting:
            done()
            return
        self.submit((), lambda _err: done())

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                jobs = list(self._queue)
                self._queue.clear()
            errors = _sync_all(jobs, self.timings)
            try:
                self._loop.call_soon_threadsafe(self._deliver, jobs[-1].seq, errors)
            except RuntimeError:  # the loop is closed: close() delivers what is left
                return

    def _deliver(self, upto: int, errors: dict[str, OSError]) -> None:
        waiting = self._waiting
        while waiting and waiting[0].seq <= upto:
            job = waiting.popleft()
            if job.delivered:
                continue
            job.delivered = True
            if job.done is not None:
                err = next((errors[p] for p in job.paths if p in errors), None)
                try:
                    job.done(err)
                except Exception:
                    log.exception("fsync completion failed")

    def close(self) -> None:
        """Stop the thread; sync and deliver what it had not finished, here and now."""
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify()
        self._thread.join()
        rest = [j for j in self._waiting if not j.delivered]
        if rest:
            self._deliver(rest[-1].seq, _sync_all(rest, self.timings))


def _sync_all(jobs: list[_Job], timings: FsyncTimings) -> dict[str, OSError]:
    """fdatasync every file named by ``jobs`` once, timing each; the errors by path (a vanished
    file is none)."""
    errors: dict[str, OSError] = {}
    seen: set[str] = set()
    for job in jobs:
        for path in job.paths:
            if path in seen:
                continue
            seen.add(path)
            started = time.perf_counter()
            try:
                fdatasync_path(path)
                timings.observe(time.perf_counter() - started)
            except FileNotFoundError:
                pass  # deleted since (retention, a dropped stream): nothing left to sync
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    errors[path] = exc
    return errors
