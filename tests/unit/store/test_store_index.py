"""The DuckDB index: structured queries, read-only SQL, Parquet export, catch-up after restart."""

from __future__ import annotations

import pytest

from robustmq.store import QueryError, QueryTimeout
from robustmq.store.query import subject_regex


async def _fill(st, clock) -> None:
    st.create_stream({"name": "s"})
    for i in range(40):
        st.append(
            "s", b"%d" % i, subject=f"orders.{'eu' if i % 2 else 'us'}.{i}", key=f"k{i % 5}",
            priority=("normal", "urgent", "critical")[i % 3], tags=[f"t{i % 4}", "all"],
            ttl_ms=1000 if i == 39 else None,
        )  # fmt: skip
        clock.advance(10)
    await st.flush()


async def test_query_by_key_tags_time_subject_priority_with_limit_and_order(open_store, clock):
    st = await open_store(index=True)
    t0 = clock.now_ms()
    await _fill(st, clock)
    offs = lambda recs: [r.offset for r in recs]  # noqa: E731
    assert offs(await st.query("s", key="k2")) == [2, 7, 12, 17, 22, 27, 32, 37]
    assert offs(await st.query("s", tags_any=["t1", "t2"], limit=4)) == [1, 2, 5, 6]
    assert offs(await st.query("s", tags_all=["t3", "all"], order="desc", limit=3)) == [39, 35, 31]
    assert offs(await st.query("s", since_ms=t0 + 100, until_ms=t0 + 130)) == [10, 11, 12]
    assert offs(await st.query("s", subject="orders.eu.*", priority="critical", limit=3)) == [5, 11, 17]
    assert offs(await st.query("s", subject="orders.>", limit=2, order="desc")) == [39, 38]
    st.delete("s", 38)
    clock.advance(1000)  # 39 expires
    assert offs(await st.query("s", subject="orders.>", limit=2, order="desc")) == [37, 36]


async def test_query_skips_superseded_records_of_a_compacted_stream(open_store):
    st = await open_store(index=True)
    st.create_stream({"name": "c", "compact": True})
    for i in range(10):
        st.append("c", b"%d" % i, key=f"k{i % 2}", tags=["x"])
    await st.flush()
    assert [r.offset for r in await st.query("c", tags_any=["x"])] == [8, 9]


async def test_sql_is_read_only_capped_and_time_limited(open_store, clock):
    st = await open_store(index=True)
    await _fill(st, clock)
    await st.sync_index()
    got = await st.sql("SELECT count(*) AS n FROM messages WHERE stream = 's'")
    assert got == {"columns": ["n"], "rows": [(40,)], "truncated": False}
    got = await st.sql("SELECT off, tags FROM messages ORDER BY off", max_rows=3)
    assert got["rows"] == [(0, ["t0", "all"]), (1, ["t1", "all"]), (2, ["t2", "all"])] and got["truncated"]
    for bad in ("DELETE FROM msg_index", "SELECT 1; SELECT 2", "COPY msg_index TO 'x.csv'", "ATTACH 'x.db'"):
        with pytest.raises(QueryError):
            await st.sql(bad)
    with pytest.raises(QueryError, match="not allowed"):
        await st.sql("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryTimeout):
        await st.sql("SELECT count(*) FROM range(100000000000) a, range(1000) b", timeout_s=0.2)


async def test_sealed_segments_are_exported_to_parquet_with_payloads(open_store):
    st = await open_store(index=True, segment_max_bytes=400)
    st.create_stream({"name": "s"})
    for i in range(20):
        st.append("s", b"payload-%02d" % i + b"." * 40)
        await st.flush()
    await st.sync_index()
    got = await st.sql(
        "SELECT min(off), count(*), bool_and(starts_with(payload::VARCHAR, 'payload-')) FROM archive"
    )
    first, count, ok = got["rows"][0]
    assert first == 0 and 0 < count < 20 and ok


async def test_the_index_is_caught_up_from_the_log_after_a_restart(open_store, data_dir, clock):
    st = await open_store(index=False)
    await _fill(st, clock)
    await st.stop()
    st = await open_store(index=True)
    await st.sync_index()
    assert (await st.sql("SELECT count(*) FROM messages"))["rows"] == [(40,)]
    assert st.index_lag() == 0
    assert [r.offset for r in await st.query("s", key="k4", limit=2)] == [4, 9]
    await st.stop()
    (data_dir / "index.duckdb").unlink()
    st = await open_store(index=True)
    await st.sync_index()
    assert (await st.sql("SELECT count(*) FROM messages"))["rows"] == [(40,)]


async def test_a_deleted_stream_leaves_the_index(open_store, clock):
    st = await open_store(index=True)
    await _fill(st, clock)
    st.delete_stream("s")
    st.create_stream({"name": "s"})
    await st.append("s", b"new")
    await st.sync_index()
    assert (await st.sql("SELECT count(*) FROM messages"))["rows"] == [(1,)]


def test_subject_filters_become_anchored_patterns():
    import re

    assert re.fullmatch(subject_regex("a.*.c"), "a.b.c")
    assert not re.fullmatch(subject_regex("a.*.c"), "a.b.x.c")
    assert re.fullmatch(subject_regex("a.>"), "a.b.c")
    assert not re.fullmatch(subject_regex("a.>"), "a")
    assert re.fullmatch(subject_regex("$mq9.AI.x"), "$mq9.AI.x")


async def test_a_far_behind_index_reads_commits_back_from_the_segment_files(open_store, monkeypatch):
    from robustmq.store import index

    monkeypatch.setattr(index, "MAX_QUEUED_ROWS", 0)  # every commit is queued as a file range
    st = await open_store(index=True, segment_max_bytes=500)
    st.create_stream({"name": "s", "compact": True})
    for i in range(30):
        st.append("s", b"%d" % i + b"." * 40, key=f"k{i % 3}", tags=["t"])
        await st.flush()
    await st.compact("s")  # some ranges now point into rewritten files
    await st.sync_index()
    got = await st.sql("SELECT count(*), count(DISTINCT off), max(off) FROM messages")
    total, distinct, last = got["rows"][0]
    assert total == distinct and last == 29  # superseded records compacted away before indexing are skipped
    assert st.index_lag() == 0
    assert [r.offset for r in await st.query("s", tags_any=["t"])] == [27, 28, 29]


async def test_the_index_is_fed_in_batches_never_per_message(open_store, monkeypatch):
    from robustmq.store.index import IndexWorker

    calls: list[int] = []
    real = IndexWorker._append
    monkeypatch.setattr(
        IndexWorker, "_append", lambda self, cur, rows: calls.append(len(rows)) or real(self, cur, rows)
    )
    st = await open_store(index=True, index_batch_rows=5000, index_flush_ms=600_000)
    st.create_stream({"name": "s"})
    for _ in range(20):
        st.append_batch("s", [b"x"] * 1000)
        await st.flush()
    await st.sync_index()
    assert sum(calls) == 20_000
    assert len(calls) <= 5  # batches of at least 5 000 rows, and the rest when asked to sync


def test_a_store_that_never_needs_its_index_never_loads_duckdb(tmp_path):
    import subprocess
    import sys

    script = (
        "import asyncio, sys\n"
        "from robustmq.config import StoreSettings\n"
        "from robustmq.store import Store\n"
        "async def main():\n"
        f"    st = Store(StoreSettings(data_dir={str(tmp_path / 'd')!r}), index=True)\n"
        "    await st.start()\n"
        "    st.create_stream({'name': 's'})\n"
        "    await st.stop()\n"
        "    print('duckdb' in sys.modules, 'numpy' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


async def test_the_index_opens_on_the_first_query_and_catches_up_from_the_log(open_store, data_dir):
    st = await open_store(index=True)
    st.create_stream({"name": "s"})
    for i in range(50):
        st.append("s", b"%d" % i, key=f"k{i % 5}")
    await st.flush()
    await st.stop()
    (data_dir / "index.duckdb").unlink(missing_ok=True)
    st2 = await open_store(index=True)
    assert st2.index is not None and st2.index.con is None  # nothing needed it yet
    got = await st2.query("s", key="k3", limit=100, fresh=False)
    assert [r.offset for r in got] in ([], [3, 8, 13, 18, 23, 28, 33, 38, 43, 48])  # may lag
    got = await st2.query("s", key="k3", limit=100)
    assert [r.offset for r in got] == [3, 8, 13, 18, 23, 28, 33, 38, 43, 48]
