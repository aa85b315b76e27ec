"""PIPELINE.CREATE validation over NATS: every kind of invalid definition is a 400 with details."""

from __future__ import annotations

from typing import Any

import nats
import pytest
from helpers.agents import API, Agent, call
from helpers.tools import Tool


@pytest.fixture
async def nc(broker):
    conn = await nats.connect(broker.nats_url)
    yield conn
    await conn.close()


@pytest.fixture
async def registered(broker):
    agent = await Agent(broker.nats_url, "known").start()
    tool = await Tool(broker.nats_url, "known-tool").start()
    yield
    await agent.close()
    await tool.close()


async def problems(nc, spec: Any) -> list[dict[str, str]]:
    reply = await call(nc, API + "PIPELINE.CREATE", spec)
    assert reply["code"] == 400, reply
    assert reply["error"].startswith("invalid")
    return reply.get("details") or [{"path": "$", "message": reply["error"]}]


def step(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "agent": "known", **fields}


CASES = [
    ("no target", {"name": "p", "steps": [{"id": "a"}]}, "$.steps[0]", "needs an agent, a tool or an intent"),
    ("two targets", {"name": "p", "steps": [step(tool="known-tool")]}, "$.steps[0]", "one target"),
    (
        "unknown agent",
        {"name": "p", "steps": [{"id": "a", "agent": "ghost"}]},
        "$.steps[0].agent",
        "unknown agent",
    ),
    (
        "unknown tool",
        {"name": "p", "steps": [{"id": "a", "tool": "ghost"}]},
        "$.steps[0].tool",
        "unknown tool",
    ),
    (
        "unknown need",
        {"name": "p", "steps": [step(needs=["zzz"])]},
        "$.steps[0].needs[0]",
        "unknown step 'zzz'",
    ),
    (
        "unknown step reference",
        {"name": "p", "steps": [step(input={"x": "$.steps.zzz.output"})]},
        "$.steps[0].input.x",
        "no step 'zzz'",
    ),
    (
        "unknown root",
        {"name": "p", "steps": [step(input="$.nowhere")]},
        "$.steps[0].input",
        "unknown reference",
    ),
    (
        "item outside for_each",
        {"name": "p", "steps": [step(input="$.item")]},
        "$.steps[0].input",
        "only in a for_each step",
    ),
    (
        "unknown reference in output",
        {"name": "p", "steps": [step()], "output": {"r": "$.steps.b.output"}},
        "$.output.r",
        "no step 'b'",
    ),
    (
        "cycle",
        {
            "name": "p",
            "steps": [
                step(needs=["c"]),
                {"id": "b", "agent": "known", "needs": ["a"]},
                {"id": "c", "agent": "known", "needs": ["b"]},
            ],
        },
        "$.steps",
        "cycle",
    ),
    (
        "cycle through a reference",
        {
            "name": "p",
            "steps": [step(input="$.steps.b.output"), {"id": "b", "agent": "known", "needs": ["a"]}],
        },
        "$.steps",
        "cycle",
    ),
    ("self need", {"name": "p", "steps": [step(needs=["a"])]}, "$.steps[0].needs[0]", "itself"),
    (
        "duplicate id",
        {"name": "p", "steps": [step(), step()]},
        "$.steps[1].id",
        "duplicate step id",
    ),
    ("bad on_error", {"name": "p", "steps": [step(on_error="retry")]}, "$.steps[0].on_error", "on_error is"),
    (
        "unknown fallback agent",
        {"name": "p", "steps": [step(on_error={"fallback": {"agent": "ghost"}})]},
        "$.steps[0].on_error.fallback.agent",
        "unknown agent",
    ),
    ("for_each literal", {"name": "p", "steps": [step(for_each=[1, 2])]}, "$.steps[0].for_each", "reference"),
    ("bad retries", {"name": "p", "steps": [step(retries=-1)]}, "$.steps[0].retries", "retries"),
    ("bad timeout", {"name": "p", "steps": [step(timeout_ms="soon")]}, "$.steps[0].timeout_ms", "timeout_ms"),
    ("unknown field", {"name": "p", "steps": [step(agnet="x")]}, "$.steps[0].agnet", "unknown step field"),
    ("no steps", {"name": "p", "steps": []}, "$.steps", "non-empty list"),
    ("bad name", {"name": "a b", "steps": [step()]}, "$.name", "name"),
    (
        "bad input_from",
        {"name": "p", "steps": [{"agent": "known", "input_from": "previous"}]},
        "$.steps[0].input_from",
        "input_from",
    ),
]


async def test_create_rejects_every_kind_of_invalid_pipeline(broker, nc, registered):
    for case, spec, path, message in CASES:
        found = await problems(nc, spec)
        assert any(p["path"] == path and message in p["message"] for p in found), (case, found)
    assert (await call(nc, API + "PIPELINE.LIST"))["pipelines"] == []


async def test_create_reports_every_problem_at_once(broker, nc, registered):
    found = await problems(
        nc, {"name": "p", "steps": [{"id": "a"}, {"id": "b", "agent": "ghost", "needs": ["nope"]}]}
    )
    assert {p["path"] for p in found} == {"$.steps[0]", "$.steps[1].agent", "$.steps[1].needs[0]"}


async def test_create_rejects_bodies_that_are_not_pipelines(broker, nc):
    assert (await call(nc, API + "PIPELINE.CREATE", b"[1, 2]"))["code"] == 400
    assert (await call(nc, API + "PIPELINE.CREATE", b"{not json"))["code"] == 400
    assert (await call(nc, API + "PIPELINE.CREATE", b""))["code"] == 400


async def test_an_existing_name_is_a_409_unless_replace(broker, nc, registered):
    first = await call(nc, API + "PIPELINE.CREATE", {"name": "p", "steps": [step()]})
    assert first["error"] == "" and first["replaced"] is False
    again = await call(nc, API + "PIPELINE.CREATE", {"name": "p", "steps": [step()]})
    assert again["code"] == 409
    replaced = await call(
        nc,
        API + "PIPELINE.CREATE",
        {"name": "p", "replace": True, "steps": [step(), {"id": "b", "tool": "known-tool"}]},
    )
    assert replaced["error"] == "" and replaced["replaced"] is True
    got = await call(nc, API + "PIPELINE.GET.p")
    assert [s["id"] for s in got["pipeline"]["steps"]] == ["a", "b"]
