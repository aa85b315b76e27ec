"""Tools end to end: tool instances written directly on nats-py, schema checks in both directions."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from helpers.agents import API, call
from helpers.tools import Tool
from helpers.waits import wait_for, wait_until

KEYWORDS_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "the text to read"}},
    "required": ["text"],
    "additionalProperties": False,
}


def keywords(args: dict[str, Any]) -> list[str]:
    return sorted(set(args["text"].split()), key=lambda w: (-len(w), w))[:3]


@pytest.fixture
async def nc(broker):
    conn = await nats.connect(broker.nats_url)
    yield conn
    await conn.close()


async def test_register_then_invoke_returns_the_result_and_the_task(broker, nc):
    tool = await Tool(broker.nats_url, "keywords", keywords).start(
        "the longest words of a text",
        KEYWORDS_SCHEMA,
        output_schema={"type": "array", "items": {"type": "string"}},
    )
    assert tool.reg["serve_subject"] == f"$mq9.AI.TOOL.keywords.{tool.reg['instance_id']}"
    reply = await call(nc, API + "TOOL.INVOKE.keywords", {"arguments": {"text": "a quick brown fox"}})
    assert reply["error"] == ""
    assert reply["result"] == ["brown", "quick", "fox"]
    assert reply["latency_ms"] >= 0
    received = tool.received[0]
    assert received["arguments"] == {"text": "a quick brown fox"}
    assert received["task_id"] == reply["task_id"] and received["deadline_ms"] > 0
    task = await call(nc, API + f"TASK.GET.{reply['task_id']}")
    assert task["task"]["state"] == "completed"
    assert task["task"]["output"] == ["brown", "quick", "fox"]
    await tool.close()


async def test_arguments_violating_the_input_schema_are_a_400_and_never_forwarded(broker, nc):
    tool = await Tool(broker.nats_url, "keywords", keywords).start(input_schema=KEYWORDS_SCHEMA)
    reply = await call(nc, API + "TOOL.INVOKE.keywords", {"arguments": {"text": 3, "extra": True}})
    assert reply["code"] == 400
    paths = {d["path"] for d in reply["details"]}
    assert "$.text" in paths and "$" in paths
    assert all(d["message"] for d in reply["details"])
    missing = await call(nc, API + "TOOL.INVOKE.keywords", {"arguments": {}})
    assert missing["code"] == 400 and "'text' is a required property" in missing["details"][0]["message"]
    await nc.flush()
    assert tool.received == []
    await tool.close()


async def test_a_result_violating_the_output_schema_is_a_502(broker, nc):
    tool = await Tool(broker.nats_url, "counter", lambda args: "not a number").start(
        input_schema={"type": "object"}, output_schema={"type": "integer"}
    )
    reply = await call(nc, API + "TOOL.INVOKE.counter", {"arguments": {}})
    assert reply["code"] == 502
    assert reply["state"] == "failed"
    assert "output_schema" in reply["error"] and "not of type 'integer'" in reply["error"]
    assert len(tool.received) == 1
    await tool.close()


async def test_a_tool_error_is_a_502_and_an_unknown_tool_a_404(broker, nc):
    def broken(args: dict[str, Any]) -> Any:
        raise ValueError("disk full")

    tool = await Tool(broker.nats_url, "broken", broken).start()
    reply = await call(nc, API + "TOOL.INVOKE.broken", {"arguments": {}})
    assert reply["code"] == 502 and "disk full" in reply["error"]
    unknown = await call(nc, API + "TOOL.INVOKE.nothing", {"arguments": {}})
    assert unknown["code"] == 404
    await tool.close()


async def test_register_rejects_an_invalid_schema_with_details(broker, nc):
    reply = await call(nc, API + "TOOL.REGISTER", {"name": "bad", "input_schema": {"type": "nonsense"}})
    assert reply["code"] == 400
    assert reply["details"][0]["path"] == "$.input_schema"
    missing = await call(nc, API + "TOOL.REGISTER", {"name": "bad"})
    assert missing["code"] == 400 and "input_schema" in missing["error"]


async def test_list_shows_status_and_a_closed_connection_takes_the_tool_down(broker, nc):
    tool = await Tool(broker.nats_url, "clock", lambda a: 1).start("tells the time")
    listing = await call(nc, API + "TOOL.LIST")
    (info,) = [t for t in listing["tools"] if t["name"] == "clock"]
    assert info["status"] == "healthy" and info["description"] == "tells the time"
    assert info["input_schema"] == {"type": "object"}
    await tool.close()

    async def down() -> bool:
        tools = (await call(nc, API + "TOOL.LIST"))["tools"]
        return [t["status"] for t in tools if t["name"] == "clock"] == ["down"]

    await wait_until(down)
    reply = await call(nc, API + "TOOL.INVOKE.clock", {"arguments": {}})
    assert reply["code"] == 503 and reply["state"] == "rejected"


async def test_heartbeats_keep_an_instance_and_unknown_instances_get_404(broker, nc):
    tool = await Tool(broker.nats_url, "beat", lambda a: 1).start(heartbeat_interval_ms=100)
    beat = await call(nc, API + "TOOL.HEARTBEAT.beat", {"instance_id": tool.reg["instance_id"]})
    assert beat == {"error": "", "status": "healthy"}
    unknown = await call(nc, API + "TOOL.HEARTBEAT.beat", {"instance_id": "nope"})
    assert unknown["code"] == 404
    # no more heartbeats: after three missed intervals the instance is down
    await wait_for(
        lambda: call(nc, API + "TOOL.LIST"),
        lambda listing: [t["status"] for t in listing["tools"] if t["name"] == "beat"] == ["down"],
    )
    late = await call(nc, API + "TOOL.HEARTBEAT.beat", {"instance_id": tool.reg["instance_id"]})
    assert late["code"] == 404
    await tool.close()


async def test_two_instances_share_calls(broker, nc):
    a = await Tool(broker.nats_url, "double", lambda x: x["n"] * 2).start(max_concurrency=2)
    b = await Tool(broker.nats_url, "double", lambda x: x["n"] * 2).start(max_concurrency=2)
    replies = await asyncio.gather(
        *(call(nc, API + "TOOL.INVOKE.double", {"arguments": {"n": i}}) for i in range(20))
    )
    assert sorted(r["result"] for r in replies) == [2 * i for i in range(20)]
    assert a.received and b.received
    await a.close()
    await b.close()


async def test_cancel_of_a_tool_call_tells_the_instance(broker, nc):
    tool = await Tool(broker.nats_url, "slow", hold=True).start()
    started = await call(nc, API + "TOOL.INVOKE.slow", {"arguments": {"x": 1}, "mode": "async"})
    assert started["state"] == "submitted"
    await wait_until(lambda: len(tool.received) == 1)
    canceled = await call(nc, API + f"TASK.CANCEL.{started['task_id']}")
    assert canceled["state"] == "canceled"
    await wait_until(lambda: tool.cancels == [started["task_id"]])
    await tool.release()  # a late answer changes nothing
    await nc.flush()
    task = await call(nc, API + f"TASK.GET.{started['task_id']}")
    assert task["task"]["state"] == "canceled"
    await tool.close()


async def test_discover_finds_tools_by_meaning(broker, nc):
    tools = [
        await Tool(broker.nats_url, "weather-lookup").start(
            "current temperature, rain and wind forecast for a city",
            {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}}},
        ),
        await Tool(broker.nats_url, "currency-convert").start(
            "convert an amount of money between currencies at today's exchange rate"
        ),
        await Tool(broker.nats_url, "pdf-extract").start("extract the text of a PDF document"),
    ]
    found = await call(
        nc, API + "TOOL.DISCOVER", {"semantic": "will it be sunny in Paris tomorrow", "limit": 2}
    )
    assert found["error"] == ""
    assert found["tools"][0]["name"] == "weather-lookup"
    assert found["tools"][0]["score"] >= found["tools"][-1]["score"]
    assert found["tools"][0]["status"] == "healthy"
    money = await call(nc, API + "TOOL.DISCOVER", {"semantic": "how many yen is one hundred dollars"})
    assert money["tools"][0]["name"] == "currency-convert"
    text = await call(nc, API + "TOOL.DISCOVER", {"text": "PDF"})
    assert [t["name"] for t in text["tools"]] == ["pdf-extract"]
    for t in tools:
        await t.close()


async def test_tools_survive_a_restart_and_instances_register_again(broker_factory, tmp_path):
    b = broker_factory(data_dir=tmp_path / "d")
    tool = await Tool(b.nats_url, "keywords", keywords).start("keywords", KEYWORDS_SCHEMA)
    await tool.close()
    b.kill()
    b2 = broker_factory(data_dir=tmp_path / "d")
    nc = await nats.connect(b2.nats_url)
    listing = await call(nc, API + "TOOL.LIST")
    assert [(t["name"], t["status"]) for t in listing["tools"]] == [("keywords", "down")]
    bad = await call(nc, API + "TOOL.INVOKE.keywords", {"arguments": {}})
    assert bad["code"] == 400  # the schema was kept
    again = await Tool(b2.nats_url, "keywords", keywords).start("keywords", KEYWORDS_SCHEMA)
    ok = await call(nc, API + "TOOL.INVOKE.keywords", {"arguments": {"text": "x yy"}})
    assert ok["result"] == ["yy", "x"]
    await again.close()
    await nc.close()
