"""The SDK's mailbox operations against the real broker: create, send, fetch, ack, query, delete."""

from __future__ import annotations

import pytest
from helpers.waits import request_started
from mq9 import BadRequest, Client, Conflict, NotFound


async def test_send_fetch_ack_in_priority_order(sdk_broker):
    async with Client(sdk_broker.nats_url) as c:
        box = await c.create_mailbox("task.42.results", ttl=3600)
        assert box == "task.42.results"
        ids = [
            await c.send(box, b"n1"),
            await c.send(box, {"alarm": 1}, priority="critical"),
            await c.send(box, "u1", priority="urgent", tags=["x"]),
        ]
        assert ids == [0, 1, 2]
        msgs = await c.fetch(box, group="g", num=10, deliver="earliest")
        assert [m.payload for m in msgs] == [b'{"alarm":1}', b"u1", b"n1"]
        assert [m.priority for m in msgs] == ["critical", "urgent", "normal"]
        assert msgs[0].json() == {"alarm": 1}
        assert msgs[1].tags == ["x"]
        # nothing moves until ACK
        again = await c.fetch(box, group="g", num=10, deliver="earliest")
        assert [m.msg_id for m in again] == [m.msg_id for m in msgs]
        await c.ack(box, group="g", msg_id=max(m.msg_id for m in msgs))
        assert await c.fetch(box, group="g", num=10, max_wait_ms=50) == []


async def test_generated_mailbox_key_compaction_query_and_delete(sdk_broker):
    async with Client(sdk_broker.nats_url) as c:
        box = await c.create_mailbox(ttl=60)
        assert box
        await c.send(box, b"v1", key="state")
        await c.send(box, b"v2", key="state")
        await c.send(box, b"tagged", tags=["billing", "vip"])
        latest = await c.query(box, key="state")
        assert [m.payload for m in latest] == [b"v2"]
        assert latest[0].key == "state"
        tagged = await c.query(box, tags=["vip"])
        assert [m.payload for m in tagged] == [b"tagged"]
        assert await c.delete(box, tagged[0].msg_id) is True
        assert await c.query(box, tags=["vip"]) == []


async def test_delayed_send_returns_minus_one(sdk_broker):
    async with Client(sdk_broker.nats_url) as c:
        box = await c.create_mailbox("delayed.box")
        assert await c.send(box, b"later", delay=30) == -1
        assert await c.fetch(box, deliver="earliest", max_wait_ms=50) == []


async def test_fetch_waits_for_a_message_that_arrives(sdk_broker):
    async with Client(sdk_broker.nats_url) as c, Client(sdk_broker.nats_url) as sender:
        box = await c.create_mailbox("wait.box")
        # the broker holds the fetch before the message is sent (a PING after it came back)
        pending = await request_started(c.nc, c.fetch(box, group="w", deliver="earliest", max_wait_ms=5000))
        assert not pending.done()
        await sender.send(box, b"arrived")
        msgs = await pending
        assert [m.payload for m in msgs] == [b"arrived"]


async def test_mailbox_errors_are_typed(sdk_broker):
    async with Client(sdk_broker.nats_url) as c:
        await c.create_mailbox("dup.box")
        with pytest.raises(Conflict, match="already exists"):
            await c.create_mailbox("dup.box")
        with pytest.raises(BadRequest, match="lowercase"):
            await c.create_mailbox("Bad_Name")
        with pytest.raises(NotFound, match="does not exist"):
            await c.send("no.such.box", b"x")
        with pytest.raises(ValueError):
            await c.send("dup.box", b"x", priority="high")
