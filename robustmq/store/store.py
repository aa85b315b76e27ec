"""The store: streams on checksummed segment logs, with a DuckDB index and query engine beside it.

``Store`` is a broker component. Appends are synchronous and buffered; one group committer per
tick writes them and resolves their acknowledgements. Reads, consumers and timers are served
from memory and the log; DuckDB is fed off the event loop and answers queries and SQL.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import shutil
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zlib import crc32

from pydantic import ValidationError

from robustmq.config import StoreSettings
from robustmq.store.committer import Ack, BatchAck, FailedAck, GroupCommitter
from robustmq.store.consumers import Consumer, ConsumerConfig
from robustmq.store.definitions import StreamDefinitions
from robustmq.store.errors import (
    BAD_PARTITION,
    BAD_STREAM_CONFIG,
    NO_SUCH_CONSUMER,
    NO_SUCH_STREAM,
    OPEN_FAILED,
    STORE_CLOSED,
    STREAM_EXISTS,
    ConsumerNotFound,
    InvalidStreamConfig,
    StoreClosed,
    StoreError,
    StoreOpenError,
    StreamExists,
    StreamNotFound,
)
from robustmq.store.log import CHECKPOINT_BYTES, PartitionLog
from robustmq.store.records import PRIORITY_CODE, Record, as_key
from robustmq.store.stats import StoreStats
from robustmq.store.stream import StreamConfig, StreamInfo
from robustmq.store.timers import Clock, TimerHeap

if TYPE_CHECKING:
    from robustmq.router import Router, Subscription
    from robustmq.store.index import IndexWorker
    from robustmq.store.sql_runner import SqlLimits

log = logging.getLogger("robustmq.store")

LOCK_FILE = "lock"  # flock'ed while a store has the directory open
LOG_DIR = "log"
MAINTENANCE_INTERVAL_MS = 1000  # retention, consumer floors, journal snapshots
COMPACTION_INTERVAL_MS = 60_000

# ingest(subject, headers, payload) -> keyword arguments for append, or None to skip the message
IngestFn = Callable[[str, bytes | None, bytes], dict[str, Any] | None]


class _Stream:
    __slots__ = ("config", "partitions", "subscriptions", "ingest")

    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self.partitions: list[PartitionLog] = []
        self.subscriptions: list[Subscription] = []
        self.ingest: IngestFn | None = None


def _dir_name(name: str) -> str:
    return quote(name, safe="")


class Store:
    """Every stream of the broker. ``Store(settings.store, router=broker.router)``.

    Standalone use (tests, tools): ``store = Store(StoreSettings(data_dir=...)); await store.start()``.
    """

    name = "store"

    def __init__(
        self,
        settings: StoreSettings | None = None,
        router: Router | None = None,
        *,
        clock: Clock | None = None,
        streams: Iterable[dict[str, Any] | StreamConfig] = (),
        index: bool = True,
        sql_limits: SqlLimits | None = None,
    ) -> None:
        self.settings = settings or StoreSettings()
        self.router = router
        self.clock = clock or Clock()
        self.data_dir = Path(self.settings.data_dir)
        self.committer = GroupCommitter(self.settings)
        self._definitions = StreamDefinitions(self.data_dir, sync=self.settings.fsync != "never")
        self.timers = TimerHeap(self.clock)
        self.index: IndexWorker | None = None
        self._use_index = index
        self._sql_limits = sql_limits
        self._initial_streams = list(streams)
        self._streams: dict[str, _Stream] = {}
        self._running = False
        self._maintenance_armed = False
        self._background: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._partitions: dict[str, list[PartitionLog]] = {}
        self._next_compaction_ms = 0
        self._compact_lock: asyncio.Lock | None = None
        self._lock_fd: int | None = None
        self._now_ms = self.clock.now_ms

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the data directory, recover every stream, catch the index up, arm the timers."""
        self._loop = asyncio.get_running_loop()
        self.committer.bind(self._loop)
        try:
            (self.data_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            self._lock_fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            msg = OPEN_FAILED.format(path=self.data_dir, reason=exc.strerror or exc)
            log.error("%s", msg)
            raise StoreOpenError(exc.errno, msg) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            msg = OPEN_FAILED.format(path=self.data_dir, reason="it is used by another robustmq process")
            log.error("%s", msg)
            raise StoreOpenError(exc.errno, msg) from None
        definitions = self._definitions.load()
        for cfg in self._initial_streams:
            try:
                c = cfg if isinstance(cfg, StreamConfig) else StreamConfig.model_validate(cfg)
            except ValidationError as exc:
                self._release_lock()
                msg = BAD_STREAM_CONFIG.format(reason=_first_error(exc))
                log.error("%s", msg)
                raise StoreOpenError(0, msg) from None  # an OSError: the broker reports it in one line
            definitions[c.name] = c
        if self._use_index:
            from robustmq.store.index import IndexWorker

            self.index = IndexWorker(
                self.data_dir, self.settings, self._sql_limits
            )  # opened by its thread, on demand
        self._running = True
        for cfg in definitions.values():
            self._open_stream(cfg)
        self._save_definitions()
        if self.index is not None:
            self.index.start(self._catch_up_plan())
        self._next_compaction_ms = self.clock.now_ms() + COMPACTION_INTERVAL_MS
        self._arm_maintenance()

    async def stop(self) -> None:
        """Commit what is pending, fsync, write consumer floors, close files and the index."""
        if not self._running:
            return
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for s in self._streams.values():
            for plog in s.partitions:
                for c in plog.consumers.values():
                    c.compact_state()
        self.committer.close()
        self._running = False
        for s in list(self._streams.values()):
            self._unsubscribe(s)
            for plog in s.partitions:
                plog.close()
        self.timers.close()
        self._definitions.close()
        if self.index is not None:
            await asyncio.to_thread(self.index.stop)
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def _check_open(self) -> None:
        if not self._running:
            raise StoreClosed(STORE_CLOSED)

    # -- definitions -----------------------------------------------------------------------------

    def _save_definitions(self) -> None:
        """Fold the definitions journal into a fresh ``streams.json`` (start-up, and when large)."""
        self._definitions.rewrite(self.list_streams())

    def _saved(self) -> None:
        if self._definitions.needs_fold(len(self._streams)):
            self._save_definitions()

    # -- streams ---------------------------------------------------------------------------------

    def create_stream(self, config: StreamConfig | dict[str, Any], *, exist_ok: bool = False) -> StreamConfig:
        """Create a stream (saved at once). With ``exist_ok`` an existing one is returned unchanged."""
        self._check_open()
        cfg = _validate(config)
        if cfg.name in self._streams:
            if exist_ok:
                return self._streams[cfg.name].config
            raise StreamExists(STREAM_EXISTS.format(name=cfg.name))
        self._open_stream(cfg)
        self._definitions.put(cfg)
        self._saved()
        return cfg

    def update_stream(self, config: StreamConfig | dict[str, Any]) -> StreamConfig:
        """Change subjects, retention, TTL, compaction or add partitions (never remove them)."""
        self._check_open()
        cfg = _validate(config)
        s = self._get(cfg.name)
        if cfg.storage != s.config.storage:
            raise InvalidStreamConfig(BAD_STREAM_CONFIG.format(reason="storage cannot change"))
        if cfg.partitions < s.config.partitions:
            raise InvalidStreamConfig(BAD_STREAM_CONFIG.format(reason="partitions cannot shrink"))
        self._unsubscribe(s)
        s.config = cfg
        for plog in s.partitions:
            plog.config = cfg
        for p in range(len(s.partitions), cfg.partitions):
            s.partitions.append(self._open_partition(cfg, p))
        self._subscribe(s)
        for plog in s.partitions:
            plog.apply_retention(self.clock.now_ms())
        self._definitions.put(cfg)
        self._saved()
        return cfg

    def delete_stream(self, name: str) -> None:
        """Remove a stream with its data, consumers and index rows."""
        self._check_open()
        s = self._get(name)
        self._unsubscribe(s)
        for plog in s.partitions:
            self.committer.forget(plog)
            plog.fail_pending(StreamNotFound(NO_SUCH_STREAM.format(name=name)))
            plog.destroy()
        del self._streams[name]
        del self._partitions[name]
        shutil.rmtree(self.data_dir / LOG_DIR / _dir_name(name), ignore_errors=True)
        if self.index is not None:
            self.index.drop_stream(name)
        self._definitions.remove(name)
        self._saved()

    def has_stream(self, name: str) -> bool:
        return name in self._streams

    def list_streams(self) -> list[StreamConfig]:
        return [s.config for s in self._streams.values()]

    def stream_config(self, name: str) -> StreamConfig:
        return self._get(name).config

    def stream_info(self, name: str) -> StreamInfo:
        s = self._get(name)
        parts = [
            {
                "partition": p.partition,
                "first_offset": p.first_offset,
                "last_offset": p.end_offset - 1,
                "count": p.end_offset - p.first_offset,
                "bytes": p.bytes,
                "deleted": len(p.deleted),
            }
            for p in s.partitions
        ]
        p0 = s.partitions[0]
        return StreamInfo(
            config=s.config,
            first_offset=p0.first_offset,
            last_offset=p0.end_offset - 1,
            count=sum(p["count"] for p in parts),
            bytes=sum(p["bytes"] for p in parts),
            partitions=parts,
            consumers=sorted({c for p in s.partitions for c in p.consumers}),
        )

    def set_ingest(self, name: str, fn: IngestFn | None) -> None:
        """How router publishes become appends for this stream: ``fn(subject, headers, payload)``
        returns ``append`` keyword arguments (priority, key, ttl_ms, ...) or None to skip.

        A publish whose origin (``router.current_origin``) has ``stored_in`` equal to the stream's
        name is not appended: its front-end appended it already and publishes it only to be seen live."""
        self._get(name).ingest = fn

    def _get(self, name: str) -> _Stream:
        s = self._streams.get(name)
        if s is None:
            raise StreamNotFound(NO_SUCH_STREAM.format(name=name))
        return s

    def _plog(self, name: str, partition: int) -> PartitionLog:
        s = self._streams.get(name)
        if s is None:
            raise StreamNotFound(NO_SUCH_STREAM.format(name=name))
        if not isinstance(partition, int) or not 0 <= partition < len(s.partitions):
            raise StoreError(BAD_PARTITION.format(name=name, partition=partition))
        return s.partitions[partition]

    def partition_log(self, name: str, partition: int = 0) -> PartitionLog:
        """The partition's log (for front-ends that need offsets and sizes directly)."""
        return self._plog(name, partition)

    def _open_stream(self, cfg: StreamConfig) -> None:
        s = _Stream(cfg)
        for p in range(cfg.partitions):
            s.partitions.append(self._open_partition(cfg, p))
        self._streams[cfg.name] = s
        self._partitions[cfg.name] = s.partitions
        self._subscribe(s)

    def _open_partition(self, cfg: StreamConfig, partition: int) -> PartitionLog:
        directory = self.data_dir / LOG_DIR / _dir_name(cfg.name) / str(partition)
        plog = PartitionLog(cfg.name, partition, cfg, directory, self.settings, self.clock.now_ms)
        plog.loop = self._loop
        try:
            entries = plog.open()
        except OSError as exc:
            msg = OPEN_FAILED.format(path=directory, reason=exc.strerror or exc)
            log.error("%s", msg)
            raise StoreOpenError(exc.errno, msg) from None
        self._replay_journal(plog, entries)
        plog.on_pending = self.committer.mark
        plog.on_full = self.committer.commit_full
        plog.on_commit = self._on_commit
        plog.on_seal = self._on_seal
        plog.on_drop = self._on_drop
        plog.on_delete = self._on_delete
        plog.apply_retention(self.clock.now_ms())
        plog.on_delayed = self._on_delayed
        for due, _off in plog.delayed:
            self._on_delayed(plog, due)
        if len(entries) > 1000:
            try:
                plog.maybe_rewrite_journal()
            except OSError as exc:
                log.warning("cannot rewrite journal of %s: %s", directory, exc)
        return plog

    def _replay_journal(self, plog: PartitionLog, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            t = e["t"]
            if t == "del":
                if e["o"] >= plog.first_offset:
                    plog.deleted.add(e["o"])
            elif t == "cons":
                c = self._make_consumer(
                    plog, e["c"], ConsumerConfig.model_validate(e["cfg"]), e.get("floor", 0)
                )
                plog.consumers[c.name] = c
            elif t == "drop":
                plog.consumers.pop(e["c"], None)
            else:
                c = plog.consumers.get(e.get("c", ""))
                if c is not None:
                    c.replay(e)
        for c in plog.consumers.values():
            c.restart_at_floor()

    # -- router ----------------------------------------------------------------------------------

    def _subscribe(self, s: _Stream) -> None:
        if self.router is None:
            return
        deliver = functools.partial(self._ingest, s)
        for subject in s.config.subjects:
            s.subscriptions.append(self.router.subscribe(subject, deliver, owner=self))

    def _unsubscribe(self, s: _Stream) -> None:
        if self.router is not None:
            for sub in s.subscriptions:
                self.router.unsubscribe(sub)
        s.subscriptions = []

    def _ingest(
        self, s: _Stream, subject: str, reply: str | None, headers: bytes | None, payload: bytes
    ) -> Any:
        origin = self.router.current_origin if self.router is not None else None
        if origin is not None and getattr(origin, "stored_in", None) == s.config.name:
            return None  # the front-end appended this message to the stream itself (e.g. a Kafka produce)
        try:
            kwargs: dict[str, Any] = {}
            if s.ingest is not None:
                got = s.ingest(subject, headers, payload)
                if got is None:
                    return None
                kwargs = got
            n = len(s.partitions)
            if "partition" not in kwargs and n > 1:
                key = kwargs.get("key")
                basis = as_key(key) if key is not None else subject.encode()
                kwargs["partition"] = crc32(basis) % n
            kwargs.setdefault("subject", subject)
            kwargs.setdefault("headers", headers)
            return self.append(s.config.name, payload, **kwargs)
        except StoreError as exc:
            return FailedAck(exc)
        except Exception as exc:  # a bad ingest function must not break the publisher
            return FailedAck(StoreError(f"cannot store the message on stream {s.config.name}: {exc!r}"))

    # -- writing ---------------------------------------------------------------------------------

    def append(
        self,
        stream: str,
        payload: bytes,
        *,
        subject: str | None = None,
        headers: bytes | None = None,
        key: str | bytes | None = None,
        priority: str = "normal",
        tags: Iterable[str] = (),
        ttl_ms: int | None = None,
        deliver_after_ms: int | None = None,
        partition: int = 0,
    ) -> Ack:
        """Append one record; no I/O here. ``ack.offset`` is its offset, ``await ack`` waits for
        the group commit that holds it (and its fsync under the ``always`` policy).

        ``headers`` is a raw NATS header block; ``ttl_ms`` overrides the stream's default TTL
        (0 = never expires); ``deliver_after_ms`` hides the record until then.
        Raises ``RecordTooLarge``, ``StreamNotFound``; a failed commit raises on ``await``.
        """
        try:
            plog = self._partitions[stream][partition]
        except (KeyError, IndexError, TypeError):
            plog = self._plog(stream, partition)
        if partition < 0:
            plog = self._plog(stream, partition)
        if not self._running:
            raise StoreClosed(STORE_CLOSED)
        if key is not None and key.__class__ is str:
            key = key.encode()
        off = plog.append(
            payload,
            stream if subject is None else subject,
            headers,
            key,
            0 if priority == "normal" else PRIORITY_CODE.get(priority, 0),
            tags,
            ttl_ms,
            deliver_after_ms,
            self._now_ms(),
        )
        return Ack(off, plog.pending_future)

    def append_batch(
        self, stream: str, items: Iterable[dict[str, Any] | bytes], *, partition: int = 0
    ) -> BatchAck:
        """Append many records with one future (for front-ends decoding many messages per read).

        Each item is a payload or a dict of ``append`` keyword arguments plus ``payload``.
        """
        if not self._running:
            raise StoreClosed(STORE_CLOSED)
        plog = self._plog(stream, partition)
        now = self.clock.now_ms()
        offsets = []
        for item in items:
            if isinstance(item, bytes | bytearray | memoryview):
                offsets.append(plog.append(bytes(item), stream, None, None, 0, (), None, None, now))
                continue
            offsets.append(
                plog.append(
                    item["payload"],
                    item.get("subject") or stream,
                    item.get("headers"),
                    as_key(item.get("key")),
                    PRIORITY_CODE.get(item.get("priority", "normal"), 0),
                    tuple(item.get("tags") or ()),
                    item.get("ttl_ms"),
                    item.get("deliver_after_ms"),
                    now,
                )
            )
        fut = plog.pending_future
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
        return BatchAck(offsets, fut)

    def delete(self, stream: str, offset: int, partition: int = 0) -> asyncio.Future | None:
        """Tombstone one record. Returns the journal write's future, or None when it was not there."""
        plog = self._plog(stream, partition)
        fut = plog.delete(offset)
        if fut is not None:
            self.committer.mark(plog)
        return fut

    def commit_now(self) -> None:
        """Write everything appended so far now, before returning (it then survives a process
        crash); acknowledgements still follow the fsync policy. Appends are committed when the
        loop goes idle anyway: this is only for a caller about to do something slow or risky."""
        self.committer.commit()

    async def flush(self) -> None:
        """Commit everything pending now and wait until it is acknowledged (fsynced under
        ``always``)."""
        await self.committer.durable()

    # -- reading ---------------------------------------------------------------------------------

    def read(self, stream: str, offset: int, max_records: int = 100, partition: int = 0) -> list[Record]:
        """Up to ``max_records`` visible records at or after ``offset``, in offset order."""
        return self._plog(stream, partition).read(offset, max_records, self.clock.now_ms())

    def get(self, stream: str, offset: int, partition: int = 0) -> Record | None:
        """The record at ``offset`` if it is visible (not deleted, expired, pending or superseded)."""
        return self._plog(stream, partition).get(offset, self.clock.now_ms())

    def first_offset(self, stream: str, partition: int = 0) -> int:
        return self._plog(stream, partition).first_offset

    def end_offset(self, stream: str, partition: int = 0) -> int:
        """The offset the next committed record will get (Kafka's high watermark)."""
        return self._plog(stream, partition).end_offset

    def first_offset_at_or_after(self, stream: str, time_ms: int, partition: int = 0) -> int | None:
        """The first offset with a timestamp >= ``time_ms``; None when there is none."""
        return self._plog(stream, partition).first_offset_at_or_after(time_ms)

    def latest_by_key(self, stream: str, key: str | bytes, partition: int | None = None) -> Record | None:
        """The newest visible record with this key (all partitions when ``partition`` is None)."""
        s = self._get(stream)
        k = as_key(key)
        assert k is not None
        now = self.clock.now_ms()
        best: Record | None = None
        plogs = s.partitions if partition is None else [self._plog(stream, partition)]
        for plog in plogs:
            off = plog.keys.get(k)
            if off is None:
                continue
            rec = plog.get(off, now)
            if rec is not None and (best is None or rec.timestamp_ms > best.timestamp_ms):
                best = rec
        return best

    def keys(self, stream: str, partition: int = 0) -> list[bytes]:
        """Keys whose newest record is visible (e.g. retained messages, compacted state)."""
        plog = self._plog(stream, partition)
        now = self.clock.now_ms()
        return [k for k, off in plog.keys.items() if plog.get(off, now) is not None]

    def read_by_priority(
        self, stream: str, positions: list[int], max_records: int = 100, partition: int = 0
    ) -> tuple[list[Record], list[int]]:
        """Visible records in priority order: critical, then urgent, then normal, FIFO within each.

        ``positions`` are the next offsets to look at per class, indexed ``[normal, urgent,
        critical]`` (start with ``[0, 0, 0]``); the new positions are returned with the records.
        """
        plog = self._plog(stream, partition)
        now = self.clock.now_ms()
        out: list[Record] = []
        new = list(positions)
        for prio in (2, 1, 0):
            if len(out) >= max_records:
                break
            recs, nxt = plog.read_class(prio, new[prio], max_records - len(out), now)
            new[prio] = max(new[prio], nxt)
            out.extend(recs)
        return out, new

    async def wait_for_data(self, stream: str, offset: int, timeout_s: float, partition: int = 0) -> bool:
        """Long poll: True as soon as ``end_offset > offset`` or something was committed or released
        in the partition; False after ``timeout_s``."""
        plog = self._plog(stream, partition)
        if plog.end_offset > offset:
            return True
        return await plog.wait(timeout_s)

    # -- consumers -------------------------------------------------------------------------------

    def consumer(
        self,
        stream: str,
        name: str,
        partition: int = 0,
        *,
        config: ConsumerConfig | dict[str, Any] | None = None,
        create: bool = True,
    ) -> Consumer:
        """The named durable consumer, created (and journalled) on first use."""
        plog = self._plog(stream, partition)
        c = plog.consumers.get(name)
        if c is not None:
            if config is not None:
                new = config if isinstance(config, ConsumerConfig) else ConsumerConfig.model_validate(config)
                if new != c.config:
                    c.config = new
                    self._journal(plog, {"t": "cons", "c": name, "cfg": new.model_dump(), "floor": c.floor})
            return c
        if not create:
            raise ConsumerNotFound(NO_SUCH_CONSUMER.format(name=name, stream=stream))
        cfg = config if isinstance(config, ConsumerConfig) else ConsumerConfig.model_validate(config or {})
        if cfg.start == "first":
            floor = plog.first_offset
        elif cfg.start == "new":
            floor = plog.next_offset
        else:
            floor = max(int(cfg.start), plog.first_offset)
        c = self._make_consumer(plog, name, cfg, floor)
        plog.consumers[name] = c
        self._journal(plog, {"t": "cons", "c": name, "cfg": cfg.model_dump(), "floor": floor})
        return c

    def consumers(self, stream: str, partition: int = 0) -> list[str]:
        return sorted(self._plog(stream, partition).consumers)

    def delete_consumer(self, stream: str, name: str, partition: int = 0) -> bool:
        plog = self._plog(stream, partition)
        c = plog.consumers.pop(name, None)
        if c is None:
            return False
        c.deleted = True
        self._journal(plog, {"t": "drop", "c": name})
        return True

    def _make_consumer(self, plog: PartitionLog, name: str, cfg: ConsumerConfig, floor: int) -> Consumer:
        return Consumer(name, plog, cfg, floor, self.clock.now_ms, self._journal, self._dead_letter)

    def _journal(self, plog: PartitionLog, entry: dict[str, Any]) -> asyncio.Future:
        fut = plog.add_journal(entry)
        self.committer.mark(plog)
        return fut

    def _dead_letter(self, stream: str, rec: Record) -> None:
        if stream not in self._streams:
            self.create_stream({"name": stream, "kind": "dead_letter"})
        self.append(
            stream, rec.payload, subject=rec.subject, headers=rec.headers, key=rec.key,
            priority=rec.priority, tags=rec.tags,
        )  # fmt: skip

    # -- timers and maintenance ------------------------------------------------------------------

    def _on_delayed(self, plog: PartitionLog, due_ms: int) -> None:
        self.timers.schedule(due_ms, functools.partial(self._release, plog))

    def _release(self, plog: PartitionLog) -> None:
        if self._running:
            plog.release_due(self.clock.now_ms())

    def _arm_maintenance(self) -> None:
        self.timers.schedule(self.clock.now_ms() + MAINTENANCE_INTERVAL_MS, self._maintain)

    def _maintain(self) -> None:
        if not self._running:
            return
        now = self.clock.now_ms()
        for s in self._streams.values():
            for plog in s.partitions:
                if s.config.max_age_ms or s.config.max_bytes or s.config.max_msgs or s.config.drop_consumed:
                    plog.apply_retention(now)
                plog.checkpoint(CHECKPOINT_BYTES, background=True)
                for c in plog.consumers.values():
                    c.compact_state()
                if plog.pending_journal:
                    self.committer.mark(plog)
                else:
                    try:
                        plog.maybe_rewrite_journal()
                    except OSError as exc:
                        log.warning("cannot rewrite journal of %s: %s", plog.directory, exc.strerror or exc)
        if now >= self._next_compaction_ms and not self._background:
            self._next_compaction_ms = now + COMPACTION_INTERVAL_MS
            task = asyncio.get_running_loop().create_task(self._compact_in_background())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._arm_maintenance()

    async def _compact_in_background(self) -> None:
        try:
            await self.compact(background=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background compaction failed")

    def run_retention(self) -> int:
        """Apply retention to every stream now; returns how many records it dropped."""
        now = self.clock.now_ms()
        return sum(plog.apply_retention(now) for s in self._streams.values() for plog in s.partitions)

    async def compact(self, stream: str | None = None, *, background: bool = False) -> int:
        """Rewrite sealed segments without deleted, expired and superseded records; returns the
        bytes reclaimed. Runs the file work in a thread; reads stay available meanwhile.

        A call seals the active segment of compacted streams first; the background job (every
        ``COMPACTION_INTERVAL_MS``) only visits sealed segments known to hold something to reclaim.
        """
        if self._compact_lock is None:
            self._compact_lock = asyncio.Lock()
        async with self._compact_lock:
            return await self._compact(stream, background)

    async def _compact(self, stream: str | None, background: bool) -> int:
        reclaimed = 0
        names = [stream] if stream is not None else list(self._streams)
        for name in names:
            s = self._streams.get(name)
            if s is None:
                continue
            for plog in list(s.partitions):
                if plog.directory is None:
                    continue
                if s.config.compact and not background:
                    self.committer.commit()
                    plog.seal_active()
                for seg in plog.compactable_segments(hinted_only=background, now=self.clock.now_ms()):
                    if not self._running:
                        return reclaimed
                    now = self.clock.now_ms()
                    made = await asyncio.to_thread(_rewrite_plan, plog, seg, now)
                    if made is not None:
                        tmp, positions, drop = made
                        reclaimed += plog.install_rewrite(seg, tmp, positions, drop)
        return reclaimed

    def verify(self, stream: str | None = None) -> list[dict[str, Any]]:
        """Check every record's checksum; returns the corrupt ones (stream, partition, offset, path)."""
        from robustmq.store.records import Corrupt, check_at
        from robustmq.store.segment import HOLE

        bad = []
        names = [stream] if stream is not None else list(self._streams)
        for name in names:
            for plog in self._get(name).partitions:
                for seg in plog.segments:
                    buf = seg.read_all()
                    for i, pos in enumerate(seg.positions):
                        if pos == HOLE:
                            continue
                        try:
                            check_at(buf, pos)
                        except Corrupt:
                            plog._report(seg, pos, seg.base + i)
                            bad.append(
                                {"stream": name, "partition": plog.partition, "offset": seg.base + i,
                                 "path": str(seg.path or "memory"), "position": pos}
                            )  # fmt: skip
        return bad

    # -- index hooks -----------------------------------------------------------------------------

    def _on_commit(
        self, plog: PartitionLog, rows: list[tuple], path: str | None, start: int, end: int
    ) -> None:
        if self.index is not None:
            if path is None:
                self.index.feed(rows)
            else:
                self.index.feed(rows, path, start, end)

    def _on_seal(self, plog: PartitionLog, seg: Any) -> None:
        if self.index is not None and seg.path is not None:
            self.index.sealed(plog.stream, plog.partition, seg.base, seg.end, str(seg.path))

    def _on_drop(self, plog: PartitionLog, segs: list[Any]) -> None:
        if self.index is not None:
            self.index.dropped(plog.stream, plog.partition, plog.segments[0].base, [s.base for s in segs])

    def _on_delete(self, plog: PartitionLog, offsets: list[int]) -> None:
        if self.index is not None:
            self.index.deleted(plog.stream, plog.partition, offsets, self.clock.now_ms())

    def _catch_up_plan(self) -> list[tuple[str, int, int, list[tuple[int, int, str]]]]:
        plan = []
        for s in self._streams.values():
            for plog in s.partitions:
                segs = [(seg.base, seg.end, str(seg.path)) for seg in plog.segments if seg.path is not None]
                plan.append((plog.stream, plog.partition, plog.end_offset, segs))
        return plan

    def stats(self) -> StoreStats:
        """Appends, bytes and group commits written since start, and the fsync latency histogram
        (each fdatasync of the commit path, timed on the fsync thread)."""
        c = self.committer
        return StoreStats(
            appends=c.appends,
            appended_bytes=c.appended_bytes,
            commits=c.commits,
            fsync=c.fsync_timings.snapshot(),
        )

    def index_lag(self) -> int:
        """Records committed to the log but not yet in the index."""
        if self.index is None:
            return 0
        return self.index.lag()

    async def sync_index(self, timeout_s: float = 30.0) -> None:
        """Wait until the index holds everything committed so far."""
        if self.index is not None:
            await self.committer.durable()
            await self.index.sync(timeout_s)

    # -- queries ---------------------------------------------------------------------------------

    async def query(
        self,
        stream: str,
        *,
        partition: int | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        key: str | bytes | None = None,
        tags_any: Iterable[str] = (),
        tags_all: Iterable[str] = (),
        subject: str | None = None,
        priority: str | None = None,
        limit: int = 100,
        order: str = "asc",
        fresh: bool = True,
    ) -> list[Record]:
        """Records by time range, key, tags (any/all), subject filter and priority, via DuckDB.

        Only visible records are returned. ``fresh`` waits for the index to catch up first.
        """
        from robustmq.store.query import MessageQuery

        s = self._get(stream)
        q = MessageQuery(
            stream=stream, partition=partition, since_ms=since_ms, until_ms=until_ms,
            key=as_key(key), tags_any=list(tags_any), tags_all=list(tags_all), subject=subject,
            priority=priority, limit=limit, order=order,
        )  # fmt: skip
        if self.index is None:
            raise StoreError("the index is disabled")
        if fresh:
            await self.sync_index()
        now = self.clock.now_ms()
        out: list[Record] = []
        skip = 0
        while len(out) < limit:
            want = (limit - len(out)) * 2 + 16
            rows = await self.index.run_query(q, now, want, skip)
            for part, off in rows:
                if part >= len(s.partitions):
                    continue
                rec = s.partitions[part].get(off, now)
                if rec is not None:
                    out.append(rec)
                    if len(out) >= limit:
                        break
            if len(rows) < want:
                break
            skip += len(rows)
        return out

    async def sql(
        self,
        text: str,
        *,
        max_rows: int = 1000,
        timeout_s: float = 5.0,
        max_result_bytes: int | None = None,
        streams: Collection[str] | None = None,
        as_json: bool = False,
    ) -> dict[str, Any]:
        """A read-only SQL query for the control plane over the index: ``messages``, ``deletions``
        and ``archive`` (sealed segments, with payloads), nothing else (no files, no table
        functions but ``range``/``generate_series``/``unnest``).

        ``streams`` (None: all) restricts those views to the streams a caller may read. Returns
        ``{"columns", "rows", "truncated"}``; with ``as_json``, ``rows_json`` (the rows as one
        encoded JSON array) and ``row_count`` instead of ``rows``. Raises ``QueryError``,
        ``QueryTimeout``, ``QueryTooLarge`` (memory) or ``QueryBusy`` (every slot taken)."""
        if self.index is None:
            raise StoreError("the index is disabled")
        return await self.index.run_sql(
            text, max_rows, timeout_s, max_result_bytes=max_result_bytes, streams=streams, as_json=as_json
        )


def _rewrite_plan(plog: PartitionLog, seg: Any, now: int) -> tuple[Path, Any, list[int]] | None:
    drop = plog.plan_compaction(seg, now)
    if not drop:
        return None
    made = plog.rewrite_segment(seg, drop)
    if made is None:
        return None
    tmp, _path, positions = made
    return tmp, positions, drop


def _validate(config: StreamConfig | dict[str, Any]) -> StreamConfig:
    if isinstance(config, StreamConfig):
        return StreamConfig.model_validate(config.model_dump())
    try:
        return StreamConfig.model_validate(config)
    except ValidationError as exc:
        raise InvalidStreamConfig(BAD_STREAM_CONFIG.format(reason=_first_error(exc))) from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "stream"
    return f"{where}: {first['msg']}"
