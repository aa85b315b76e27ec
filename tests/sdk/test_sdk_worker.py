"""The mailbox worker of ``@agent.on_message`` on the real broker: priorities, ACK, redelivery."""

from __future__ import annotations

import asyncio

from helpers.waits import wait_until
from mq9 import Agent, Client, Message


async def test_worker_handles_in_priority_order_and_redelivers_after_an_exception(sdk_broker):
    agent = Agent("desk", servers=sdk_broker.nats_url, mailbox="agent.desk.inbox")
    seen: list[tuple[int, str, bytes]] = []
    failures = {"urgent-1": 2}  # this message raises twice, then succeeds
    done = asyncio.Event()

    @agent.on_message()
    async def inbox(msg: Message) -> None:
        seen.append((msg.msg_id, msg.priority, msg.payload))
        left = failures.get(msg.text(), 0)
        if left:
            failures[msg.text()] = left - 1
            raise RuntimeError("not yet")
        if msg.text() == "last":
            done.set()

    async with Client(sdk_broker.nats_url) as c:
        await c.create_mailbox("agent.desk.inbox", ttl=0)
        # sent before the agent runs: the mailbox keeps them
        await c.send("agent.desk.inbox", b"normal-1")
        await c.send("agent.desk.inbox", b"urgent-1", priority="urgent")
        await c.send("agent.desk.inbox", b"critical-1", priority="critical")
        await c.send("agent.desk.inbox", b"normal-2")
        async with agent:
            await wait_until(lambda: len(seen) >= 6, 20, interval=0.02)
            await c.send("agent.desk.inbox", b"last")
            await asyncio.wait_for(done.wait(), 20)
        handled = [p.decode() for _, _, p in seen]
        assert handled[:6] == ["critical-1", "urgent-1", "urgent-1", "urgent-1", "normal-1", "normal-2"]
        assert handled[-1] == "last"
        assert agent.worker is not None and agent.worker.failed_count == 2
        # everything was acked: the group has nothing left
        assert await c.fetch("agent.desk.inbox", group="desk", num=10, max_wait_ms=50) == []


async def test_worker_drops_a_message_after_max_attempts_and_goes_on(sdk_broker):
    agent = Agent("fragile", servers=sdk_broker.nats_url)
    seen: list[str] = []

    @agent.on_message(max_attempts=2)
    def inbox(msg: Message) -> None:  # a sync handler runs in a worker thread
        seen.append(msg.text())
        if msg.text() == "poison":
            raise ValueError("cannot handle")

    async with Client(sdk_broker.nats_url) as c:
        async with agent:
            # the mailbox comes from the registration
            await c.send(agent.mailbox, b"poison")
            await c.send(agent.mailbox, b"fine")
            await wait_until(lambda: "fine" in seen, 20, interval=0.02)
        assert seen == ["poison", "poison", "fine"]
        assert agent.mailbox == "agent.fragile.inbox"
