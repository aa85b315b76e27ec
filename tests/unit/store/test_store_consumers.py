"""Durable consumers: out-of-order acks, redelivery, dead letters, commits, restarts, priority."""

from __future__ import annotations

import asyncio

import pytest

from robustmq.store import ConsumerNotFound


async def _fill(st, n: int, stream: str = "s", **kw) -> None:
    for i in range(n):
        st.append(stream, b"%d" % i, **kw)
    await st.flush()


async def test_acks_out_of_order_move_the_floor_only_over_a_contiguous_prefix(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    await _fill(st, 6)
    c = st.consumer("s", "g")
    assert [r.offset for r in c.fetch(4)] == [0, 1, 2, 3]
    c.ack(2)
    c.ack(1)
    assert c.committed() == 0
    c.ack(0)
    assert c.committed() == 3
    assert c.info()["num_pending"] == 1
    assert [r.offset for r in c.fetch(10)] == [4, 5]
    assert c.fetch(10) == []


async def test_unacked_records_are_redelivered_after_the_ack_wait(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    await _fill(st, 3)
    c = st.consumer("s", "g", config={"ack_wait_ms": 1000})
    first = c.fetch(10)
    assert [r.delivery_count for r in first] == [1, 1, 1]
    c.ack(1)
    assert c.fetch(10) == []
    clock.advance(1000)
    again = c.fetch(10)
    assert [(r.offset, r.delivery_count) for r in again] == [(0, 2), (2, 2)]


async def test_nack_redelivers_at_once_or_after_a_delay(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    await _fill(st, 2)
    c = st.consumer("s", "g")
    c.fetch(10)
    c.nack(0)
    c.nack(1, delay_ms=500)
    assert [r.offset for r in c.fetch(10)] == [0]
    clock.advance(500)
    assert [r.offset for r in c.fetch(10)] == [1]


async def test_max_deliveries_send_the_record_to_the_dead_letter_stream(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    await st.append("s", b"poison", key="k", tags=["x"])
    c = st.consumer("s", "g", config={"ack_wait_ms": 100, "max_deliver": 2, "dead_letter": "s.dlq"})
    assert len(c.fetch(1)) == 1
    clock.advance(100)
    assert c.fetch(1)[0].delivery_count == 2
    clock.advance(100)
    assert c.fetch(1) == []
    await st.flush()
    dead = st.read("s.dlq", 0, 10)
    assert [(r.payload, r.key, r.tags) for r in dead] == [(b"poison", b"k", ("x",))]
    assert c.committed() == 1


async def test_consumer_state_survives_a_restart_and_unacked_records_come_back(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    await _fill(st, 5)
    c = st.consumer("s", "g", config={"ack_wait_ms": 60_000})
    c.fetch(5)
    c.ack(0)
    c.ack(3)
    await st.flush()
    await st.stop()
    st = await open_store()
    c = st.consumer("s", "g", create=False)
    assert c.config.ack_wait_ms == 60_000
    assert c.committed() == 1
    assert [r.offset for r in c.fetch(10)] == [1, 2, 4]


async def test_delivered_mark_survives_a_restart_and_a_journal_rewrite(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    await _fill(st, 5)
    c = st.consumer("s", "g")
    c.note_delivered(2)
    c.note_delivered(1)  # never moves back
    assert c.delivered_below == 3
    st.commit_now()
    await st.flush()
    await st.stop()
    st = await open_store()
    c = st.consumer("s", "g", create=False)
    assert c.delivered_below == 3
    plog = st.partition_log("s")
    assert {"t": "dlv", "c": "g", "o": 3} in plog.journal_snapshot()


async def test_drop_consumed_drops_whole_segments_below_every_consumers_floor(open_store):
    st = await open_store(segment_max_bytes=200)
    st.create_stream({"name": "wq", "drop_consumed": True})
    await _fill(st, 40, stream="wq")
    a = st.consumer("wq", "a")
    b = st.consumer("wq", "b")
    a.ack_many(list(range(30)))
    b.ack_many(list(range(10)))
    st.run_retention()
    first = st.first_offset("wq")
    assert 0 < first <= 10  # held back by the slower consumer, cut at a segment edge
    b.ack_many(list(range(10, 40)))
    st.run_retention()
    assert 10 < st.first_offset("wq") <= 30
    assert [r.offset for r in st.read("wq", 30, 100)] == list(range(30, 40))


async def test_commit_sets_the_committed_offset_like_a_kafka_group(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    await _fill(st, 10)
    c = st.consumer("s", "kafka-group")
    await c.commit(7)
    assert c.committed() == 7
    assert [r.offset for r in c.fetch(10)] == [7, 8, 9]
    await c.commit(2)  # a reset may go back
    await st.stop()
    st = await open_store()
    c = st.consumer("s", "kafka-group")
    assert c.committed() == 2
    assert c.fetch(1)[0].offset == 2


async def test_a_new_consumer_can_start_at_new_records_only(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    await _fill(st, 3)
    c = st.consumer("s", "late", config={"start": "new"})
    assert c.fetch(10) == []
    await st.append("s", b"fresh")
    assert [r.payload for r in c.fetch(10)] == [b"fresh"]


async def test_deleting_a_consumer_forgets_it(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    st.consumer("s", "g")
    assert st.consumers("s") == ["g"]
    assert st.delete_consumer("s", "g") is True
    assert st.delete_consumer("s", "g") is False
    await st.stop()
    st = await open_store()
    with pytest.raises(ConsumerNotFound):
        st.consumer("s", "g", create=False)


async def test_priority_consumer_delivers_critical_urgent_normal_fifo_within(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    for i, p in enumerate(["normal", "urgent", "critical", "normal", "critical"]):
        st.append("s", b"%d" % i, priority=p)
    await st.flush()
    c = st.consumer("s", "g", config={"order": "priority"})
    assert [r.offset for r in c.fetch(3)] == [2, 4, 1]
    await st.append("s", b"5", priority="critical")
    assert [r.offset for r in c.fetch(10)] == [5, 0, 3]


async def test_delayed_records_do_not_block_the_consumer_and_arrive_when_due(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    st.append("s", b"later", deliver_after_ms=1000)
    st.append("s", b"now")
    await st.flush()
    c = st.consumer("s", "g")
    assert [r.payload for r in c.fetch(10)] == [b"now"]
    clock.advance(1000)
    assert [r.payload for r in c.fetch(10)] == [b"later"]


async def test_deleted_and_expired_records_are_not_delivered(open_store, clock):
    st = await open_store()
    st.create_stream({"name": "s"})
    st.append("s", b"a")
    st.append("s", b"b", ttl_ms=10)
    st.append("s", b"c")
    await st.flush()
    st.delete("s", 0)
    clock.advance(10)
    c = st.consumer("s", "g")
    assert [r.payload for r in c.fetch(10)] == [b"c"]


async def test_consumer_wait_wakes_when_a_record_arrives(open_store):
    st = await open_store()
    st.create_stream({"name": "s"})
    c = st.consumer("s", "g")
    waiter = asyncio.create_task(c.wait(30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await st.append("s", b"x")
    assert await waiter is True
    assert len(c.fetch(1)) == 1
