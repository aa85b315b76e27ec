"""Tasks survive a broker restart: GET and EVENTS answer, in-flight tasks are dispatched again."""

from __future__ import annotations

import asyncio

import nats
from helpers.agents import API, Agent, call
from helpers.waits import wait_until


async def test_tasks_survive_a_sigkill_and_in_flight_work_is_dispatched_again(broker_factory, tmp_path):
    data_dir = tmp_path / "data"
    first = broker_factory(data_dir=data_dir)
    nc = await nats.connect(first.nats_url)
    quick = await Agent(first.nats_url, "quick").start()
    done = await call(nc, API + "AGENT.INVOKE.quick", {"input": "kept"})
    assert done["state"] == "completed"
    slow = await Agent(first.nats_url, "slow", hold=True).start()
    in_flight = await call(
        nc, API + "AGENT.INVOKE.slow", {"input": "again", "mode": "async", "timeout_ms": 60000}
    )
    expiring = await call(
        nc, API + "AGENT.INVOKE.slow", {"input": "late", "mode": "async", "timeout_ms": 300}
    )
    await wait_until(lambda: len(slow.received) == 1)
    await slow.event(in_flight["task_id"], "progress", {"pct": 10})
    await slow.nc.flush()
    await asyncio.sleep(0.3)  # the store commits within milliseconds; leave it time to write
    first.kill()
    for client in (nc, quick.nc, slow.nc):
        await client.close()

    second = broker_factory(data_dir=data_dir)
    nc = await nats.connect(second.nats_url)
    kept = await call(nc, API + f"TASK.GET.{done['task_id']}")
    assert kept["task"]["state"] == "completed"
    assert kept["task"]["output"] == "kept"
    history = await call(nc, API + f"TASK.EVENTS.{in_flight['task_id']}", {"after_seq": 0})
    assert "progress" in [e["type"] for e in history["events"]]
    info = await call(nc, API + "AGENT.INFO.slow")
    assert info["agent"]["status"] == "down"
    late = await call(nc, API + f"TASK.GET.{expiring['task_id']}")
    assert late["task"]["state"] == "failed"

    revived = await Agent(second.nats_url, "slow").start()
    await wait_until(lambda: len(revived.received) == 1)
    assert revived.received[0]["task_id"] == in_flight["task_id"]
    for _ in range(200):
        task = await call(nc, API + f"TASK.GET.{in_flight['task_id']}")
        if task["task"]["state"] == "completed":
            break
        await asyncio.sleep(0.02)
    assert task["task"]["state"] == "completed"
    assert task["task"]["output"] == "again"
    events = await call(nc, API + f"TASK.EVENTS.{in_flight['task_id']}", {"after_seq": 0})
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    await revived.close()
    await nc.close()
