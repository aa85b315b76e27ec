"""An agent outlives a broker restart: nats-py reconnects and the agent registers again."""

from __future__ import annotations

import asyncio

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
            async with asyncio.timeout(30):
                while agent.instance_id == before:
                    await asyncio.sleep(0.05)
                while True:
                    status = await c.agent_status("phoenix")
                    if status["status"] == "healthy":
                        break
                    await asyncio.sleep(0.05)
            assert await c.invoke("phoenix", {"name": "b"}) == "hello b"
