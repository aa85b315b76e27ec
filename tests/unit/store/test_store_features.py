"""TTL, delayed delivery, retention, key compaction, tombstones and priority order, on a manual clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers.waits import wait_until


def _files(data_dir: Path, stream: str = "s") -> list[Path]:
    return sorted((data_dir / "log" / stream / "0").glob("*.log"))


async def test_a_record_expires_at_its_ttl(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    await st.append("s", b"short", ttl_ms=1000, key="k")
    await st.append("s", b"forever")
    clock.advance(999)
    assert [r.payload for r in st.read("s", 0, 10)] == [b"short", b"forever"]
    clock.advance(1)
    assert [r.payload for r in st.read("s", 0, 10)] == [b"forever"]
    assert st.get("s", 0) is None
    assert st.latest_by_key("s", "k") is None


async def test_the_stream_default_ttl_applies_unless_the_record_has_its_own(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s", "default_ttl_s": 10})
    await st.append("s", b"default")
    await st.append("s", b"own", ttl_ms=60_000)
    await st.append("s", b"never", ttl_ms=0)
    clock.advance(10_000)
    assert [r.payload for r in st.read("s", 0, 10)] == [b"own", b"never"]
    clock.advance(50_000)
    assert [r.payload for r in st.read("s", 0, 10)] == [b"never"]


async def test_a_delayed_record_appears_when_due_and_wakes_waiters(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    await st.append("s", b"later", deliver_after_ms=5000)
    await st.append("s", b"now")
    assert [r.payload for r in st.read("s", 0, 10)] == [b"now"]
    waiter = asyncio.create_task(st.wait_for_data("s", 2, timeout_s=60))
    await asyncio.sleep(0)
    clock.advance(4999)
    await asyncio.sleep(0)
    assert not waiter.done()
    clock.advance(1)  # the timer fires on the clock, nobody polls
    assert await waiter is True
    assert [r.payload for r in st.read("s", 0, 10)] == [b"later", b"now"]


async def test_delays_survive_a_restart(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    await st.append("s", b"later", deliver_after_ms=5000)
    await st.stop()
    st = await open_store()
    assert st.read("s", 0, 10) == []
    clock.advance(5000)
    assert [r.payload for r in st.read("s", 0, 10)] == [b"later"]


async def test_retention_by_count_moves_the_first_offset_and_drops_whole_segments(open_store, data_dir):
    st = await open_store(segment_max_bytes=400)
    st.create_stream({"name": "s", "max_msgs": 5})
    for i in range(30):
        st.append("s", b"m%02d" % i + b"." * 60)
        await st.flush()
    assert [r.offset for r in st.read("s", 0, 100)] == [25, 26, 27, 28, 29]
    info = st.stream_info("s")
    assert (info.first_offset, info.last_offset) == (25, 29)
    remaining = _files(data_dir)
    assert int(remaining[0].stem) <= 25 and len(remaining) <= 4
    await st.stop()
    st = await open_store(segment_max_bytes=400)
    assert [r.offset for r in st.read("s", 0, 100)] == [25, 26, 27, 28, 29]


async def test_retention_by_age_drops_old_records_as_the_clock_moves(open_store, clock, data_dir):
    st = await open_store(segment_max_bytes=300)
    st.create_stream({"name": "s", "max_age_s": 60})
    for i in range(10):
        st.append("s", b"old%d" % i + b"." * 60)
        await st.flush()
    clock.advance(30_000)
    for i in range(3):
        st.append("s", b"new%d" % i)
        await st.flush()
    clock.advance(30_001)  # the old ones are now older than 60 s; maintenance runs on the clock
    assert [r.payload for r in st.read("s", 0, 100)] == [b"new0", b"new1", b"new2"]
    assert st.stream_info("s").first_offset == 10
    assert all(int(p.stem) >= 8 for p in _files(data_dir))


async def test_retention_by_bytes_drops_the_oldest_segments(open_store, data_dir):
    st = await open_store(segment_max_bytes=500)
    st.create_stream({"name": "s", "max_bytes": 1500})
    for i in range(40):
        st.append("s", b"b%02d" % i + b"." * 90)
        await st.flush()
    st.run_retention()
    assert st.stream_info("s").bytes <= 1500 + 500
    assert st.read("s", 0, 1)[0].offset > 0
    assert st.read("s", 0, 100)[-1].offset == 39


async def test_compaction_keeps_only_the_newest_record_per_key_and_reclaims_space(open_store, data_dir):
    st = await open_store(segment_max_bytes=800)
    st.create_stream({"name": "s", "compact": True})
    for i in range(60):
        st.append("s", b"v%02d" % i + b"." * 50, key=f"k{i % 3}")
        await st.flush()
    await st.append("s", b"unkeyed")
    visible = st.read("s", 0, 100)
    assert [(r.key, r.payload[:3]) for r in visible] == [
        (b"k0", b"v57"),
        (b"k1", b"v58"),
        (b"k2", b"v59"),
        (None, b"unk"),
    ]
    before = sum(p.stat().st_size for p in _files(data_dir))
    reclaimed = await st.compact("s")
    after = sum(p.stat().st_size for p in _files(data_dir))
    assert reclaimed > 0 and after < before
    assert st.read("s", 0, 100) == visible
    await st.append("s", b"newest", key="k1")
    await st.stop()
    st = await open_store(segment_max_bytes=800)
    assert [r.payload for r in st.read("s", 0, 100)] == [
        b"v57" + b"." * 50,
        b"v59" + b"." * 50,
        b"unkeyed",
        b"newest",
    ]
    assert st.latest_by_key("s", "k1").payload == b"newest"
    assert sorted(st.keys("s")) == [b"k0", b"k1", b"k2"]


async def test_a_tombstone_hides_a_record_survives_restart_and_compaction_removes_it(open_store, data_dir):
    st = await open_store(segment_max_bytes=300)
    st.create_stream({"name": "s"})
    for i in range(10):
        st.append("s", b"r%d" % i + b"." * 60)
        await st.flush()
    assert await st.delete("s", 1) is None
    assert st.delete("s", 1) is None  # already deleted
    assert st.delete("s", 99) is None
    expected = [o for o in range(10) if o != 1]
    assert [r.offset for r in st.read("s", 0, 100)] == expected
    await st.stop()
    st = await open_store(segment_max_bytes=300)
    assert [r.offset for r in st.read("s", 0, 100)] == expected
    assert await st.compact("s") > 0
    assert [r.offset for r in st.read("s", 0, 100)] == expected
    await st.stop()
    st = await open_store(segment_max_bytes=300)
    assert [r.offset for r in st.read("s", 0, 100)] == expected


async def test_expired_records_are_reclaimed_by_compaction(open_store, clock):
    st = await open_store(segment_max_bytes=300)
    st.create_stream({"name": "s"})
    for i in range(10):
        st.append("s", b"e%d" % i + b"." * 60, ttl_ms=1000 if i < 8 else None)
        await st.flush()
    clock.advance(1000)
    assert await st.compact("s") > 0
    assert [r.offset for r in st.read("s", 0, 100)] == [8, 9]


async def test_priority_read_gives_critical_then_urgent_then_normal_fifo_within_each(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    prios = ["normal", "urgent", "critical", "normal", "critical", "urgent", "normal"]
    for i, p in enumerate(prios):
        st.append("s", b"%d" % i, priority=p)
    await st.flush()
    recs, pos = st.read_by_priority("s", [0, 0, 0], max_records=4)
    assert [r.offset for r in recs] == [2, 4, 1, 5]
    recs, pos = st.read_by_priority("s", pos, max_records=10)
    assert [r.offset for r in recs] == [0, 3, 6]
    await st.append("s", b"late", priority="critical")
    recs, pos = st.read_by_priority("s", pos, max_records=10)
    assert [r.offset for r in recs] == [7]
    assert st.read_by_priority("s", pos, max_records=10)[0] == []


async def test_a_background_job_reclaims_superseded_and_deleted_records(open_store, data_dir, clock):
    st = await open_store(segment_max_bytes=400)
    st.create_stream({"name": "s", "compact": True})
    for i in range(40):
        st.append("s", b"v%02d" % i + b"." * 60, key=f"k{i % 2}")
        await st.flush()
    before = sum(p.stat().st_size for p in _files(data_dir))
    clock.advance(61_000)  # maintenance starts the job on the clock
    await wait_until(
        lambda: sum(p.stat().st_size for p in _files(data_dir)) < before / 2, what="reclaimed space"
    )
    assert [r.payload[:3] for r in st.read("s", 0, 100)] == [b"v38", b"v39"]
