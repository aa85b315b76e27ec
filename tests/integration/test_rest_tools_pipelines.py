"""Tools and pipelines over the control plane against a real broker, with a tool and an agent written
on nats-py: tool listing, schemas, discovery and calls (sync, async, bad arguments); pipelines
created, listed, read, run sync and async, their runs inspected and cancelled, and deleted."""

from __future__ import annotations

import json
from typing import Any

import httpx
import nats
from helpers.waits import wait_for

API = "$mq9.AI.API."
ADDER = {
    "name": "adder",
    "description": "adds two integers and returns their sum",
    "input_schema": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
    "output_schema": {"type": "integer"},
}


def http(broker) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}", timeout=15)


async def request(nc, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    return json.loads((await nc.request(subject, json.dumps(body).encode(), timeout=5)).data)


async def start_adder(url: str):
    nc = await nats.connect(url)
    reg = await request(nc, API + "TOOL.REGISTER", ADDER)
    assert reg["error"] == "", reg

    async def work(msg) -> None:
        data = json.loads(msg.data)
        if data.get("cancel"):
            return
        args = data["arguments"]
        await msg.respond(json.dumps({"result": args["a"] + args["b"]}).encode())

    await nc.subscribe(reg["serve_subject"], cb=work)
    await nc.flush()
    return nc


async def start_agent(url: str, name: str, *, hold: bool = False):
    """An agent that answers ``{"doubled": input * 2}``, or holds every task when ``hold``."""
    nc = await nats.connect(url)
    card = {"name": name, "description": "doubles numbers", "skills": [{"id": "double", "name": "double"}]}
    reg = await request(nc, API + "AGENT.REGISTER", card)
    assert reg["error"] == "", reg

    async def work(msg) -> None:
        data = json.loads(msg.data)
        if data.get("cancel") or hold:
            return
        await msg.respond(json.dumps({"output": data["input"] * 2}).encode())

    await nc.subscribe(reg["serve_subject"], cb=work)
    await nc.flush()
    return nc


async def test_tools_are_listed_called_and_checked_against_their_schemas(broker):
    nc = await start_adder(broker.nats_url)
    try:
        async with http(broker) as c:
            page = (await c.get("/api/v1/tools")).json()
            assert [t["name"] for t in page["items"]] == ["adder"]
            assert page["items"][0]["status"] == "healthy" and page["items"][0]["live_instances"] == 1
            tool = (await c.get("/api/v1/tools/adder")).json()
            assert tool["input_schema"]["required"] == ["a", "b"] and tool["output_schema"] == {
                "type": "integer"
            }
            assert (await c.get("/api/v1/tools/nothing")).status_code == 404
            assert (await c.get("/api/v1/tools", params={"status": "down"})).json()["items"] == []

            r = await c.post("/api/v1/tools/adder/invoke", json={"arguments": {"a": 2, "b": 3}})
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "completed" and r.json()["result"] == 5 and "error" not in r.json()

            r = await c.post(
                "/api/v1/tools/adder/invoke", json={"arguments": {"a": 20, "b": 22}, "mode": "async"}
            )
            assert r.status_code == 202
            task_id = r.json()["task_id"]

            async def task() -> dict:
                return (await c.get(f"/api/v1/tasks/{task_id}")).json()

            assert (await wait_for(task, lambda t: t["state"] == "completed"))["output"] == 42

            r = await c.post("/api/v1/tools/adder/invoke", json={"arguments": {"a": "two", "b": 3}})
            assert r.status_code == 400 and r.json()["details"], r.text
            assert (await c.post("/api/v1/tools/ghost/invoke", json={"arguments": {}})).status_code == 404
            assert (await c.post("/api/v1/tools/adder/invoke", json={"timeout_ms": -1})).status_code == 400

            found = (await c.post("/api/v1/tools/discover", json={"text": "sum of two integers"})).json()[
                "tools"
            ]
            assert found and found[0]["name"] == "adder"
    finally:
        await nc.close()


async def test_pipelines_are_created_run_inspected_and_deleted(broker):
    agent = await start_agent(broker.nats_url, "doubler")
    tool = await start_adder(broker.nats_url)
    try:
        async with http(broker) as c:
            definition = {
                "name": "double-then-add",
                "description": "doubles the input, then adds ten",
                "steps": [
                    {"id": "double", "agent": "doubler", "input": "$.input"},
                    {"id": "add", "tool": "adder", "input": {"a": "$.steps.double.output", "b": 10}},
                ],
            }
            r = await c.post("/api/v1/pipelines", json=definition)
            assert r.status_code == 201, r.text
            assert r.json()["name"] == "double-then-add" and r.json()["replaced"] is False
            assert (await c.post("/api/v1/pipelines", json=definition)).status_code == 409
            r = await c.post("/api/v1/pipelines", json={**definition, "replace": True})
            assert r.status_code == 201 and r.json()["replaced"] is True
            r = await c.post(
                "/api/v1/pipelines", json={"name": "broken", "steps": [{"id": "x", "agent": "nobody"}]}
            )
            assert r.status_code == 400 and r.json()["details"][0]["path"] == "$.steps[0].agent"

            listed = (await c.get("/api/v1/pipelines")).json()["items"]
            assert [(p["name"], p["steps"]) for p in listed] == [("double-then-add", 2)]
            spec = (await c.get("/api/v1/pipelines/double-then-add")).json()
            assert [s["id"] for s in spec["steps"]] == ["double", "add"]
            assert (await c.get("/api/v1/pipelines/nope")).status_code == 404

            r = await c.post("/api/v1/pipelines/double-then-add/run", json={"input": 16, "timeout_ms": 10000})
            assert r.status_code == 200, r.text
            run = r.json()
            assert run["state"] == "completed" and run["output"] == 42
            assert run["steps"]["double"]["output"] == 32 and run["steps"]["add"]["state"] == "completed"

            r = await c.post("/api/v1/pipelines/double-then-add/run", json={"input": 1, "mode": "async"})
            assert r.status_code == 202 and r.headers["location"] == f"/api/v1/runs/{r.json()['run_id']}"
            run_id = r.json()["run_id"]

            async def run_status() -> dict:
                return (await c.get(f"/api/v1/runs/{run_id}")).json()

            status = await wait_for(run_status, lambda s: s["state"] != "running")
            assert status["state"] == "completed" and status["output"] == 12
            runs = (await c.get("/api/v1/runs", params={"pipeline": "double-then-add"})).json()["items"]
            assert {x["run_id"] for x in runs} >= {run["run_id"], run_id}
            assert (await c.get("/api/v1/runs/no-such-run")).status_code == 404
            r = await c.post(f"/api/v1/runs/{run_id}/cancel")
            assert r.status_code == 409

            assert (await c.post("/api/v1/pipelines/nope/run", json={})).status_code == 404
            text = (await c.get("/metrics")).text
            assert 'robustmq_tools{status="healthy"} 1.0' in text
            assert (
                "robustmq_pipelines 1.0" in text and 'robustmq_pipeline_runs{state="completed"} 2.0' in text
            )

            r = await c.delete("/api/v1/pipelines/double-then-add")
            assert r.status_code == 200 and r.json() == {"name": "double-then-add", "deleted": True}
            assert (await c.delete("/api/v1/pipelines/double-then-add")).status_code == 404
    finally:
        await agent.close()
        await tool.close()


async def test_a_running_pipeline_can_be_cancelled(broker):
    agent = await start_agent(broker.nats_url, "sleeper", hold=True)
    try:
        async with http(broker) as c:
            definition = {"name": "slow", "steps": [{"id": "wait", "agent": "sleeper", "input": "$.input"}]}
            assert (await c.post("/api/v1/pipelines", json=definition)).status_code == 201
            r = await c.post(
                "/api/v1/pipelines/slow/run", json={"input": 1, "mode": "async", "timeout_ms": 60000}
            )
            run_id = r.json()["run_id"]
            r = await c.post(f"/api/v1/runs/{run_id}/cancel")
            assert r.status_code == 200 and r.json()["state"] == "canceled"
            assert (await c.get(f"/api/v1/runs/{run_id}")).json()["state"] == "canceled"
    finally:
        await agent.close()
