"""The DuckDB index: message metadata (no payloads) fed by a worker thread in large columnar
batches, sealed segments exported to Parquet, queries and read-only SQL run off the event loop.

The log is the truth; the index may lag by a batch and is caught up from the log. DuckDB (and
numpy) are imported by the worker thread when the index is first needed, so an idle broker
never loads them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from robustmq.config import StoreSettings
from robustmq.store import records
from robustmq.store.errors import SQL_FAILED, QueryError
from robustmq.store.query import MessageQuery, build_message_query
from robustmq.store.sql_guard import check_query
from robustmq.store.sql_runner import SqlLimits, SqlRunner

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger("robustmq.store.index")

INDEX_FILE = "index.duckdb"
PARQUET_DIR = "parquet"
SWITCH_INTERVAL_S = 0.001  # lets the worker thread get the GIL between DuckDB calls
CATCH_UP_BATCH_ROWS = 50_000
MAX_QUEUED_ROWS = 200_000
EXPORT_CHUNK_ROWS = 1_000  # records decoded per Parquet export step
EXPORT_PAUSE_S = 0.05  # between export steps: the event loop comes first (a 64 MiB segment takes seconds)
OPEN_WAIT_S = 60.0  # a query waits this long for the worker to open the database
# msg_index columns as numpy types: a batch goes in as one columnar INSERT (see _append)
FEED_COLUMNS = (
    ("stream", "object"), ("partition", "int32"), ("off", "int64"), ("ts", "int64"),
    ("subject", "object"), ("key", "object"), ("priority", "uint8"), ("tags", "object"),
    ("expires_at", "int64"), ("deliver_after", "int64"), ("size", "int32"),
)  # fmt: skip

SCHEMA_VERSION = 2
# tags: "\x1fa\x1fb\x1f" (flat text appends about twice as fast as a list column);
# expires_at / deliver_after: 0 = none. The ``messages`` view presents tags as a list.
SCHEMA = """
CREATE TABLE IF NOT EXISTS index_meta(version INTEGER);
CREATE TABLE IF NOT EXISTS msg_index(
    stream VARCHAR, partition INTEGER, off BIGINT, ts BIGINT, subject VARCHAR, key BLOB,
    priority UTINYINT, tags VARCHAR, expires_at BIGINT, deliver_after BIGINT, size INTEGER);
CREATE TABLE IF NOT EXISTS deletions(stream VARCHAR, partition INTEGER, off BIGINT, ts BIGINT);
CREATE INDEX IF NOT EXISTS msg_key ON msg_index(key);
"""
EXPORT_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS export_buf(
    stream VARCHAR, partition INTEGER, off BIGINT, ts BIGINT, subject VARCHAR, key BLOB,
    priority UTINYINT, tags VARCHAR[], expires_at BIGINT, deliver_after BIGINT,
    headers BLOB, payload BLOB);
"""


# What user SQL sees (sql_guard.ALLOWED_RELATIONS): temp views of the query cursor, each
# restricted to the caller's streams when a set is given ({where}). Temp names shadow the
# tables of the same name; the guard refuses qualified names, so the tables stay out of reach.
MESSAGES_VIEW = """
CREATE OR REPLACE TEMP VIEW messages AS
SELECT stream, partition, off, ts, subject, key, priority,
       CASE WHEN tags = '' THEN []::VARCHAR[] ELSE string_split(trim(tags, chr(31)), chr(31)) END AS tags,
       nullif(expires_at, 0) AS expires_at, nullif(deliver_after, 0) AS deliver_after, size
FROM "{catalog}".main.msg_index {where}
"""
DELETIONS_VIEW = 'CREATE OR REPLACE TEMP VIEW deletions AS SELECT * FROM "{catalog}".main.deletions {where}'
ARCHIVE_VIEW = (
    "CREATE OR REPLACE TEMP VIEW archive AS SELECT * FROM read_parquet('{root}/**/*.parquet',"
    " union_by_name = true) {where}"
)
EMPTY_ARCHIVE_VIEW = """
CREATE OR REPLACE TEMP VIEW archive AS
SELECT NULL::VARCHAR AS stream, NULL::INTEGER AS partition, NULL::BIGINT AS off, NULL::BIGINT AS ts,
       NULL::VARCHAR AS subject, NULL::BLOB AS key, NULL::UTINYINT AS priority, NULL::VARCHAR[] AS tags,
       NULL::BIGINT AS expires_at, NULL::BIGINT AS deliver_after, NULL::BLOB AS headers,
       NULL::BLOB AS payload
WHERE false
"""


def _stream_filter(streams: Collection[str] | None) -> str:
    """A WHERE clause keeping only ``streams`` (None: every stream)."""
    if streams is None:
        return ""
    if not streams:
        return "WHERE false"
    names = ", ".join("'" + s.replace("'", "''") + "'" for s in sorted(streams))
    return f"WHERE stream IN ({names})"


def _parquet_path(root: Path, stream: str, partition: int, base: int) -> Path:
    return root / PARQUET_DIR / quote(stream, safe="") / str(partition) / f"{base:020d}.parquet"


class IndexWorker:
    """Owns the DuckDB database. One writer thread (its own cursor), one query thread (another)."""

    def __init__(self, data_dir: Path, settings: StoreSettings, sql_limits: SqlLimits | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.path = self.data_dir / INDEX_FILE
        self.batch_rows = settings.index_batch_rows
        self.flush_s = settings.index_flush_ms / 1000.0
        self.con: duckdb.DuckDBPyConnection | None = None
        self._ops: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lag = 0
        self._lag_lock = threading.Lock()
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-query")
        self._read_cur: duckdb.DuckDBPyConnection | None = None
        self.sql_limits = sql_limits or SqlLimits()
        self.spill_max_mb = settings.index_spill_max_mb
        self._sql = SqlRunner(self.sql_limits, self._sql_cursor)
        self.indexed_rows = 0
        self._exports: collections.deque = collections.deque()  # ((stream, partition, base), steps)
        self.failed = False
        self._needed = False  # something (a commit, a query) needs the database
        self._opened = threading.Event()  # set when the database is open (or failed to open)

    # -- life cycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or rebuild, when damaged) the database file (on the worker thread)."""
        import duckdb

        (self.data_dir / PARQUET_DIR).mkdir(parents=True, exist_ok=True)
        try:
            self.con = self._connect()
        except duckdb.Error as exc:
            log.error("index %s is unreadable (%s); rebuilding it from the log", self.path, exc)
            for p in (self.path, self.path.with_suffix(".duckdb.wal")):
                if p.exists():
                    os.replace(p, p.with_suffix(p.suffix + ".broken"))
            self.con = self._connect()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        con = duckdb.connect(str(self.path))
        con.execute("SET checkpoint_threshold = '8MB'")
        con.execute("CREATE TABLE IF NOT EXISTS index_meta(version INTEGER)")
        got = con.execute("SELECT max(version) FROM index_meta").fetchall()[0][0]
        if got != SCHEMA_VERSION:
            con.execute(
                "DROP TABLE IF EXISTS msg_index; DROP TABLE IF EXISTS deletions; DELETE FROM index_meta"
            )
            con.execute(SCHEMA)
            con.execute("INSERT INTO index_meta VALUES (?)", [SCHEMA_VERSION])
        con.execute(SCHEMA)
        self._lock_down(con)
        return con

    def _lock_down(self, con: duckdb.DuckDBPyConnection) -> None:
        """Database-wide limits, then no more changes: memory for the running queries and the
        index, a thread cap, a bounded spill directory, files only under parquet/ (the archive),
        no extension loading, no Python replacement scans."""
        limits = self.sql_limits
        parquet = self.data_dir / PARQUET_DIR
        for statement in (
            f"SET memory_limit = '{limits.duckdb_memory_mb}MB'",
            f"SET threads = {limits.threads}",
            f"SET max_temp_directory_size = '{self.spill_max_mb}MB'",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET python_enable_replacements = false",
            f"SET allowed_directories = ['{parquet}/']",
            "SET enable_external_access = false",
            "SET lock_configuration = true",
        ):
            con.execute(statement)

    def start(self, plan: list[tuple[str, int, int, list[tuple[int, int, str]]]]) -> None:
        """Start the worker; it opens the database and catches up once something needs it."""
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._ops.append(("catch_up", plan))
        self._thread = threading.Thread(target=self._run, name="store-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(60)
        self._reader.shutdown(wait=True)
        self._sql.shutdown()
        if self.con is not None:
            try:
                self.con.execute("CHECKPOINT")
            except Exception:
                pass
            self.con.close()
            self.con = None

    # -- feeding (event loop side; cheap) --------------------------------------------------------

    def feed(self, rows: list[tuple], path: str | None = None, start: int = 0, end: int = 0) -> None:
        """Rows of one commit. When the index is far behind and the rows are in a segment file
        (``path``, ``start`` .. ``end``), only that range is queued: memory stays bounded and the
        worker reads the records back from the file."""
        lag = self._lag
        if path is not None and lag >= MAX_QUEUED_ROWS:
            first = rows[0]
            self._ops.append(("range", first[0], first[1], path, start, end, first[2], len(rows)))
        else:
            self._ops.append(("rows", rows))
        with self._lag_lock:
            self._lag += len(rows)
        if lag + len(rows) >= self.batch_rows or not self._needed:
            self._needed = True
            self._wake.set()

    def _need(self) -> None:
        if not self._needed:
            self._needed = True
            self._wake.set()

    def deleted(self, stream: str, partition: int, offsets: list[int], ts: int) -> None:
        self._ops.append(("deleted", [(stream, partition, o, ts) for o in offsets]))
        self._need()

    def dropped(self, stream: str, partition: int, first_offset: int, bases: list[int]) -> None:
        self._ops.append(("dropped", stream, partition, first_offset, bases))
        self._need()

    def sealed(self, stream: str, partition: int, base: int, end: int, path: str) -> None:
        self._ops.append(("sealed", stream, partition, base, end, path))
        self._need()

    def drop_stream(self, stream: str) -> None:
        self._ops.append(("drop_stream", stream))
        self._needed = True
        self._wake.set()

    def lag(self) -> int:
        return self._lag

    async def sync(self, timeout_s: float = 30.0) -> None:
        """Until everything fed so far is in the index."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._ops.append(("sync", loop, fut))
        self._needed = True
        self._wake.set()
        await asyncio.wait_for(fut, timeout_s)

    # -- the worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._needed and not self._stop:
            self._wake.wait()
            self._wake.clear()
        if not self._needed:  # stopped before anything needed the database
            self._opened.set()
            return
        try:
            self.open()
        except Exception as exc:
            log.error("cannot open the index %s (%s); queries are unavailable", self.path, exc)
            self.failed = True
            self._opened.set()
            self._run_without_database()
            return
        self._opened.set()
        assert self.con is not None
        cur = self.con.cursor()
        cur.execute(EXPORT_TABLE)
        buf: list[tuple] = []
        last_flush = time.monotonic()
        while True:
            self._wake.wait(EXPORT_PAUSE_S if self._exports else self.flush_s)
            self._wake.clear()
            ops = self._ops
            while ops:
                op = ops.popleft()
                kind = op[0]
                if kind == "rows" or kind == "range":
                    buf.extend(op[1] if kind == "rows" else self._read_range(*op[1:]))
                    if len(buf) >= self.batch_rows:
                        self._append(cur, buf)
                        buf = []
                        last_flush = time.monotonic()
                    continue
                if buf:
                    self._append(cur, buf)
                    buf = []
                    last_flush = time.monotonic()
                try:
                    self._apply(cur, op)
                except Exception:
                    log.exception("index operation %s failed", kind)
            if buf and (time.monotonic() - last_flush >= self.flush_s or self._stop):
                self._append(cur, buf)
                buf = []
                last_flush = time.monotonic()
            if not ops and not self._stop:
                self._step_export()
            if self._stop and not ops:
                while self._step_export():
                    pass
                break
        cur.close()

    def _run_without_database(self) -> None:
        """The database could not be opened: keep answering syncs so nobody waits for it."""
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            while self._ops:
                op = self._ops.popleft()
                if op[0] == "sync":
                    op[1].call_soon_threadsafe(_resolve, op[2])
                elif op[0] == "rows":
                    with self._lag_lock:
                        self._lag -= len(op[1])
            if self._stop:
                return

    def _append(self, cur: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
        """One columnar INSERT per batch: the rows are transposed once and handed to DuckDB as
        numpy arrays (about twice cheaper in held-GIL time than the row appender)."""
        import numpy as np

        try:
            batch = {
                name: np.array(col, dtype=dtype)
                for (name, dtype), col in zip(FEED_COLUMNS, zip(*rows, strict=True), strict=True)
            }
            cur.register("feed_batch", batch)
            try:
                cur.execute("INSERT INTO msg_index SELECT * FROM feed_batch")
            finally:
                cur.unregister("feed_batch")
        except Exception as exc:
            if not self.failed:
                log.error("cannot write the index (%s); it will be rebuilt from the log at restart", exc)
            self.failed = True
        self.indexed_rows += len(rows)
        with self._lag_lock:
            self._lag -= len(rows)

    def _apply(self, cur: duckdb.DuckDBPyConnection, op: tuple) -> None:
        kind = op[0]
        if kind == "sync":
            _, loop, fut = op
            while self._step_export():  # a sync also waits for sealed segments' Parquet files
                pass
            loop.call_soon_threadsafe(_resolve, fut)
        elif kind == "deleted":
            app = cur.appender("deletions")
            app.append_rows(op[1])
            app.flush()
        elif kind == "dropped":
            _, stream, partition, first, bases = op
            self._cancel_exports(stream, partition, first)
            cur.execute(
                "DELETE FROM msg_index WHERE stream = ? AND partition = ? AND off < ?",
                [stream, partition, first],
            )
            cur.execute(
                "DELETE FROM deletions WHERE stream = ? AND partition = ? AND off < ?",
                [stream, partition, first],
            )
            for base in bases:
                _parquet_path(self.data_dir, stream, partition, base).unlink(missing_ok=True)
        elif kind == "sealed":
            _, stream, partition, base, end, path = op
            self._exports.append(((stream, partition, base), self._export_steps(cur, *op[1:])))
        elif kind == "drop_stream":
            stream = op[1]
            self._cancel_exports(stream)
            cur.execute("DELETE FROM msg_index WHERE stream = ?", [stream])
            cur.execute("DELETE FROM deletions WHERE stream = ?", [stream])
            shutil.rmtree(self.data_dir / PARQUET_DIR / quote(stream, safe=""), ignore_errors=True)
        elif kind == "catch_up":
            self._catch_up(cur, op[1])

    def _catch_up(self, cur: duckdb.DuckDBPyConnection, plan: list) -> None:
        """Index what the log holds beyond the index (after a crash or with a new index file)."""
        have = {
            (s, p): (mx, n)
            for s, p, mx, n in cur.execute(
                "SELECT stream, partition, max(off), count(*) FROM msg_index GROUP BY stream, partition"
            ).fetchall()
        }
        known = set()
        for stream, partition, end, segs in plan:
            known.add((stream, partition))
            mx, _n = have.get((stream, partition), (-1, 0))
            if mx is not None and mx >= end:
                cur.execute(
                    "DELETE FROM msg_index WHERE stream = ? AND partition = ? AND off >= ?",
                    [stream, partition, end],
                )
                mx = end - 1
            start = (mx if mx is not None else -1) + 1
            if start < end:
                with self._lag_lock:
                    self._lag += end - start
                self._index_from_log(cur, stream, partition, start, end, segs)
        for stream, partition in set(have) - known:
            cur.execute("DELETE FROM msg_index WHERE stream = ? AND partition = ?", [stream, partition])

    def _index_from_log(self, cur, stream: str, partition: int, start: int, end: int, segs: list) -> None:
        for base, seg_end, path in segs:
            if seg_end <= start or base >= end:
                continue
            rows = [r for r in _rows_of_file(stream, partition, path) if start <= r[2] < end]
            for i in range(0, len(rows), CATCH_UP_BATCH_ROWS):
                self._append(cur, rows[i : i + CATCH_UP_BATCH_ROWS])
        with self._lag_lock:
            self._lag = max(0, self._lag)

    def _read_range(
        self, stream: str, partition: int, path: str, start: int, end: int, first: int, count: int
    ) -> list[tuple]:
        """Index rows of records ``first .. first+count-1`` written at ``start .. end`` of a file."""
        try:
            with open(path, "rb") as f:
                rows = _rows_of(stream, partition, os.pread(f.fileno(), end - start, start))
        except OSError:
            rows = []
        if len(rows) != count or (rows and rows[0][2] != first):
            # rewritten by compaction or dropped by retention since: look the records up by offset
            rows = [r for r in _rows_of_file(stream, partition, path) if first <= r[2] < first + count]
            with self._lag_lock:
                self._lag -= count - len(rows)  # records that are gone count as indexed
        return rows

    def _export_steps(
        self, cur, stream: str, partition: int, base: int, end: int, path: str
    ) -> Iterator[None]:
        """Write a sealed segment (metadata, headers and payloads) to Parquet via DuckDB's COPY,
        a chunk of records per step, so the event loop keeps the GIL most of the time."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return
        view = memoryview(data)
        entries = records.scan(data).entries
        cur.execute("DELETE FROM export_buf")
        for i in range(0, len(entries), EXPORT_CHUNK_ROWS):
            rows = []
            for _off, pos, _size in entries[i : i + EXPORT_CHUNK_ROWS]:
                rec = records.decode_at(data, view, pos, partition)
                rows.append(
                    (stream, partition, rec.offset, rec.timestamp_ms, rec.subject, rec.key,
                     records.PRIORITY_CODE[rec.priority], list(rec.tags), rec.expires_at_ms or 0,
                     rec.deliver_after_ms or 0, rec.headers, rec.payload)
                )  # fmt: skip
            app = cur.appender("export_buf")
            app.append_rows(rows)
            app.flush()
            yield
        target = _parquet_path(self.data_dir, stream, partition, base)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".parquet.tmp")
        cur.execute(
            f"COPY (SELECT * FROM export_buf ORDER BY off) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)"
        )
        cur.execute("DELETE FROM export_buf")
        os.replace(tmp, target)

    def _step_export(self) -> bool:
        """Advance the oldest pending export by one chunk; False when none is pending."""
        while self._exports:
            key, steps = self._exports[0]
            try:
                next(steps)
                return True
            except StopIteration:
                self._exports.popleft()
            except Exception:
                self._exports.popleft()
                log.exception("exporting segment %s to parquet failed", key)
        return False

    def _cancel_exports(self, stream: str, partition: int | None = None, below: int | None = None) -> None:
        """Forget exports of segments that are gone (a dropped stream, retention)."""
        keep = collections.deque()
        for key, steps in self._exports:
            s, p, base = key
            if s == stream and (partition is None or (p == partition and below is not None and base < below)):
                steps.close()
                continue
            keep.append((key, steps))
        self._exports = keep

    # -- queries (query thread) ------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """The query thread's cursor, once the worker has opened the database."""
        if self._read_cur is None:
            self._opened.wait(OPEN_WAIT_S)
            if self.con is None:
                raise QueryError(SQL_FAILED.format(reason="the index is not available"))
            self._read_cur = self.con.cursor()
        return self._read_cur

    async def run_query(self, q: MessageQuery, now_ms: int, limit: int, skip: int) -> list[tuple[int, int]]:
        sql, params = build_message_query(q, now_ms, limit, skip)

        def run() -> list[tuple[int, int]]:
            import duckdb

            try:
                return self._cursor().execute(sql, params).fetchall()
            except duckdb.Error as exc:
                raise QueryError(SQL_FAILED.format(reason=exc)) from None

        self._need()
        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    def _sql_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one SQL thread (views are per cursor, so each thread has its own)."""
        self._opened.wait(OPEN_WAIT_S)
        if self.con is None:
            raise QueryError(SQL_FAILED.format(reason="the index is not available"))
        return self.con.cursor()

    async def run_sql(
        self,
        text: str,
        max_rows: int,
        timeout_s: float,
        *,
        max_result_bytes: int | None = None,
        streams: Collection[str] | None = None,
        as_json: bool = False,
    ) -> dict[str, Any]:
        """User SQL, checked by the guard and run under ``sql_limits`` (see sql_runner.py)."""

        def prepare(cur: duckdb.DuckDBPyConnection) -> None:
            check_query(cur, text)
            self._refresh_views(cur, streams)

        self._need()
        return await self._sql.run(
            prepare, text, max_rows=max_rows, timeout_s=timeout_s, as_json=as_json,
            max_result_bytes=max_result_bytes or self.sql_limits.max_result_bytes,
        )  # fmt: skip

    def _refresh_views(self, cur: duckdb.DuckDBPyConnection, streams: Collection[str] | None) -> None:
        where = _stream_filter(streams)
        catalog = cur.execute("SELECT current_database()").fetchall()[0][0].replace('"', '""')
        cur.execute(MESSAGES_VIEW.format(where=where, catalog=catalog))
        cur.execute(DELETIONS_VIEW.format(where=where, catalog=catalog))
        root = self.data_dir / PARQUET_DIR
        if any(root.rglob("*.parquet")):
            cur.execute(ARCHIVE_VIEW.format(root=root, where=where))
        else:
            cur.execute(EMPTY_ARCHIVE_VIEW)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _rows_of(stream: str, partition: int, data: bytes) -> list[tuple]:
    """Index rows of every good record in ``data``."""
    view = memoryview(data)
    return [
        _row(stream, partition, records.decode_at(data, view, pos, partition), size)
        for _off, pos, size in records.scan(data).entries
    ]


def _rows_of_file(stream: str, partition: int, path: str) -> list[tuple]:
    try:
        with open(path, "rb") as f:
            return _rows_of(stream, partition, f.read())
    except OSError:
        return []


def _row(stream: str, partition: int, rec: records.Record, size: int) -> tuple:
    return (
        stream, partition, rec.offset, rec.timestamp_ms, rec.subject, rec.key,
        records.PRIORITY_CODE[rec.priority], records.index_tags(rec.tags), rec.expires_at_ms or 0,
        rec.deliver_after_ms or 0, size,
    )  # fmt: skip
