"""The agent layer's journal: what a replay keeps, what it skips, and the bytes it writes."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from robustmq.agents.api.journal import task_journal
from robustmq.agents.journal import StoreJournal, replay
from robustmq.agents.mq9.registry import AgentRegistry, RegistryJournal
from robustmq.config import StoreSettings
from robustmq.store import ManualClock, Store


@pytest.fixture
async def open_store(tmp_path: Path):
    """``await open_store()`` opens a store on the same directory each time (a restart)."""
    opened: list[Store] = []

    async def make() -> Store:
        store = Store(StoreSettings(data_dir=tmp_path / "data"), clock=ManualClock(), index=False)
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.stop()


async def test_a_replay_keeps_good_records_and_counts_bad_ones_in_one_log_line(open_store, caplog):
    store = await open_store()
    journal = StoreJournal(store, {"name": "j", "kind": "test"})
    journal.open()
    payloads = [b'{"n": 1}', b"not json", b'[{"n": 2}, {"n": 3}]', b'{"n": 4, "trunc', b'{"n": 5}', b"42"]
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


async def test_a_clean_replay_logs_nothing(open_store, caplog):
    store = await open_store()
    journal = StoreJournal(store, {"name": "j"})
    journal.open()
    await journal.append({"n": 1})
    with caplog.at_level(logging.WARNING, logger="robustmq.agents.journal"):
        assert journal.replay() == [{"n": 1}]
    assert not caplog.records
    assert replay(store, "j")[1].bad == 0


async def test_gathered_writes_are_one_array_record_that_survives_a_restart(open_store):
    store = await open_store()
    journal = task_journal(store)
    journal.write({"k": "task", "id": "a"})
    journal.write({"k": "ev", "t": "a"})
    await journal.close()
    await store.flush()
    (rec,) = store.read(journal.stream, store.first_offset(journal.stream), 10)
    assert rec.payload == orjson.dumps([{"k": "task", "id": "a"}, {"k": "ev", "t": "a"}])  # the format kept
    await store.stop()
    again = task_journal(await open_store())
    assert again.replay() == [{"k": "task", "id": "a"}, {"k": "ev", "t": "a"}]


async def test_append_returns_the_ack_of_the_commit_that_holds_the_record(open_store):
    store = await open_store()
    journal = StoreJournal(store, {"name": "j", "compact": True})
    journal.open()
    ack = journal.append({"name": "x", "v": 1}, key="x")
    assert store.get("j", ack.offset) is None  # not committed yet: not visible
    await ack
    assert store.get("j", ack.offset).payload == b'{"name":"x","v":1}'


async def test_the_mq9_registry_reloads_past_a_bad_record_and_keeps_unregistrations(open_store):
    store = await open_store()
    registry = AgentRegistry(RegistryJournal(store))
    await registry.register("a", '{"name":"a"}')
    await registry.register("b", '{"name":"b"}')
    await registry.unregister("b")
    await store.append(RegistryJournal.AGENTS_STREAM, b"{broken", key="c")
    await store.stop()
    again = AgentRegistry(RegistryJournal(await open_store()))
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
