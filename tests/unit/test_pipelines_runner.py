"""The pipeline runner in-process: a Router, the agent API, the tool service and echo agents."""

from __future__ import annotations

import asyncio

import orjson
from helpers.agent_fakes import EchoInstance, FakeBroker, FakeConnection, card, request_as
from helpers.waits import wait_until

from robustmq.agents.api import AgentApiService
from robustmq.agents.api.journal import task_journal
from robustmq.agents.pipelines import PipelineService
from robustmq.agents.tools import ToolService

API = "$mq9.AI.API."


async def start():
    broker = FakeBroker()
    api = AgentApiService(broker.router, journal=task_journal(None))
    tools = ToolService(broker.router, api)
    pipelines = PipelineService(api, tools)
    for component in (api, tools, pipelines):
        await component.start()
    return broker, api, tools, pipelines


async def agent(router, name: str, **options) -> EchoInstance:
    conn = FakeConnection()
    reg = await request_as(router, conn, API + "AGENT.REGISTER", card(name))
    return EchoInstance(router, reg["serve_subject"], owner=conn, **options)


async def test_checkpoints_record_each_step_before_its_dependents_start():
    broker, api, tools, pipelines = await start()
    router = broker.router
    a = await agent(router, "a")
    b = await agent(router, "b")
    c = await agent(router, "c")
    spec = {
        "name": "diamond",
        "steps": [
            {"id": "x", "agent": "a"},
            {"id": "y", "agent": "b", "needs": ["x"]},
            {"id": "z", "agent": "c", "needs": ["x"]},
        ],
    }
    assert (await request_as(router, None, API + "PIPELINE.CREATE", spec))["error"] == ""
    reply = await request_as(router, None, API + "PIPELINE.RUN.diamond", {"input": {"n": 1}})
    assert reply["state"] == "completed"
    assert reply["output"] == {"y": {"n": 1}, "z": {"n": 1}}
    assert [len(i.received) for i in (a, b, c)] == [1, 1, 1]
    kinds = [
        (r["k"], r.get("step")) for r in pipelines.journal.run_records() if r.get("run_id") == reply["run_id"]
    ]
    assert kinds[0] == ("run", None) and kinds[-1] == ("end", None)
    assert kinds.index(("done", "x")) < kinds.index(("step", "y"))
    assert kinds.index(("done", "x")) < kinds.index(("step", "z"))
    # the Python API the control plane uses
    run = pipelines.run("diamond", {"n": 2})
    view = await pipelines.wait(run.id)
    assert view["state"] == "completed" and view["output"] == {"y": {"n": 2}, "z": {"n": 2}}
    assert pipelines.status(run.id)["state"] == "completed"
    assert [p["name"] for p in pipelines.pipelines()] == ["diamond"]
    for component in (pipelines, tools, api):
        await component.stop()


async def test_cancel_reaches_the_running_task_and_a_late_answer_changes_nothing():
    broker, api, tools, pipelines = await start()
    router = broker.router
    slow = await agent(router, "slow", hold=True)
    spec = {"name": "p", "steps": [{"id": "s", "agent": "slow"}]}
    await request_as(router, None, API + "PIPELINE.CREATE", spec)
    started = await request_as(router, None, API + "PIPELINE.RUN.p", {"mode": "async", "input": 1})
    await wait_until(lambda: slow.received, interval=0.001)
    task_id = slow.received[0]["task_id"]
    assert (await request_as(router, None, API + f"PIPELINE.CANCEL.{started['run_id']}"))[
        "state"
    ] == "canceled"
    assert slow.cancels == [task_id]
    slow.release()
    await asyncio.sleep(0)  # one loop turn: anything the late answer scheduled has run
    status = await request_as(router, None, API + f"PIPELINE.STATUS.{started['run_id']}")
    assert status["state"] == "canceled" and status["steps"]["s"]["state"] == "canceled"
    assert api.tasks.get(task_id).state == "canceled"
    for component in (pipelines, tools, api):
        await component.stop()


async def test_tool_call_arguments_are_checked_before_anything_is_sent():
    broker, api, tools, pipelines = await start()
    router = broker.router
    conn = FakeConnection()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    reg = await request_as(router, conn, API + "TOOL.REGISTER", {"name": "inc", "input_schema": schema})
    calls = []

    def serve(subject, reply, headers, payload):
        msg = orjson.loads(payload)
        calls.append(msg)
        router.publish(reply, orjson.dumps({"result": msg["arguments"]["n"] + 1}))

    router.subscribe(reg["serve_subject"], serve, owner=conn)
    ok = await request_as(router, None, API + "TOOL.INVOKE.inc", {"arguments": {"n": 1}})
    assert ok["result"] == 2 and ok["state"] == "completed"
    bad = await request_as(router, None, API + "TOOL.INVOKE.inc", {"arguments": {"n": "one"}})
    assert bad["code"] == 400 and bad["details"] == [
        {"path": "$.n", "message": "'one' is not of type 'integer'"}
    ]
    assert len(calls) == 1
    for component in (pipelines, tools, api):
        await component.stop()
