"""User SQL over the index: only its own views, the readable-streams scope, and the limits
(memory, time, result bytes, the number of queries at once)."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers.waits import wait_until

from robustmq.store import QueryBusy, QueryError, QueryTimeout, QueryTooLarge
from robustmq.store.sql_runner import SqlLimits


async def _two_streams(st) -> None:
    for name in ("alice.inbox", "bob.inbox"):
        st.create_stream({"name": name})
        for i in range(3):
            st.append(name, b"%s-%d" % (name.encode(), i), subject=f"{name}.{i}")
    await st.flush()
    st.delete("alice.inbox", 0)
    await st.flush()
    await st.sync_index()


def _file_reads(data_dir) -> list[str]:
    log = f"{data_dir.resolve()}/log"
    return [
        f"SELECT content FROM read_blob('{log}/**')",
        f"SELECT content FROM read_text('{log}/**')",
        "SELECT * FROM read_blob('log/**')",
        f"SELECT * FROM read_csv('{data_dir.resolve()}/streams.json')",
        f"SELECT * FROM glob('{data_dir.resolve()}/**')",
        f"SELECT * FROM parquet_scan('{data_dir.resolve()}/parquet/**/*.parquet')",
        f"SELECT * FROM read_parquet('{data_dir.resolve()}/parquet/**/*.parquet')",
        f"SELECT * FROM '{log}/x.csv'",
        "FROM 'index.duckdb'",
        "SELECT * FROM messages, (SELECT content FROM read_blob('log/**'))",
        "SELECT (SELECT content FROM read_blob('log/**') LIMIT 1)",
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM read_text('/etc/passwd'))",
        "WITH x AS (SELECT * FROM read_blob('log/**')) SELECT * FROM x",
        "SELECT * FROM (WITH \"log/a.csv\" AS (SELECT 1) SELECT 1), 'log/a.csv'",
        "SELECT * FROM msg_index",
        'SELECT * FROM "index".main.msg_index',
        "SELECT * FROM main.deletions",
        "SELECT * FROM duckdb_settings()",
        "SELECT * FROM query_table('msg_index')",
        "SELECT current_setting('allowed_directories')",
        "SHOW TABLES",
        "DESCRIBE messages",
    ]


async def test_sql_refuses_every_table_function_and_file_path(open_store, data_dir):
    st = await open_store(index=True)
    await _two_streams(st)
    for sql in _file_reads(data_dir):
        with pytest.raises(QueryError):
            got = await st.sql(sql)
            pytest.fail(f"{sql!r} answered {got!r}")


async def test_sql_allows_the_views_ctes_and_row_generators(open_store):
    st = await open_store(index=True)
    await _two_streams(st)
    got = await st.sql(
        "WITH m AS (SELECT stream, off FROM messages) SELECT m.stream, count(*) FROM m "
        "LEFT JOIN deletions d USING (stream, off) WHERE d.off IS NULL GROUP BY 1 ORDER BY 1"
    )
    assert got["rows"] == [("alice.inbox", 2), ("bob.inbox", 3)]
    assert (await st.sql("SELECT count(*) FROM archive"))["rows"] == [(0,)]
    assert (await st.sql("SELECT sum(range) FROM range(4)"))["rows"] == [(6,)]
    assert (await st.sql("SELECT * FROM generate_series(1, 2)"))["rows"] == [(1,), (2,)]


async def test_sql_amplifying_functions_are_refused(open_store):
    st = await open_store(index=True)
    for sql in (
        "SELECT length(list_resize([1::TINYINT], 500000000))",
        "SELECT length(repeat('x', 2000000000))",
        "SELECT len(range(500000000))",
        "SELECT length(lpad('', 500000000, 'x'))",
        "SELECT length(printf('%500000000d', 1))",
        "SELECT length(bar(1, 0, 1, 500000000))",
        "SELECT length(to_base(1, 2, 500000000))",
        "SELECT len(equi_width_bins(0, 1, 500000000, false))",
    ):
        started = time.monotonic()
        with pytest.raises(QueryError, match="not allowed"):
            await st.sql(sql)
        assert time.monotonic() - started < 2


async def test_sql_streams_restrict_every_view(open_store):
    st = await open_store(index=True)
    await _two_streams(st)
    only_bob = {"bob.inbox"}
    got = await st.sql("SELECT DISTINCT stream FROM messages", streams=only_bob)
    assert got["rows"] == [("bob.inbox",)]
    assert (await st.sql("SELECT count(*) FROM deletions", streams=only_bob))["rows"] == [(0,)]
    assert (await st.sql("SELECT count(*) FROM deletions", streams={"alice.inbox"}))["rows"] == [(1,)]
    assert (await st.sql("SELECT count(*) FROM messages", streams=()))["rows"] == [(0,)]
    assert (await st.sql("SELECT count(*) FROM messages", streams={"o'brien"}))["rows"] == [(0,)]
    assert (await st.sql("SELECT count(*) FROM messages"))["rows"] == [(6,)]  # None: every stream


async def test_sql_archive_is_restricted_to_the_streams_too(open_store):
    st = await open_store(index=True, segment_max_bytes=300)
    for name in ("alice.inbox", "bob.inbox"):
        st.create_stream({"name": name})
        for i in range(12):
            st.append(name, b"payload-%d" % i)
            await st.flush()
    await st.sync_index()
    all_rows = (await st.sql("SELECT DISTINCT stream FROM archive ORDER BY 1"))["rows"]
    assert all_rows == [("alice.inbox",), ("bob.inbox",)]
    got = await st.sql("SELECT DISTINCT stream FROM archive", streams={"alice.inbox"})
    assert got["rows"] == [("alice.inbox",)]


async def test_sql_result_is_capped_in_bytes(open_store):
    st = await open_store(index=True, sql_limits=SqlLimits(max_result_bytes=10_000))
    got = await st.sql("SELECT range, 'xxxxxxxxxx' FROM range(100000)", max_rows=100_000, as_json=True)
    assert got["truncated"] is True and len(got["rows_json"]) <= 10_000 and got["row_count"] > 100
    got = await st.sql("SELECT 1 AS a, 'b' AS b", as_json=True)
    assert got == {"columns": ["a", "b"], "rows_json": b'[[1,"b"]]', "row_count": 1, "truncated": False}


async def test_sql_memory_beyond_the_limit_is_refused(open_store):
    st = await open_store(index=True, sql_limits=SqlLimits(memory_limit_mb=64))
    started = time.monotonic()
    with pytest.raises(QueryTooLarge):
        await st.sql("SELECT max(x) FROM (SELECT list(range) AS x FROM range(300000000))", timeout_s=30)
    assert time.monotonic() - started < 10
    assert (await st.sql("SELECT 42"))["rows"] == [(42,)]


async def test_sql_time_limit_interrupts_duckdb(open_store):
    st = await open_store(index=True)
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        await st.sql("SELECT count(*) FROM range(100000000000) a, range(1000) b", timeout_s=0.5)
    elapsed = time.monotonic() - started
    print(f"timed out after {elapsed:.2f} s (limit 0.5 s)")
    assert elapsed < 2.5


async def test_sql_beyond_the_queue_is_busy_at_once(open_store):
    st = await open_store(index=True, sql_limits=SqlLimits(concurrency=1, queue=1))
    slow = "SELECT count(*) FROM range(100000000000) a, range(1000) b"
    running = [asyncio.ensure_future(st.sql(slow, timeout_s=1.5)) for _ in range(2)]
    await wait_until(lambda: st.index._sql._admitted == 2)  # one runs, one waits: the queue is full
    started = time.monotonic()
    with pytest.raises(QueryBusy) as info:
        await st.sql("SELECT 1")
    assert info.value.retry_after_s >= 1 and time.monotonic() - started < 0.5
    results = await asyncio.gather(*running, return_exceptions=True)
    assert all(isinstance(r, QueryTimeout) for r in results)  # the waiting one's wait counted
    assert (await st.sql("SELECT 1"))["rows"] == [(1,)]
