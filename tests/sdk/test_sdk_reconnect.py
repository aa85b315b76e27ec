"""An agent outlives a broker restart: nats-py reconnects and the agent registers again."""

from __future__ import annotations

from helpers.waits import wait_for, wait_until
from mq9 import Agent, Client


async def test_agent_registers_again_after_the_broker_restarts(broker_factory):
    first = broker_factory()
    port = first.ports["nats"]
    agent = Agent("phoenix", servers=first.nats_url, description="Comes back after a broker restart")

    @agent.skill
    async def hello(name: str) -> str:
        return f"hello {name}"

    async with agent:
        async with Client(first.nats_url) as c:
            assert await c.invoke("phoenix", {"name": "a"}) == "hello a"
        before = agent.instance_id
        first.stop()
        second = broker_factory("--nats-port", str(port))
        async with Client(second.nats_url) as c:
            await wait_until(lambda: agent.instance_id != before, 30, interval=0.05, what="registered again")
            await wait_for(lambda: c.agent_status("phoenix"), lambda s: s["status"] == "healthy", 30, 0.05)
            assert await c.invoke("phoenix", {"name": "b"}) == "hello b"
