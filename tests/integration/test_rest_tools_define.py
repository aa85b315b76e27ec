"""Tool definitions over the control plane and TOOL.DEREGISTER over NATS, against a real broker:
a tool defined first is down until an instance registers, deleting removes it and its instances."""

from __future__ import annotations

import httpx
import nats
import pytest
from helpers.agents import API, call
from helpers.tools import Tool
from helpers.users import USERS
from helpers.waits import wait_for

ADDER = {
    "name": "adder",
    "description": "adds two integers",
    "input_schema": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
    "output_schema": {"type": "integer"},
    "max_concurrency": 2,
}


def http(broker, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}", timeout=15, **kwargs)


def add(arguments: dict) -> int:
    return arguments["a"] + arguments["b"]


async def test_a_defined_tool_is_down_until_an_instance_registers_and_then_serves(broker):
    async with http(broker) as c:
        r = await c.post("/api/v1/tools", json=ADDER)
        assert r.status_code == 201, r.text
        tool = r.json()
        assert tool["status"] == "down" and tool["live_instances"] == 0
        assert tool["max_concurrency"] == 2 and tool["output_schema"] == {"type": "integer"}
        assert (await c.get("/api/v1/tools/adder")).json()["status"] == "down"
        assert [t["name"] for t in (await c.get("/api/v1/tools")).json()["items"]] == ["adder"]
        r = await c.post("/api/v1/tools/adder/invoke", json={"arguments": {"a": 1, "b": 2}})
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        # arguments are checked against the defined schema before anything else
        r = await c.post("/api/v1/tools/adder/invoke", json={"arguments": {"a": "x"}})
        assert r.status_code == 400
        instance = await Tool(broker.nats_url, "adder", add).start(
            ADDER["description"], ADDER["input_schema"], output_schema={"type": "integer"}
        )
        try:
            assert (await c.get("/api/v1/tools/adder")).json()["live_instances"] == 1
            r = await c.post("/api/v1/tools/adder/invoke", json={"arguments": {"a": 1, "b": 2}})
            assert r.status_code == 200 and r.json()["result"] == 3
        finally:
            await instance.close()


async def test_delete_removes_the_definition_and_deregisters_its_instances(broker):
    instance = await Tool(broker.nats_url, "adder", add).start(ADDER["description"], ADDER["input_schema"])
    try:
        async with http(broker) as c:
            r = await c.delete("/api/v1/tools/adder")
            assert r.status_code == 200 and r.json() == {"name": "adder", "removed_instances": 1}
            assert (await c.get("/api/v1/tools/adder")).status_code == 404
            assert (await c.get("/api/v1/tools")).json()["items"] == []
            r = await c.post("/api/v1/tools/adder/invoke", json={"arguments": {"a": 1, "b": 2}})
            assert r.status_code == 404
            r = await c.delete("/api/v1/tools/adder")
            assert r.status_code == 404 and r.json()["detail"] == "tool adder not found"
        # the removed instance hears of it at its next heartbeat, and may register again
        beat = await call(
            instance.nc, API + "TOOL.HEARTBEAT.adder", {"instance_id": instance.reg["instance_id"]}
        )
        assert beat["code"] == 404
        again = await call(
            instance.nc, API + "TOOL.REGISTER", {"name": "adder", "input_schema": {"type": "object"}}
        )
        assert again["error"] == ""
    finally:
        await instance.close()


async def test_a_queued_call_to_a_defined_tool_is_served_by_the_first_instance(broker):
    async with http(broker) as c:
        assert (await c.post("/api/v1/tools", json=ADDER)).status_code == 201
        body = {"arguments": {"a": 20, "b": 22}, "mode": "async", "on_offline": "queue", "timeout_ms": 30000}
        r = await c.post("/api/v1/tools/adder/invoke", json=body)
        assert r.status_code == 202
        task_url = r.headers["location"]
        instance = await Tool(broker.nats_url, "adder", add).start(
            ADDER["description"], ADDER["input_schema"]
        )
        try:

            async def task() -> dict:
                return (await c.get(task_url)).json()

            done = await wait_for(task, lambda t: t["state"] == "completed")
            assert done["output"] == 42
        finally:
            await instance.close()


async def test_deleting_a_tool_ends_the_calls_queued_for_it(broker):
    async with http(broker) as c:
        assert (await c.post("/api/v1/tools", json=ADDER)).status_code == 201
        body = {"arguments": {"a": 1, "b": 1}, "mode": "async", "on_offline": "queue", "timeout_ms": 60000}
        task_url = (await c.post("/api/v1/tools/adder/invoke", json=body)).headers["location"]
        assert (await c.get(task_url)).json()["state"] == "submitted"
        r = await c.delete("/api/v1/tools/adder")
        assert r.json() == {"name": "adder", "removed_instances": 0}
        task = (await c.get(task_url)).json()
        assert task["state"] == "rejected" and task["error"] == "tool adder not found"


async def test_define_refuses_invalid_schemas_and_requests_with_problems(broker):
    async with http(broker) as c:
        r = await c.post("/api/v1/tools", json={"name": "bad", "input_schema": {"type": "no-such-type"}})
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["detail"] == "invalid request: input_schema is not a valid JSON Schema"
        assert body["details"][0]["path"] == "$.input_schema"
        r = await c.post(
            "/api/v1/tools",
            json={"name": "bad", "input_schema": {"type": "object"}, "output_schema": {"minimum": "x"}},
        )
        assert r.status_code == 400 and r.json()["details"][0]["path"] == "$.output_schema"
        assert (await c.post("/api/v1/tools", json={"name": "bad"})).status_code == 400
        r = await c.post("/api/v1/tools", json={"name": "bad name", "input_schema": {}})
        assert r.status_code == 400
        r = await c.post("/api/v1/tools", json={"name": "bad", "input_schema": {}, "max_concurrency": 0})
        assert r.status_code == 400
        assert (await c.get("/api/v1/tools")).json()["items"] == []
        assert (await c.delete("/api/v1/tools/never")).status_code == 404


async def test_tool_deregister_over_nats_removes_one_instance_or_the_whole_tool(broker):
    first = await Tool(broker.nats_url, "echo").start()
    second = await Tool(broker.nats_url, "echo").start()
    nc = await nats.connect(broker.nats_url)
    try:
        one = await call(nc, API + "TOOL.DEREGISTER.echo", {"instance_id": first.reg["instance_id"]})
        assert one == {"error": "", "name": "echo", "removed_instances": 1}
        listed = (await call(nc, API + "TOOL.LIST", {}))["tools"]
        assert [(t["name"], t["live_instances"]) for t in listed] == [("echo", 1)]
        missing = await call(nc, API + "TOOL.DEREGISTER.echo", {"instance_id": "nope"})
        assert missing["code"] == 404
        whole = await call(nc, API + "TOOL.DEREGISTER.echo", {})
        assert whole == {"error": "", "name": "echo", "removed_instances": 1}
        assert (await call(nc, API + "TOOL.LIST", {}))["tools"] == []
        assert (await call(nc, API + "TOOL.DEREGISTER.echo", {}))["code"] == 404
    finally:
        for conn in (first, second):
            await conn.close()
        await nc.close()


async def test_definitions_and_deletions_survive_a_restart(broker_factory, tmp_path):
    data = tmp_path / "data"
    b1 = broker_factory(data_dir=data)
    async with http(b1) as c:
        assert (await c.post("/api/v1/tools", json=ADDER)).status_code == 201
        assert (await c.post("/api/v1/tools", json={**ADDER, "name": "gone"})).status_code == 201
        assert (await c.delete("/api/v1/tools/gone")).status_code == 200
    b1.stop()
    b2 = broker_factory(data_dir=data)
    async with http(b2) as c:
        items = (await c.get("/api/v1/tools")).json()["items"]
        assert [(t["name"], t["status"], t["max_concurrency"]) for t in items] == [("adder", "down", 2)]


@pytest.fixture
def secured(broker_factory, tmp_path):
    config = tmp_path / "robustmq.toml"
    config.write_text(USERS)
    return broker_factory("--config", str(config))


async def test_with_authentication_a_name_owned_over_nats_is_a_conflict_and_only_its_owner_deregisters(
    secured,
):
    alice = await Tool(secured.nats_url, "ledger", user="alice", password="alice-pw").start()
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    try:
        async with http(secured, auth=("carol", "carol-pw")) as c:
            r = await c.post("/api/v1/tools", json={"name": "ledger", "input_schema": {"type": "object"}})
            assert r.status_code == 409 and r.json()["detail"] == "tool ledger belongs to another user"
            # a definition made over REST is bound to its user, as a NATS registration is
            assert (await c.post("/api/v1/tools", json={**ADDER, "name": "carols"})).status_code == 201
        taken = await call(bob, API + "TOOL.REGISTER", {"name": "carols", "input_schema": {"type": "object"}})
        assert taken["code"] == 403
        assert (await call(bob, API + "TOOL.DEREGISTER.ledger", {}))["code"] == 403
        assert (await call(alice.nc, API + "TOOL.DEREGISTER.ledger", {}))["removed_instances"] == 1
    finally:
        await bob.close()
        await alice.close()
