"""The partition log through the Store: appends, reads, recovery, rollover, faults."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from robustmq.headers import encode_headers
from robustmq.router import Router
from robustmq.store import (
    InvalidStreamConfig,
    RecordTooLarge,
    StoreOpenError,
    StoreWriteError,
    StreamExists,
    StreamNotFound,
)
from robustmq.store import records as records_module
from robustmq.store.segment import Segment


def _segment_files(data_dir: Path, stream: str = "s", partition: int = 0) -> list[Path]:
    return sorted((data_dir / "log" / stream / str(partition)).glob("*.log"))


async def test_append_returns_offsets_from_zero_and_read_gives_identical_records(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    hdr = encode_headers([("a", "1"), ("a", "2"), ("b", "x")])
    acks = [
        st.append(
            "s", b"p%d" % i, subject=f"x.{i}", headers=hdr, key=f"k{i}", priority="urgent", tags=["t1", "t2"]
        )
        for i in range(5)
    ]
    assert [a.offset for a in acks] == [0, 1, 2, 3, 4]
    assert [await a for a in acks] == [0, 1, 2, 3, 4]
    recs = st.read("s", 0, 10)
    assert [r.offset for r in recs] == [0, 1, 2, 3, 4]
    r = recs[3]
    assert (r.payload, r.subject, r.headers, r.key, r.priority, r.tags) == (
        b"p3",
        "x.3",
        hdr,
        b"k3",
        "urgent",
        ("t1", "t2"),
    )
    assert st.read("s", 3, 1)[0].offset == 3
    assert st.get("s", 4).payload == b"p4"
    assert st.get("s", 5) is None


async def test_records_are_not_visible_before_their_commit(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    ack = st.append("s", b"x")
    assert st.read("s", 0, 10) == []
    await ack
    assert len(st.read("s", 0, 10)) == 1


async def test_data_and_definitions_survive_a_restart_and_offsets_continue(open_store, data_dir):
    st = await open_store()
    st.create_stream({"name": "s", "subjects": ["a.>"], "max_msgs": 100})
    for i in range(10):
        st.append("s", b"%d" % i)
    await st.flush()
    await st.stop()
    st = await open_store()
    assert st.stream_config("s").max_msgs == 100
    assert [r.payload for r in st.read("s", 0, 100)] == [b"%d" % i for i in range(10)]
    assert await st.append("s", b"next") == 10


async def test_batch_append_has_one_future_for_all_offsets(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    batch = st.append_batch("s", [b"a", {"payload": b"b", "key": "k", "priority": "critical"}, b"c"])
    assert await batch == [0, 1, 2]
    assert st.get("s", 1).priority == "critical"


async def test_torn_tail_is_truncated_on_recovery(open_store, data_dir):
    st = await open_store()
    st.create_stream({"name": "s"})
    for i in range(20):
        st.append("s", b"%d" % i)
    await st.flush()
    await st.stop()
    path = _segment_files(data_dir)[-1]
    good = path.stat().st_size
    with open(path, "ab") as f:
        f.write(records_module.encode(20, 0, b"torn" * 10)[:-7])
    st = await open_store()
    assert path.stat().st_size == good
    assert [r.offset for r in st.read("s", 0, 100)] == list(range(20))
    assert await st.append("s", b"after") == 20


async def test_segments_roll_over_by_size_and_sealed_ones_get_a_snapshot(open_store, data_dir):
    st = await open_store(segment_max_bytes=1000)
    st.create_stream({"name": "s"})
    for _i in range(30):
        st.append("s", b"x" * 100)
        await st.flush()
    files = _segment_files(data_dir)
    assert len(files) > 3
    assert all(f.with_suffix(".idx").exists() for f in files[:-1])
    assert [r.offset for r in st.read("s", 0, 100)] == list(range(30))


async def test_segments_roll_over_by_age(open_store, data_dir, clock):
    st = await open_store(segment_max_age_s=10)
    st.create_stream({"name": "s"})
    await st.append("s", b"a")
    clock.advance(11_000)
    await st.append("s", b"b")
    assert len(_segment_files(data_dir)) == 2


async def test_startup_scans_nothing_after_a_clean_stop_and_only_the_tail_after_a_crash(
    open_store, data_dir, tmp_path, monkeypatch
):
    import shutil

    st = await open_store(segment_max_bytes=500)
    st.create_stream({"name": "s"})
    for i in range(40):
        st.append("s", b"y" * 100, key=f"k{i % 4}", deliver_after_ms=1 if i == 0 else None)
        await st.flush()
    before = st.read("s", 0, 100)
    await st.stop()
    scanned: list[int] = []
    real_scan = records_module.scan
    monkeypatch.setattr(records_module, "scan", lambda buf: scanned.append(len(buf)) or real_scan(buf))
    st = await open_store(segment_max_bytes=500)
    assert scanned == []  # every segment, the active one included, has a snapshot
    assert st.read("s", 0, 100) == before
    assert st.latest_by_key("s", "k3").offset == 39
    await st.append("s", b"z" * 10, key="k3")
    crashed = tmp_path / "crashed"
    shutil.copytree(data_dir, crashed)  # the files as a crash would leave them
    st2 = await open_store(data_dir=crashed, segment_max_bytes=500)
    assert len(scanned) == 1 and scanned[0] < 500  # only what was written after the checkpoint
    assert st2.read("s", 0, 100) == st.read("s", 0, 100)
    assert st2.latest_by_key("s", "k3").offset == 40


async def test_flipped_bit_in_a_sealed_segment_is_reported_and_the_rest_stays_readable(
    open_store, data_dir, caplog
):
    st = await open_store(segment_max_bytes=600)
    st.create_stream({"name": "s"})
    for i in range(20):
        st.append("s", b"%03d" % i + b"z" * 100)
        await st.flush()
    await st.stop()
    first = _segment_files(data_dir)[0]
    data = bytearray(first.read_bytes())
    data[-5] ^= 0x10  # inside the payload of the segment's last record
    first.write_bytes(bytes(data))
    st = await open_store(segment_max_bytes=600)
    sealed_count = len(st.partition_log("s").segments[0].positions)
    bad_offset = sealed_count - 1
    with caplog.at_level(logging.ERROR, logger="robustmq.store"):
        got = [r.offset for r in st.read("s", 0, 100)]
    assert got == [o for o in range(20) if o != bad_offset]
    assert "checksum mismatch" in caplog.text
    assert st.get("s", bad_offset) is None
    assert [b["offset"] for b in st.verify("s")] == [bad_offset]
    assert await st.append("s", b"more") == 20


async def test_oversize_record_is_rejected_and_the_store_carries_on(open_store):
    st = await open_store(max_record_bytes=1024)
    st.create_stream({"name": "s"})
    with pytest.raises(RecordTooLarge, match="exceeds the limit of 1024 bytes"):
        st.append("s", b"x" * 2000)
    assert await st.append("s", b"small") == 0


async def test_unusable_data_directory_fails_start_with_a_clear_error(tmp_path, open_store, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.ERROR, logger="robustmq.store"), pytest.raises(StoreOpenError) as info:
        await open_store(data_dir=blocker / "data")
    assert "cannot open the store at" in str(info.value)
    assert "cannot open the store at" in caplog.text


async def test_disk_full_fails_the_batch_leaves_no_partial_record_and_recovers(
    open_store, data_dir, monkeypatch, caplog
):
    st = await open_store()
    st.create_stream({"name": "s"})
    await st.append("s", b"before")
    real_write = Segment.write

    def full(self, data: bytes) -> None:
        os.write(self.fd, data[: len(data) // 2])  # a partial write, then the disk is full
        self.size += 0
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def cut_back_then_fail(self, data: bytes) -> None:
        try:
            full(self, data)
        except OSError:
            os.ftruncate(self.fd, self.size)
            raise

    monkeypatch.setattr(Segment, "write", cut_back_then_fail)
    acks = [st.append("s", b"lost%d" % i) for i in range(3)]
    with caplog.at_level(logging.ERROR, logger="robustmq.store"):
        with pytest.raises(StoreWriteError, match="No space left on device"):
            await acks[0]
    assert "No space left on device" in caplog.text
    monkeypatch.setattr(Segment, "write", real_write)
    assert await st.append("s", b"after") == 1
    await st.stop()
    st = await open_store()
    assert [r.payload for r in st.read("s", 0, 10)] == [b"before", b"after"]


async def test_segment_write_cuts_a_partial_write_back(tmp_path, monkeypatch):
    seg = Segment(0, tmp_path / "0.log", 0)
    seg.open(create=True)
    seg.write(b"a" * 10)
    calls = []

    def half_then_full(fd, data):
        if calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        calls.append(1)
        return os.pwrite(fd, bytes(data[:5]), 10)

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        seg.write(b"b" * 20)
    monkeypatch.undo()
    assert (tmp_path / "0.log").read_bytes() == b"a" * 10
    seg.close()


async def test_memory_streams_keep_their_definition_but_not_their_data(open_store):
    st = await open_store()
    st.create_stream({"name": "m", "storage": "memory"})
    await st.append("m", b"x")
    assert len(st.read("m", 0, 10)) == 1
    await st.stop()
    st = await open_store()
    assert st.has_stream("m")
    assert st.read("m", 0, 10) == []


async def test_stream_definitions_are_validated_created_updated_and_deleted(open_store, data_dir):
    st = await open_store(streams=[{"name": "from-config", "subjects": ["cfg.>"]}])
    assert [c.name for c in st.list_streams()] == ["from-config"]
    with pytest.raises(InvalidStreamConfig):
        st.create_stream({"name": "bad/name"})
    with pytest.raises(InvalidStreamConfig):
        st.create_stream({"name": "x", "subjects": ["a..b"]})
    with pytest.raises(InvalidStreamConfig):
        st.create_stream({"name": "x", "nonsense": 1})
    st.create_stream({"name": "x"})
    with pytest.raises(StreamExists):
        st.create_stream({"name": "x"})
    assert st.create_stream({"name": "x", "max_msgs": 5}, exist_ok=True).max_msgs is None
    st.update_stream({"name": "x", "max_msgs": 5, "partitions": 2})
    await st.append("x", b"p1", partition=1)
    info = st.stream_info("x")
    assert info.config.partitions == 2 and info.count == 1
    st.delete_stream("x")
    assert not (data_dir / "log" / "x").exists()
    with pytest.raises(StreamNotFound):
        st.append("x", b"gone")
    await st.stop()
    st = await open_store()
    assert [c.name for c in st.list_streams()] == ["from-config"]


async def test_router_publishes_on_matching_subjects_are_appended_with_headers(open_store):
    router = Router()
    st = await open_store(router=router)
    st.create_stream({"name": "orders", "subjects": ["orders.>"]})
    hdr = encode_headers([("trace", "1")])
    count, pending = router.publish_durable("orders.eu.1", b"o1", headers=hdr)
    assert count == 1
    assert [await p for p in pending] == [0]
    router.publish("other.subject", b"ignored")
    rec = st.read("orders", 0, 10)
    assert [(r.subject, r.headers, r.payload) for r in rec] == [("orders.eu.1", hdr, b"o1")]
    st.update_stream({"name": "orders", "subjects": ["shipments.*"]})
    assert router.publish_durable("orders.eu.2", b"o2")[0] == 0
    _, pending = router.publish_durable("shipments.x", b"s1")
    assert [await p for p in pending] == [1]


async def test_an_ingest_function_maps_headers_to_record_fields(open_store):
    from robustmq.headers import decode_headers

    router = Router()
    st = await open_store(router=router)
    st.create_stream({"name": "box", "subjects": ["box"]})

    def ingest(subject, headers, payload):
        h = dict(decode_headers(headers))
        if h.get("skip"):
            return None
        return {"priority": h.get("prio", "normal"), "key": h.get("key"), "tags": ["t"]}

    st.set_ingest("box", ingest)
    _, pending = router.publish_durable(
        "box", b"a", headers=encode_headers([("prio", "critical"), ("key", "k")])
    )
    await pending[0]
    assert router.publish_durable("box", b"b", headers=encode_headers([("skip", "1")]))[1] == []
    rec = st.get("box", 0)
    assert (rec.priority, rec.key, rec.tags) == ("critical", b"k", ("t",))


async def test_router_publish_of_an_oversize_message_fails_only_its_acknowledgement(open_store):
    router = Router()
    st = await open_store(router=router, max_record_bytes=256)
    st.create_stream({"name": "s", "subjects": ["s"]})
    _, pending = router.publish_durable("s", b"x" * 1000)
    with pytest.raises(RecordTooLarge):
        await pending[0]


async def test_partitions_are_chosen_by_key_and_read_separately(open_store):
    router = Router()
    st = await open_store(router=router)
    st.create_stream({"name": "p", "subjects": ["p.>"], "partitions": 3})
    for i in range(30):
        _, pending = router.publish_durable(f"p.{i}", b"x")
        await pending[0]
    counts = [len(st.read("p", 0, 100, partition=n)) for n in range(3)]
    assert sum(counts) == 30 and all(counts)


async def test_first_offset_at_or_after_a_time(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    t0 = clock.now_ms()
    for i in range(5):
        await st.append("s", b"%d" % i)
        clock.advance(1000)
    assert st.first_offset_at_or_after("s", t0) == 0
    assert st.first_offset_at_or_after("s", t0 + 2500) == 3
    assert st.first_offset_at_or_after("s", t0 + 10_000) is None


async def test_wait_for_data_wakes_on_commit(open_store):
    import asyncio

    st = await open_store()
    st.create_stream({"name": "s"})
    waiter = asyncio.create_task(st.wait_for_data("s", 0, timeout_s=30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await st.append("s", b"x")
    assert await waiter is True
    assert await st.wait_for_data("s", 1, timeout_s=0.01) is False


async def test_a_partition_outside_the_stream_is_refused(open_store):
    from robustmq.store import StoreError

    st = await open_store()
    st.create_stream({"name": "s", "partitions": 2})
    for bad in (-1, 2):
        with pytest.raises(StoreError, match="has no partition"):
            st.append("s", b"x", partition=bad)
        with pytest.raises(StoreError, match="has no partition"):
            st.read("s", 0, 10, partition=bad)
    assert await st.append("s", b"x", partition=1) == 0


async def test_a_data_directory_is_used_by_one_store_at_a_time(open_store):
    await open_store()
    with pytest.raises(StoreOpenError, match="used by another robustmq process"):
        await open_store()


async def test_an_invalid_stream_in_the_config_file_fails_start_clearly(open_store):
    with pytest.raises(StoreOpenError, match="invalid stream definition: subjects"):
        await open_store(streams=[{"name": "x", "subjects": ["a..b"]}])
    await open_store()  # the directory lock was released
