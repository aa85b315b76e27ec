"""Runs user SQL under its limits: a bounded number of query threads and waiting places, a
deadline and a memory ceiling enforced by interrupting DuckDB, and a result capped in bytes.

DuckDB's own memory limit covers what its buffer manager holds; the watchdog here also sees
what it allocates around it (long lists and strings) through the process's resident size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from robustmq.store.errors import (
    SQL_BUSY,
    SQL_FAILED,
    SQL_MEMORY,
    SQL_TIMEOUT,
    QueryBusy,
    QueryError,
    QueryTimeout,
    QueryTooLarge,
)
from robustmq.store.sql_result import RowEncoder

if TYPE_CHECKING:
    import duckdb

WATCH_INTERVAL_S = 0.02  # how often the watchdog looks at the clock and the resident size
FETCH_CHUNK_ROWS = 1_000
INDEX_MEMORY_MB = 256  # DuckDB memory for the index itself (ingest, Parquet export) beside queries
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class SqlLimits:
    """What one user query may use, and how many run or wait at once."""

    memory_limit_mb: int = 256
    threads: int = 1
    max_result_bytes: int = 4 * 1024 * 1024
    concurrency: int = 2
    queue: int = 2
    retry_after_s: int = 1

    @property
    def duckdb_memory_mb(self) -> int:
        """DuckDB's memory limit is per database: every running query's share plus the index's."""
        return self.memory_limit_mb * self.concurrency + INDEX_MEMORY_MB


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


class _Watchdog:
    """Interrupts one running statement when its deadline passes or the process grows by more
    than the memory limit since the statement started."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, deadline: float, max_growth_bytes: int) -> None:
        self.cur = cur
        self.deadline = deadline
        self.max_growth = max_growth_bytes
        self.reason: str | None = None  # "time" or "memory" once it fired
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-sql-watch", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._start_rss = resident_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(WATCH_INTERVAL_S):
            if time.monotonic() >= self.deadline:
                self.reason = "time"
            elif self._start_rss and resident_bytes() - self._start_rss > self.max_growth:
                self.reason = "memory"
            else:
                continue
            self.cur.interrupt()
            return


class SqlRunner:
    """The query threads (each with its own cursor) and the admission count in front of them."""

    def __init__(self, limits: SqlLimits, open_cursor: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        self.limits = limits
        self._open_cursor = open_cursor
        self._pool = concurrent.futures.ThreadPoolExecutor(limits.concurrency, thread_name_prefix="store-sql")
        self._local = threading.local()
        self._admitted = 0  # running plus waiting; changed on the event loop only

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def run(
        self,
        prepare: Callable[[duckdb.DuckDBPyConnection], None],
        text: str,
        *,
        max_rows: int,
        timeout_s: float,
        max_result_bytes: int,
        as_json: bool,
    ) -> dict[str, Any]:
        """Admit the query or raise ``QueryBusy``; then run it on a query thread."""
        limits = self.limits
        if self._admitted >= limits.concurrency + limits.queue:
            raise QueryBusy(SQL_BUSY.format(seconds=limits.retry_after_s), limits.retry_after_s)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s  # time spent waiting for a thread counts
        self._admitted += 1
        fut = self._pool.submit(
            self._execute, prepare, text, max_rows, timeout_s, deadline, max_result_bytes, as_json
        )
        fut.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(fut)

    def _release(self) -> None:
        self._admitted -= 1

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._open_cursor()
        return cur

    def _execute(
        self,
        prepare: Callable[[duckdb.DuckDBPyConnection], None],
        text: str,
        max_rows: int,
        timeout_s: float,
        deadline: float,
        max_result_bytes: int,
        as_json: bool,
    ) -> dict[str, Any]:
        import duckdb

        if time.monotonic() >= deadline:
            raise QueryTimeout(SQL_TIMEOUT.format(seconds=timeout_s))
        cur = self._cursor()
        prepare(cur)  # the guard and the views, before the clock of the statement starts
        limit_mb = self.limits.memory_limit_mb
        rows: list[tuple] = []
        encoder = RowEncoder(max_result_bytes)
        truncated = False
        with _Watchdog(cur, deadline, limit_mb * 1024 * 1024) as watch:
            try:
                cur.execute(text)
                columns = [d[0] for d in cur.description or []]
                while not truncated:
                    chunk = cur.fetchmany(FETCH_CHUNK_ROWS)
                    if not chunk:
                        break
                    for row in chunk:
                        if len(encoder) >= max_rows or not encoder.add(row):
                            truncated = True
                            break
                        if not as_json:
                            rows.append(row)
            except duckdb.OutOfMemoryException:
                raise QueryTooLarge(SQL_MEMORY.format(mib=limit_mb)) from None
            except duckdb.Error as exc:
                if watch.reason == "time":
                    raise QueryTimeout(SQL_TIMEOUT.format(seconds=timeout_s)) from None
                if watch.reason == "memory":
                    raise QueryTooLarge(SQL_MEMORY.format(mib=limit_mb)) from None
                raise QueryError(SQL_FAILED.format(reason=exc)) from None
            finally:
                _close_result(cur)
        if as_json:
            return {
                "columns": columns,
                "rows_json": encoder.json(),
                "row_count": len(encoder),
                "truncated": truncated,
            }
        return {"columns": columns, "rows": rows, "truncated": truncated}


def _close_result(cur: duckdb.DuckDBPyConnection) -> None:
    """Drop what is left of a result (a truncated one holds its remaining rows)."""
    try:
        cur.execute("SELECT 1").fetchall()
    except Exception:
        pass
