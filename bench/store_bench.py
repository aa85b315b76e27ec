"""Store benchmark: appends per second for each fsync policy with 1 and 50 producers (and how late
a 1 ms timer fires meanwhile), streams created one by one, then reads by offset, index lag, query
latency and start-up time on a stream of N records (default 1 M).

The reference in the same run is SQLite in WAL mode (design (c) of the storage study) taking the
same 200-byte records in the same batches. Bounded: every phase stops by count and by time.
Run: ``.venv/bin/python -m bench.store_bench`` (``--records 200000`` for a quicker run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import uvloop

from bench.common import percentile, rss_mib
from robustmq.config import StoreSettings
from robustmq.store import Store

PAYLOAD = b"x" * 200
BATCH = 100  # appends per producer between awaits (one acknowledgement per batch)
PHASE_LIMIT_S = 20.0
KEYS = 10_000
TAGS = [f"tag{i}" for i in range(20)]


async def _append_run(data_dir: Path, fsync: str, producers: int, total: int, index: bool) -> dict:
    st = Store(StoreSettings(data_dir=data_dir, fsync=fsync), index=index)
    await st.start()
    st.create_stream({"name": "bench"})
    per = max(BATCH, total // producers)
    lat: list[float] = []
    deadline = time.perf_counter() + PHASE_LIMIT_S

    async def produce() -> int:
        n = 0
        while n < per and time.perf_counter() < deadline:
            t = time.perf_counter()
            for _ in range(BATCH - 1):
                st.append("bench", PAYLOAD)
            await st.append("bench", PAYLOAD)
            lat.append(time.perf_counter() - t)
            n += BATCH
        return n

    stalls: list[float] = []
    running = True

    async def tick() -> None:  # how late a 1 ms timer fires: what every other connection feels
        while running:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - t - 0.001)

    ticker = asyncio.ensure_future(tick())
    t0 = time.perf_counter()
    done = sum(await asyncio.gather(*(produce() for _ in range(producers))))
    dt = time.perf_counter() - t0
    running = False
    await ticker
    lag = st.index_lag()
    t1 = time.perf_counter()
    await st.sync_index(60)
    catch_up = time.perf_counter() - t1
    await st.stop()
    return {
        "rate": done / dt, "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
        "lag": lag, "catch_up_s": catch_up, "stall_p99_ms": percentile(stalls, 0.99) * 1000,
        "stall_max_ms": max(stalls, default=0.0) * 1000,
    }  # fmt: skip


async def _many_streams(data_dir: Path, streams: int) -> dict:
    """Create ``streams`` mailbox-like streams one by one, put a record in each, restart."""
    st = Store(StoreSettings(data_dir=data_dir, fsync="interval"), index=True)
    await st.start()
    fds0 = len(os.listdir("/proc/self/fd"))
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(streams):
        t = time.perf_counter()
        st.create_stream({"name": f"mailbox.{i}", "kind": "mailbox"})
        lat.append(time.perf_counter() - t)
        st.append(f"mailbox.{i}", PAYLOAD)
        if i % 100 == 99:
            await st.flush()
    created = time.perf_counter() - t0
    await st.flush()
    fds = len(os.listdir("/proc/self/fd")) - fds0
    await st.stop()
    t1 = time.perf_counter()
    st = Store(StoreSettings(data_dir=data_dir, fsync="interval"), index=True)
    await st.start()
    startup = time.perf_counter() - t1
    assert len(st.list_streams()) == streams
    await st.stop()
    return {
        "total_s": created, "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
        "fds": fds, "startup_s": startup,
    }  # fmt: skip


def _sqlite_run(path: Path, sync: str, total: int) -> dict:
    con = sqlite3.connect(path / "ref.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={sync}")
    con.execute(
        "CREATE TABLE m(stream TEXT, off INTEGER, ts INTEGER, payload BLOB, PRIMARY KEY(stream, off)) WITHOUT ROWID"
    )
    lat = []
    t0 = time.perf_counter()
    off = 0
    while off < total and time.perf_counter() - t0 < PHASE_LIMIT_S:
        t = time.perf_counter()
        rows = [("bench", off + i, 0, PAYLOAD) for i in range(1000)]
        con.executemany("INSERT INTO m VALUES (?, ?, ?, ?)", rows)
        con.commit()
        lat.append(time.perf_counter() - t)
        off += 1000
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = 0
    for start in range(0, off, 100):
        n += len(
            con.execute(
                "SELECT payload FROM m WHERE stream = ? AND off >= ? AND off < ?",
                ("bench", start, start + 100),
            ).fetchall()
        )
    rdt = time.perf_counter() - t1
    con.close()
    return {"rate": off / dt, "p50_ms": percentile(lat, 0.5) * 1000, "read_rate": n / rdt}


async def _start_up_s(data_dir: Path, records: int) -> float:
    """Seconds a Store takes to open ``data_dir``; checks the big stream still holds ``records``."""
    started = time.perf_counter()
    st = Store(StoreSettings(data_dir=data_dir, fsync="interval"), index=True)
    await st.start()
    took = time.perf_counter() - started
    assert st.end_offset("big") == records
    await st.stop()
    return took


async def _big_stream(data_dir: Path, records: int) -> dict:
    """Fill one stream with ``records`` keyed, tagged records; measure reads, queries, start-up."""
    st = Store(StoreSettings(data_dir=data_dir, fsync="interval"), index=True)
    await st.start()
    st.create_stream({"name": "big"})
    rng = random.Random(1)
    t0 = time.perf_counter()
    made = 0

    async def fill() -> None:
        nonlocal made
        while made < records and time.perf_counter() - t0 < 4 * PHASE_LIMIT_S:
            made += 1000
            for i in range(999):
                st.append(
                    "big", PAYLOAD, key=f"key{rng.randrange(KEYS)}", tags=[TAGS[i % len(TAGS)]],
                    priority="urgent" if i % 50 == 0 else "normal",
                )  # fmt: skip
            await st.append("big", PAYLOAD, key=f"key{rng.randrange(KEYS)}", tags=[TAGS[0]])

    await asyncio.gather(*(fill() for _ in range(10)))
    fill_rate = made / (time.perf_counter() - t0)
    t1 = time.perf_counter()
    await st.sync_index(300)
    index_catch_up = time.perf_counter() - t1

    t2 = time.perf_counter()
    n, off = 0, 0
    while time.perf_counter() - t2 < PHASE_LIMIT_S:
        chunk = st.read("big", off, 100)
        if not chunk:
            break
        n += len(chunk)
        off = chunk[-1].offset + 1
    read_rate = n / (time.perf_counter() - t2)

    first_ts = st.get("big", 0).timestamp_ms
    last_ts = st.get("big", made - 1).timestamp_ms
    lat: dict[str, list[float]] = {"key": [], "tag": [], "time": []}
    for i in range(60):
        for kind in lat:
            t = time.perf_counter()
            if kind == "key":
                got = await st.query("big", key=f"key{rng.randrange(KEYS)}", limit=100)
            elif kind == "tag":
                got = await st.query("big", tags_any=[rng.choice(TAGS)], limit=100)
            else:
                at = rng.randint(first_ts, max(first_ts, last_ts - 50))
                got = await st.query("big", since_ms=at, until_ms=at + 50, limit=100)
            lat[kind].append(time.perf_counter() - t)
            assert got or kind == "time" or i < 0
    rss = rss_mib(os.getpid())
    await st.stop()

    startup = await _start_up_s(data_dir, made)
    # worst case: a crash just before the active segment's next checkpoint (scan it all)
    active = sorted((data_dir / "log" / "big" / "0").glob("*.log"))[-1]
    active.with_suffix(".idx").unlink(missing_ok=True)
    startup_scan = await _start_up_s(data_dir, made)
    return {
        "records": made, "fill_rate": fill_rate, "index_catch_up_s": index_catch_up,
        "startup_scan_s": startup_scan, "active_mib": active.stat().st_size / 2**20,
        "read_rate": read_rate, "rss_mib": rss, "startup_s": startup,
        **{f"{k}_p50_ms": percentile(v, 0.5) * 1000 for k, v in lat.items()},
        **{f"{k}_p99_ms": percentile(v, 0.99) * 1000 for k, v in lat.items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="size of the big stream")
    parser.add_argument("--appends", type=int, default=200_000, help="appends per throughput run")
    parser.add_argument("--no-index", action="store_true", help="throughput runs without the DuckDB index")
    parser.add_argument("--streams", type=int, default=3000, help="streams created one by one")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        print(
            f"store benchmark: 200-byte payloads, {BATCH} appends per acknowledgement, {os.cpu_count()} cpus"
        )
        print(
            f"{'fsync':9} {'producers':>9} {'appends/s':>11} {'ack p50 ms':>11} {'ack p99 ms':>11}"
            f" {'index lag':>10} {'catch-up s':>10} {'loop stall p99/max ms':>22}"
        )
        for fsync in ("always", "interval", "never"):
            for producers in (1, 50):
                d = root / f"{fsync}-{producers}"
                r = uvloop.run(_append_run(d, fsync, producers, args.appends, not args.no_index))
                print(
                    f"{fsync:9} {producers:>9} {r['rate']:>11,.0f} {r['p50_ms']:>11.2f} {r['p99_ms']:>11.2f}"
                    f" {r['lag']:>10,} {r['catch_up_s']:>10.2f}"
                    f" {r['stall_p99_ms']:>13.2f} / {r['stall_max_ms']:.2f}"
                )
                shutil.rmtree(d, ignore_errors=True)
        r = uvloop.run(_many_streams(root / "streams", args.streams))
        print(
            f"{args.streams:,} streams created one by one (each durable before the call returns):"
            f" {r['total_s']:.2f} s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms;"
            f" {r['fds']} descriptors open; start-up with them {r['startup_s']:.2f} s"
        )
        shutil.rmtree(root / "streams", ignore_errors=True)
        print("reference, same run: SQLite WAL, executemany of 1000 rows per commit")
        for sync in ("FULL", "NORMAL", "OFF"):
            d = root / f"sqlite-{sync}"
            d.mkdir()
            r = _sqlite_run(d, sync, args.appends)
            print(
                f"  synchronous={sync:6} {r['rate']:>11,.0f} rows/s  commit p50 {r['p50_ms']:.2f} ms  read by key range {r['read_rate']:,.0f} rows/s"
            )
            shutil.rmtree(d, ignore_errors=True)
        r = uvloop.run(_big_stream(root / "big", args.records))
        print(
            f"big stream: {r['records']:,} records (keyed, tagged), filled at {r['fill_rate']:,.0f}/s by 10 producers, index on"
        )
        print(f"  index caught up {r['index_catch_up_s']:.2f} s after the last append")
        print(f"  reads by offset: {r['read_rate']:,.0f} records/s (100 per read)")
        for kind in ("key", "tag", "time"):
            print(f"  query by {kind:4}: p50 {r[kind + '_p50_ms']:.1f} ms  p99 {r[kind + '_p99_ms']:.1f} ms")
        print(
            f"  start-up with {r['records']:,} records: {r['startup_s']:.2f} s   RSS {r['rss_mib']:.0f} MiB"
        )
        print(
            f"  start-up scanning the whole active segment ({r['active_mib']:.0f} MiB, as after a crash):"
            f" {r['startup_scan_s']:.2f} s"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
