"""The commit path: one batch per loop tick, fsync on its own thread, stream definitions journalled."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from helpers.waits import wait_until

from robustmq.store import fsyncer as fsyncer_module
from robustmq.store.definitions import STREAMS_FILE, STREAMS_JOURNAL_FILE


def _record_syncs(monkeypatch) -> list[str]:
    """Names of the threads that call fdatasync from now on."""
    seen: list[str] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        seen.append(threading.current_thread().name)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    return seen


async def test_appends_of_one_tick_go_into_one_commit_without_a_timer(open_store):
    st = await open_store(fsync="never")
    for name in ("a", "b", "c"):
        st.create_stream({"name": name})
    before = st.committer.commits
    acks = [st.append(name, b"x%d" % i) for i in range(20) for name in ("a", "b", "c")]
    await asyncio.sleep(0)  # the commit was scheduled for the next loop iteration
    await asyncio.sleep(0)
    assert all(a.done() for a in acks)
    assert st.committer.commits == before + 1
    assert st.end_offset("a") == st.end_offset("b") == st.end_offset("c") == 20


async def test_a_full_batch_is_written_at_once_and_the_next_record_starts_a_new_one(open_store):
    st = await open_store(fsync="never", commit_max_records=10)
    st.create_stream({"name": "s"})
    before = st.committer.commits
    acks = [st.append("s", b"r%d" % i) for i in range(25)]
    assert st.committer.commits == before + 2  # records 0-9 and 10-19 written during the appends
    assert [await a for a in acks] == list(range(25))
    assert st.committer.commits == before + 3
    assert [r.payload for r in st.read("s", 0, 100)] == [b"r%d" % i for i in range(25)]


async def test_always_acknowledges_after_the_fsync_which_runs_off_the_event_loop(open_store, monkeypatch):
    st = await open_store(fsync="always")
    st.create_stream({"name": "s"})
    syncs = _record_syncs(monkeypatch)
    release = threading.Event()
    real = fsyncer_module.fdatasync_path

    syncing = threading.Event()

    def slow_sync(path: str) -> None:
        syncing.set()
        release.wait(10)
        real(path)

    monkeypatch.setattr(fsyncer_module, "fdatasync_path", slow_sync)
    first = st.append("s", b"one")
    await wait_until(syncing.is_set)  # the loop runs freely while the fsync is held
    assert not first.done()
    assert st.end_offset("s") == 0  # not readable before it is durable
    second = st.append("s", b"two")  # written while the first batch's fsync is still running
    log = st.partition_log("s")
    await wait_until(lambda: log.written_end == 2, what="the second batch written")
    assert not second.done()
    order: list[int] = []
    first.add_done_callback(lambda a: order.append(a.offset))
    second.add_done_callback(lambda a: order.append(a.offset))
    release.set()
    assert await asyncio.wait_for(second, 5) == 1
    assert first.done() and order == [0, 1]
    assert st.end_offset("s") == 2
    assert syncs and threading.main_thread().name not in syncs


async def test_always_delivers_acknowledgements_in_order_across_many_batches(open_store):
    st = await open_store(fsync="always")
    st.create_stream({"name": "s"})
    done: list[int] = []

    async def producer(k: int) -> None:
        for i in range(20):
            ack = st.append("s", b"%d-%d" % (k, i))
            ack.add_done_callback(lambda a: done.append(a.offset))
            if i % 3 == 0:
                await ack

    await asyncio.gather(*(producer(k) for k in range(10)))
    await st.flush()
    assert done == sorted(done) and len(done) == 200


async def test_interval_acknowledges_after_the_write_and_syncs_in_the_background(open_store, monkeypatch):
    st = await open_store(fsync="interval", fsync_interval_ms=20)
    st.create_stream({"name": "s"})
    syncs = _record_syncs(monkeypatch)
    assert await st.append("s", b"x") == 0
    await wait_until(lambda: syncs, what="a background fsync")
    assert set(syncs) == {"store-fsync"}


async def test_a_failed_fsync_gives_the_producer_an_error(open_store, monkeypatch):
    from robustmq.store import StoreWriteError

    st = await open_store(fsync="always")
    st.create_stream({"name": "s"})

    def broken(path: str) -> None:
        raise OSError(5, "Input/output error", path)

    monkeypatch.setattr(fsyncer_module, "fdatasync_path", broken)
    ack = st.append("s", b"x")
    try:
        await asyncio.wait_for(ack, 5)
    except StoreWriteError as exc:
        assert "Input/output error" in str(exc)
    else:
        raise AssertionError("the fsync failure was not reported")


async def test_creating_a_stream_appends_to_the_journal_instead_of_rewriting_every_definition(
    open_store, data_dir: Path
):
    st = await open_store(fsync="always")
    snapshot = (data_dir / STREAMS_FILE).stat()
    for i in range(300):
        st.create_stream({"name": f"m{i}", "kind": "mailbox"})
    st.update_stream({"name": "m7", "max_msgs": 5})
    st.delete_stream("m3")
    again = (data_dir / STREAMS_FILE).stat()
    assert (again.st_ino, again.st_size) == (snapshot.st_ino, snapshot.st_size)
    assert (data_dir / STREAMS_JOURNAL_FILE).stat().st_size > 0
    await st.stop()
    st2 = await open_store(fsync="always")
    names = {c.name for c in st2.list_streams()}
    assert len(names) == 299 and "m3" not in names
    assert st2.stream_config("m7").max_msgs == 5
    assert (data_dir / STREAMS_JOURNAL_FILE).stat().st_size == 0  # folded at start-up


async def test_a_torn_definition_entry_is_ignored_and_earlier_ones_survive(open_store, data_dir: Path):
    st = await open_store()
    st.create_stream({"name": "kept"})
    await st.stop()
    # a crash in the middle of the next entry: half of it on disk
    with open(data_dir / STREAMS_JOURNAL_FILE, "ab") as f:
        f.write(b'\x40\x00\x00\x00\x01\x02\x03\x04{"op":"put"')
    st2 = await open_store()
    assert [c.name for c in st2.list_streams()] == ["kept"]


async def test_the_definitions_journal_is_folded_when_it_grows(open_store, data_dir: Path, monkeypatch):
    from robustmq.store import definitions

    monkeypatch.setattr(definitions, "MIN_COMPACT_ENTRIES", 10)
    st = await open_store(fsync="never")
    for i in range(40):  # 80 entries for 2 streams: folded on the way
        st.create_stream({"name": f"s{i}"})
        if i < 38:
            st.delete_stream(f"s{i}")
    entry = len((data_dir / STREAMS_FILE).read_bytes())  # about one definition
    assert (data_dir / STREAMS_JOURNAL_FILE).stat().st_size < 12 * entry
    await st.stop()
    st2 = await open_store(fsync="never")
    assert sorted(c.name for c in st2.list_streams()) == ["s38", "s39"]


async def test_open_descriptors_stay_bounded_with_many_streams_and_busy_files_stay_open(
    open_store, data_dir: Path, monkeypatch
):
    from robustmq.store.files import OPEN_FILES

    monkeypatch.setattr(OPEN_FILES, "limit", 16)
    fds_before = len(os.listdir("/proc/self/fd"))
    st = await open_store(fsync="always")
    st.create_stream({"name": "busy"})
    for i in range(120):
        st.create_stream({"name": f"box{i}"})
        st.append(f"box{i}", b"m%d" % i)
        st.append("busy", b"b%d" % i)
        await st.flush()
    assert len(OPEN_FILES) <= 16
    assert len(os.listdir("/proc/self/fd")) - fds_before <= 16 + 8  # + the store's lock, DuckDB off
    assert st.partition_log("busy").segments[-1].fd is not None
    for i in range(120):  # every file reopens on demand
        assert [r.payload for r in st.read(f"box{i}", 0)] == [b"m%d" % i]
    assert len(st.read("busy", 0, 1000)) == 120
    await st.stop()
    assert len(OPEN_FILES) == 0
    st2 = await open_store(fsync="always")
    assert [st2.read(f"box{i}", 0)[0].payload for i in range(120)] == [b"m%d" % i for i in range(120)]
    assert len(OPEN_FILES) <= 16


async def test_commit_now_writes_before_returning_and_flush_waits_for_the_acknowledgements(
    open_store, data_dir: Path
):
    st = await open_store(fsync="always")
    st.create_stream({"name": "s"})
    segment = sorted((data_dir / "log" / "s" / "0").glob("*.log"))[-1]
    ack = st.append("s", b"x" * 100)
    assert segment.stat().st_size == 0
    st.commit_now()
    assert segment.stat().st_size > 100  # written (a process crash now keeps it)
    await st.flush()
    assert ack.done() and st.end_offset("s") == 1
