"""The agent layer's journal: what a replay keeps, what it skips, and the bytes it writes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson

from robustmq.agents.api.journal import task_journal
from robustmq.agents.journal import StoreJournal, replay
from robustmq.agents.mq9.registry import AgentRegistry, RegistryJournal
from robustmq.config import StoreSettings
from robustmq.store import ManualClock, Store


@asynccontextmanager
async def opened_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on ``tmp_path``; opening one again on the same path is a restart."""
    store = Store(StoreSettings(data_dir=tmp_path / "data"), clock=ManualClock(), index=False)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


async def test_a_replay_keeps_good_records_and_counts_bad_ones_in_one_log_line(tmp_path, caplog):
    payloads = [b'{"n": 1}', b"not json", b'[{"n": 2}, {"n": 3}]', b'{"n": 4, "trunc', b'{"n": 5}', b"42"]
    async with opened_store(tmp_path) as store:
        journal = StoreJournal(store, {"name": "j", "kind": "test"})
        journal.open()
        acks = [store.append("j", p) for p in payloads]
        await acks[-1]
        with caplog.at_level(logging.WARNING, logger="robustmq.agents.journal"):
            records = journal.replay()
    assert records == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 5}]
    assert journal.last_replay is not None
    assert journal.last_replay.bad == 3
    assert journal.last_replay.first_bad_offset == acks[1].offset
    lines = [r for r in caplog.records if r.name == "robustmq.agents.journal"]
    assert len(lines) == 1
    assert "3 record(s)" in lines[0].getMessage() and f"offset {acks[1].offset}" in lines[0].getMessage()


async def test_a_clean_replay_logs_nothing(tmp_path, caplog):
    async with opened_store(tmp_path) as store:
        journal = StoreJournal(store, {"name": "j"})
        journal.open()
        await journal.append({"n": 1})
        with caplog.at_level(logging.WARNING, logger="robustmq.agents.journal"):
            assert journal.replay() == [{"n": 1}]
        assert replay(store, "j")[1].bad == 0
    assert not caplog.records


async def test_gathered_writes_are_one_array_record_that_survives_a_restart(tmp_path):
    records = [{"k": "task", "id": "a"}, {"k": "ev", "t": "a"}]
    async with opened_store(tmp_path) as store:
        journal = task_journal(store)
        for record in records:
            journal.write(record)
        await journal.close()
        await store.flush()
        (rec,) = store.read(journal.stream, store.first_offset(journal.stream), 10)
        assert rec.payload == orjson.dumps(records)  # the format data directories hold
    async with opened_store(tmp_path) as store:
        assert task_journal(store).replay() == records


async def test_append_returns_the_ack_of_the_commit_that_holds_the_record(tmp_path):
    async with opened_store(tmp_path) as store:
        journal = StoreJournal(store, {"name": "j", "compact": True})
        journal.open()
        ack = journal.append({"name": "x", "v": 1}, key="x")
        assert store.get("j", ack.offset) is None  # not committed yet: not visible
        await ack
        assert store.get("j", ack.offset).payload == b'{"name":"x","v":1}'


async def test_the_mq9_registry_reloads_past_a_bad_record_and_keeps_unregistrations(tmp_path):
    async with opened_store(tmp_path) as store:
        registry = AgentRegistry(RegistryJournal(store))
        await registry.register("a", '{"name":"a"}')
        await registry.register("b", '{"name":"b"}')
        await registry.unregister("b")
        await store.append(RegistryJournal.AGENTS_STREAM, b"{broken", key="c")
    async with opened_store(tmp_path) as store:
        again = AgentRegistry(RegistryJournal(store))
        again.load()
    assert [entry.name for entry in again.listing()] == ["a"]


def test_without_a_store_a_compacted_journal_keeps_the_newest_record_per_key():
    journal = StoreJournal(None, {"name": "j", "compact": True})
    journal.write({"name": "x", "v": 1}, key="x")
    journal.write({"v": "unkeyed"})
    journal.write({"name": "x", "v": 2}, key="x")
    journal.append({"name": "y"}, key="y")
    journal.append(None, key="y")
    assert journal.replay() == [{"v": "unkeyed"}, {"name": "x", "v": 2}]
