"""Pipelines across a broker crash: a run checkpointed after each step continues after SIGKILL."""

from __future__ import annotations

import nats
from helpers.agents import API, Agent, call
from helpers.pipelines import FnAgent, wait_state
from helpers.waits import wait_until


async def test_a_run_continues_after_sigkill_without_running_a_completed_step_again(broker_factory, tmp_path):
    data = tmp_path / "data"
    b1 = broker_factory(data_dir=data)
    nc = await nats.connect(b1.nats_url)
    first = await FnAgent(b1.nats_url, "first", lambda x: x + 1).start()
    second = await Agent(b1.nats_url, "second", hold=True).start()
    third = await FnAgent(b1.nats_url, "third", lambda x: x * 100).start()
    spec = {
        "name": "crash",
        "steps": [
            {"id": "a", "agent": "first"},
            {"id": "b", "agent": "second", "needs": ["a"]},
            {"id": "c", "agent": "third", "needs": ["b"]},
        ],
        "output": {"a": "$.steps.a.output", "c": "$.steps.c.output"},
    }
    assert (await call(nc, API + "PIPELINE.CREATE", spec))["error"] == ""
    started = await call(nc, API + "PIPELINE.RUN.crash", {"input": 1, "mode": "async"})
    run_id = started["run_id"]
    await wait_until(lambda: len(second.received) == 1)  # step a is done, b is with the agent
    assert second.received[0]["input"] == 2
    b1.kill()
    for conn in (first, second, third):
        await conn.close()
    await nc.close()

    b2 = broker_factory(data_dir=data)
    nc = await nats.connect(b2.nats_url)
    status = await call(nc, API + f"PIPELINE.STATUS.{run_id}")
    assert status["state"] == "running", status
    assert status["steps"]["a"] == {**status["steps"]["a"], "state": "completed", "output": 2}
    assert status["steps"]["b"]["state"] == "running"
    first2 = await FnAgent(b2.nats_url, "first", lambda x: x + 1).start()
    second2 = await FnAgent(b2.nats_url, "second", lambda x: x + 1).start()
    third2 = await FnAgent(b2.nats_url, "third", lambda x: x * 100).start()
    done = await wait_state(nc, run_id, {"completed", "failed"})
    assert done["state"] == "completed", done
    assert done["output"] == {"a": 2, "c": 300}
    assert first2.received == []  # step a was never run again
    assert len(first.received) == 1
    assert [r["input"] for r in second2.received] == [2]
    listing = await call(nc, API + "PIPELINE.GET.crash")
    assert listing["pipeline"]["name"] == "crash"
    for conn in (first2, second2, third2):
        await conn.close()
    await nc.close()


async def test_finished_runs_and_definitions_survive_a_restart(broker_factory, tmp_path):
    data = tmp_path / "data"
    b1 = broker_factory(data_dir=data)
    nc = await nats.connect(b1.nats_url)
    echo = await FnAgent(b1.nats_url, "echo", lambda x: x).start()
    await call(nc, API + "PIPELINE.CREATE", {"name": "keep", "steps": [{"id": "e", "agent": "echo"}]})
    reply = await call(nc, API + "PIPELINE.RUN.keep", {"input": {"v": 1}})
    assert reply["state"] == "completed"
    await echo.close()
    await nc.close()
    b1.stop()
    b2 = broker_factory(data_dir=data)
    nc = await nats.connect(b2.nats_url)
    status = await call(nc, API + f"PIPELINE.STATUS.{reply['run_id']}")
    assert status["state"] == "completed" and status["output"] == {"v": 1}
    assert [p["name"] for p in (await call(nc, API + "PIPELINE.LIST"))["pipelines"]] == ["keep"]
    await nc.close()
