"""Agents run from the shell (``python -m mq9 run``) in their own processes, sharing the load."""

from __future__ import annotations

import asyncio
import signal

import pytest
from helpers.waits import wait_for, wait_until
from mq9 import Client, NoLiveAgent

SHARED_AGENT = '''
import asyncio
import os

from mq9 import Agent

agent = Agent("sharer", description="Says which process served the call", max_concurrency=2)


@agent.skill
async def who(n: int) -> dict:
    """Which process am I."""
    await asyncio.sleep(0.05)
    return {"pid": os.getpid(), "n": n}
'''


async def wait_for_instances(c: Client, name: str, count: int, timeout_s: float = 30.0) -> None:
    async def enough() -> bool:
        try:
            status = await c.agent_status(name)
        except Exception:
            return False  # not registered yet
        return sum(1 for i in status["instances"] if i["status"] == "healthy") >= count

    await wait_until(enough, timeout_s, interval=0.1, what=f"{count} healthy instances of {name}")


async def test_two_agent_processes_share_the_load(sdk_broker, agent_processes):
    procs = [agent_processes(SHARED_AGENT, "shared_agent:agent", sdk_broker.nats_url) for _ in range(2)]
    async with Client(sdk_broker.nats_url) as c:
        await wait_for_instances(c, "sharer", 2)
        outs = await asyncio.gather(*(c.invoke("sharer", {"n": i}, timeout=20) for i in range(20)))
        assert sorted(o["n"] for o in outs) == list(range(20))
        pids = {o["pid"] for o in outs}
        assert pids == {p.pid for p in procs}
        # SIGTERM: each process finishes, deregisters and exits cleanly
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert await asyncio.to_thread(p.wait, 20) == 0
        with pytest.raises(NoLiveAgent):
            await c.invoke("sharer", {"n": 0})


SLOW_AGENT = '''
import asyncio
import os

from mq9 import Agent

agent = Agent("steady", description="Takes its time")


@agent.skill
async def slow(seconds: float) -> int:
    """Sleeps, then says which process finished."""
    await asyncio.sleep(seconds)
    return os.getpid()
'''


async def test_a_task_survives_the_death_of_its_instance_with_retries(sdk_broker, agent_processes):
    first = agent_processes(SLOW_AGENT, "slow_agent:agent", sdk_broker.nats_url)
    async with Client(sdk_broker.nats_url) as c:
        await wait_for_instances(c, "steady", 1)
        task = await c.invoke("steady", {"seconds": 2}, wait=False, retries=1, timeout=60)
        await wait_for(task.get, lambda t: t["state"] == "working", timeout=30, interval=0.05)
        second = agent_processes(SLOW_AGENT, "slow_agent:agent", sdk_broker.nats_url)
        await wait_for_instances(c, "steady", 2)
        first.kill()  # SIGKILL: no goodbye, the connection just drops
        assert await task.result(timeout=60) == second.pid
        types = [e.type for e in [e async for e in task.events()]]
        assert types.count("state") >= 3
