"""Tasks survive a broker restart: GET and EVENTS answer, in-flight tasks are dispatched again."""

from __future__ import annotations

import json

import httpx
import nats
from helpers.agents import API, Agent, call
from helpers.waits import wait_for, wait_until

from robustmq.agents.api.limits import TASK_STREAM


async def journalled(broker, task_id: str, event_type: str) -> bool:
    """Whether the task stream holds, committed, an event of ``event_type`` for ``task_id``."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}") as http:
        r = await http.get(f"/api/v1/streams/{TASK_STREAM}/messages", params={"limit": 1000})
    assert r.status_code == 200, r.text
    for message in r.json()["items"]:
        batch = json.loads(message["payload"])
        for record in batch if isinstance(batch, list) else [batch]:
            if record.get("k") == "ev" and record.get("t") == task_id and record.get("type") == event_type:
                return True
    return False


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
    # records become readable once committed: kill the broker only after the last one is
    await wait_until(lambda: journalled(first, in_flight["task_id"], "progress"))
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
    task = await wait_for(
        lambda: call(nc, API + f"TASK.GET.{in_flight['task_id']}"),
        lambda t: t["task"]["state"] == "completed",
    )
    assert task["task"]["output"] == "again"
    events = await call(nc, API + f"TASK.EVENTS.{in_flight['task_id']}", {"after_seq": 0})
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    await revived.close()
    await nc.close()


async def test_every_accepted_async_task_id_survives_a_sigkill_right_after_its_reply(
    broker_factory, tmp_path
):
    data_dir = tmp_path / "data"
    first = broker_factory(data_dir=data_dir)
    nc = await nats.connect(first.nats_url)
    slow = await Agent(first.nats_url, "slow", hold=True).start()
    body = {"input": "kept", "mode": "async", "timeout_ms": 60000, "on_offline": "queue"}
    accepted = []
    for _ in range(30):
        reply = await call(nc, API + "AGENT.INVOKE.slow", body)
        assert reply["error"] == "", reply
        accepted.append(reply["task_id"])
    first.kill()  # at once: nothing but the replies says the tasks were stored
    for client in (nc, slow.nc):
        await client.close()

    second = broker_factory(data_dir=data_dir)
    nc = await nats.connect(second.nats_url)
    for task_id in accepted:
        got = await call(nc, API + f"TASK.GET.{task_id}")
        assert got["error"] == "", (task_id, got)
    # in flight before the kill: dispatched again to the next instance
    revived = await Agent(second.nats_url, "slow").start()
    await wait_until(lambda: len(revived.received) == len(accepted), timeout=20)
    await revived.close()
    await nc.close()
