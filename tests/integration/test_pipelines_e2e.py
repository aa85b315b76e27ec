"""Pipelines end to end: agents and tools on nats-py, runs driven by the broker."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from helpers.agents import API, Agent, call, card
from helpers.pipelines import FnAgent, create, run
from helpers.tools import Tool
from helpers.waits import wait_until


@pytest.fixture
async def nc(broker):
    conn = await nats.connect(broker.nats_url)
    yield conn
    await conn.close()


async def test_the_issue_example_translate_then_summarise_and_keywords(broker, nc):
    translator = await FnAgent(broker.nats_url, "translator", lambda x: x["text"].upper()).start()
    summarizer = await FnAgent(broker.nats_url, "summarizer", lambda x: x[:5]).start()
    kw = await Tool(broker.nats_url, "keywords", lambda a: a["text"].split()).start(
        "split a text into words", {"type": "object", "required": ["text"]}
    )
    await create(
        nc,
        {
            "name": "translate-and-summarize",
            "steps": [
                {"id": "t", "agent": "translator", "skill": "translate", "input": "$.input"},
                {"id": "s", "agent": "summarizer", "input": "$.steps.t.output", "needs": ["t"]},
                {"id": "k", "tool": "keywords", "input": {"text": "$.steps.t.output"}, "needs": ["t"]},
            ],
            "output": {"summary": "$.steps.s.output", "keywords": "$.steps.k.output"},
        },
    )
    reply = await run(nc, "translate-and-summarize", {"text": "hello big world"})
    assert reply["error"] == "" and reply["state"] == "completed"
    assert reply["output"] == {"summary": "HELLO", "keywords": ["HELLO", "BIG", "WORLD"]}
    assert set(reply["steps"]) == {"t", "s", "k"}
    for step in reply["steps"].values():
        assert step["state"] == "completed" and step["task_id"] and step["latency_ms"] >= 0
    assert reply["steps"]["t"]["output"] == "HELLO BIG WORLD"
    assert reply["latency_ms"] >= 0
    assert translator.received[0]["skill"] == "translate"
    # every step is a task of the agent API
    task = await call(nc, API + f"TASK.GET.{reply['steps']['s']['task_id']}")
    assert task["task"]["agent"] == "summarizer" and task["task"]["output"] == "HELLO"
    status = await call(nc, API + f"PIPELINE.STATUS.{reply['run_id']}")
    assert status["state"] == "completed" and status["output"] == reply["output"]
    for a in (translator, summarizer, kw):
        await a.close()


async def test_sequential_steps_pass_outputs_along(broker, nc):
    inc = await FnAgent(broker.nats_url, "inc", lambda x: x + 1).start()
    await create(
        nc,
        {
            "name": "chain",
            "steps": [
                {"id": "a", "agent": "inc"},
                {"id": "b", "agent": "inc", "needs": ["a"]},
                {"id": "c", "agent": "inc", "input": "$.steps.b.output"},
            ],
        },
    )
    reply = await run(nc, "chain", 1)
    assert reply["output"] == 4
    assert [r["input"] for r in inc.received] == [1, 2, 3]
    await inc.close()


async def test_parallel_fan_out_and_fan_in(broker, nc):
    src = await FnAgent(broker.nats_url, "src", lambda x: x * 10).start()
    left = await FnAgent(broker.nats_url, "left", lambda x: x + 1, hold=True).start()
    right = await FnAgent(broker.nats_url, "right", lambda x: x + 2, hold=True).start()
    join = await FnAgent(broker.nats_url, "join", lambda x: x["l"] + x["r"]).start()
    await create(
        nc,
        {
            "name": "diamond",
            "steps": [
                {"id": "s", "agent": "src"},
                {"id": "l", "agent": "left", "needs": ["s"]},
                {"id": "r", "agent": "right", "needs": ["s"]},
                {"id": "j", "agent": "join", "input": {"l": "$.steps.l.output", "r": "$.steps.r.output"}},
            ],
        },
    )
    pending = asyncio.ensure_future(run(nc, "diamond", 1))
    # both branches are running at the same time, before either has answered
    await wait_until(lambda: len(left.received) == 1 and len(right.received) == 1)
    assert join.received == []
    await left.release()
    await right.release()
    reply = await pending
    assert reply["output"] == 11 + 12
    assert join.received[0]["input"] == {"l": 11, "r": 12}
    for a in (src, left, right, join):
        await a.close()


async def test_for_each_runs_items_in_parallel_and_keeps_their_order(broker, nc):
    square = await FnAgent(broker.nats_url, "square", lambda x: x["n"] ** 2).start(max_concurrency=4)
    await create(
        nc,
        {
            "name": "squares",
            "steps": [
                {
                    "id": "sq",
                    "agent": "square",
                    "for_each": "$.input.numbers",
                    "input": {"n": "$.item", "i": "$.index"},
                }
            ],
            "output": {"squares": "$.steps.sq.output"},
        },
    )
    reply = await run(nc, "squares", {"numbers": [3, 1, 4, 1, 5]})
    assert reply["output"] == {"squares": [9, 1, 16, 1, 25]}
    assert sorted(r["input"]["i"] for r in square.received) == [0, 1, 2, 3, 4]
    assert len(reply["steps"]["sq"]["task_ids"]) == 5
    bad = await run(nc, "squares", {"numbers": "nope"})
    assert bad["state"] == "failed" and bad["error"].startswith("step sq: for_each")
    await square.close()


async def test_on_error_fail_stops_the_run_with_the_steps_so_far(broker, nc):
    ok = await FnAgent(broker.nats_url, "ok", lambda x: "fine").start()
    boom = await Agent(broker.nats_url, "boom", fail="exploded").start()
    after = await FnAgent(broker.nats_url, "after", lambda x: x).start()
    await create(
        nc,
        {
            "name": "fails",
            "steps": [
                {"id": "a", "agent": "ok"},
                {"id": "b", "agent": "boom", "needs": ["a"]},
                {"id": "c", "agent": "after", "needs": ["b"]},
            ],
        },
    )
    reply = await run(nc, "fails", "x")
    assert reply["state"] == "failed"
    assert reply["error"] == "step b: agent error: exploded"
    assert reply["code"] == 502
    assert reply["steps"]["a"]["state"] == "completed"
    assert reply["steps"]["b"]["state"] == "failed"
    assert "c" not in reply["steps"]
    assert after.received == []
    for a in (ok, boom, after):
        await a.close()


async def test_on_error_skip_goes_on_without_the_output(broker, nc):
    boom = await Agent(broker.nats_url, "boom", fail="nope").start()
    after = await FnAgent(broker.nats_url, "after", lambda x: {"got": x}).start()
    await create(
        nc,
        {
            "name": "skips",
            "steps": [
                {"id": "a", "agent": "boom", "on_error": "skip"},
                {"id": "b", "agent": "after", "input": {"prev": "$.steps.a.output", "in": "$.input"}},
            ],
        },
    )
    reply = await run(nc, "skips", 7)
    assert reply["state"] == "completed"
    assert reply["steps"]["a"]["state"] == "skipped"
    assert reply["output"] == {"got": {"prev": None, "in": 7}}
    await boom.close()
    await after.close()


async def test_on_error_fallback_to_an_agent(broker, nc):
    flaky = await Agent(broker.nats_url, "primary", fail="overloaded").start()
    backup = await FnAgent(broker.nats_url, "backup", lambda x: f"backup:{x}").start()
    await create(
        nc,
        {
            "name": "fallback",
            "steps": [{"id": "a", "agent": "primary", "on_error": {"fallback": {"agent": "backup"}}}],
        },
    )
    reply = await run(nc, "fallback", "job")
    assert reply["state"] == "completed" and reply["output"] == "backup:job"
    assert len(reply["steps"]["a"]["task_ids"]) == 2
    # a primary that is down fails fast (503) and falls back as well
    await flaky.close()
    again = await run(nc, "fallback", "job2")
    assert again["output"] == "backup:job2"
    await backup.close()


async def test_on_error_fallback_by_intent(broker, nc):
    primary = await Agent(broker.nats_url, "fr-primary", fail="quota exceeded").start()
    translator = await FnAgent(broker.nats_url, "french-translator", lambda x: f"fr({x})").start(
        card(
            "french-translator",
            "translates English text into French",
            [
                {
                    "id": "translate",
                    "name": "translate",
                    "description": "translate text to French",
                    "tags": ["translation", "french"],
                }
            ],
        )
    )
    weather = await FnAgent(broker.nats_url, "weather", lambda x: "sunny").start(
        card(
            "weather",
            "weather forecasts for cities",
            [
                {
                    "id": "forecast",
                    "name": "forecast",
                    "description": "tomorrow's weather",
                    "tags": ["weather"],
                }
            ],
        )
    )
    await create(
        nc,
        {
            "name": "by-intent",
            "steps": [
                {
                    "id": "t",
                    "agent": "fr-primary",
                    "on_error": {"fallback": {"intent": "translate this text into French"}},
                }
            ],
        },
    )
    reply = await run(nc, "by-intent", "hello")
    assert reply["state"] == "completed" and reply["output"] == "fr(hello)"
    task = await call(nc, API + f"TASK.GET.{reply['steps']['t']['task_id']}")
    assert task["task"]["agent"] == "french-translator"
    assert weather.received == []
    for a in (primary, translator, weather):
        await a.close()


async def test_intent_step_is_routed_by_discovery(broker, nc):
    sums = await FnAgent(broker.nats_url, "summarizer", lambda x: x[:3]).start(
        card(
            "summarizer",
            "summarises long articles in one sentence",
            [
                {
                    "id": "summarize",
                    "name": "summarize",
                    "description": "short summary of a text",
                    "tags": ["summary"],
                }
            ],
        )
    )
    await create(
        nc, {"name": "intent", "steps": [{"id": "s", "intent": "give me a short summary of this article"}]}
    )
    reply = await run(nc, "intent", "abcdef")
    assert reply["output"] == "abc"
    await sums.close()


async def test_retries_run_a_failing_step_again(broker, nc):
    attempts: list[Any] = []

    def third_time_lucky(x: Any) -> Any:
        attempts.append(x)
        if len(attempts) < 3:
            raise RuntimeError(f"attempt {len(attempts)} failed")
        return "done"

    agent = await FnAgent(broker.nats_url, "flaky", third_time_lucky).start()
    await create(nc, {"name": "retry", "steps": [{"id": "f", "agent": "flaky", "retries": 2}]})
    reply = await run(nc, "retry", 1)
    assert reply["state"] == "completed" and reply["output"] == "done"
    assert len(attempts) == 3
    assert len(reply["steps"]["f"]["task_ids"]) == 3
    attempts.clear()
    await create(
        nc, {"name": "retry", "replace": True, "steps": [{"id": "f", "agent": "flaky", "retries": 1}]}
    )
    failed = await run(nc, "retry", 1)
    assert failed["state"] == "failed" and failed["error"] == "step f: agent error: attempt 2 failed"
    await agent.close()


async def test_step_timeout_and_run_deadline(broker, nc):
    slow = await Agent(broker.nats_url, "slow", hold=True).start(max_concurrency=5)
    await create(nc, {"name": "step-timeout", "steps": [{"id": "w", "agent": "slow", "timeout_ms": 200}]})
    reply = await run(nc, "step-timeout", 1)
    assert reply["state"] == "failed" and reply["code"] == 408
    assert reply["error"] == "step w: deadline exceeded"
    # the run's own deadline bounds every step, whatever the step's timeout says
    await create(nc, {"name": "run-deadline", "steps": [{"id": "w", "agent": "slow", "timeout_ms": 600000}]})
    reply = await run(nc, "run-deadline", 1, timeout_ms=200)
    assert reply["state"] == "failed" and reply["code"] == 408
    task = await call(nc, API + f"TASK.GET.{reply['steps']['w']['task_id']}")
    assert task["task"]["state"] in ("failed", "canceled")
    await wait_until(lambda: len(slow.cancels) == 2)
    await slow.close()


async def test_cancel_an_async_run_cancels_its_running_step_tasks(broker, nc):
    slow = await Agent(broker.nats_url, "slow", hold=True).start()
    await create(
        nc,
        {
            "name": "cancel-me",
            "steps": [{"id": "w", "agent": "slow"}, {"id": "z", "agent": "slow", "needs": ["w"]}],
        },
    )
    started = await run(nc, "cancel-me", 1, mode="async")
    assert started["state"] == "running" and started["run_id"]
    await wait_until(lambda: len(slow.received) == 1)
    running = await call(nc, API + f"PIPELINE.STATUS.{started['run_id']}")
    assert running["state"] == "running" and running["steps"]["w"]["state"] == "running"
    task_id = running["steps"]["w"]["task_id"]
    canceled = await call(nc, API + f"PIPELINE.CANCEL.{started['run_id']}")
    assert canceled["state"] == "canceled"
    await wait_until(lambda: slow.cancels == [task_id])
    task = await call(nc, API + f"TASK.GET.{task_id}")
    assert task["task"]["state"] == "canceled"
    status = await call(nc, API + f"PIPELINE.STATUS.{started['run_id']}")
    assert status["state"] == "canceled" and status["steps"]["w"]["state"] == "canceled"
    again = await call(nc, API + f"PIPELINE.CANCEL.{started['run_id']}")
    assert again["code"] == 409
    unknown = await call(nc, API + "PIPELINE.STATUS.nope")
    assert unknown["code"] == 404
    await slow.close()


async def test_tool_steps_check_schemas_in_both_directions(broker, nc):
    good = await Tool(broker.nats_url, "count", lambda a: len(a["text"])).start(
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        output_schema={"type": "integer"},
    )
    liar = await Tool(broker.nats_url, "liar", lambda a: "many").start(output_schema={"type": "integer"})
    await create(nc, {"name": "count", "steps": [{"id": "c", "tool": "count", "input": {"text": "$.input"}}]})
    assert (await run(nc, "count", "abcd"))["output"] == 4
    bad_in = await run(nc, "count", 42)
    assert bad_in["state"] == "failed" and bad_in["code"] == 400
    assert bad_in["error"].startswith("step c: arguments do not match")
    assert len(good.received) == 1  # the bad call was never forwarded
    await create(nc, {"name": "liar", "steps": [{"id": "l", "tool": "liar", "input": {}}]})
    bad_out = await run(nc, "liar", None)
    assert bad_out["state"] == "failed" and bad_out["code"] == 502 and "output_schema" in bad_out["error"]
    await good.close()
    await liar.close()


async def test_simple_form_with_input_from(broker, nc):
    upper = await FnAgent(broker.nats_url, "upper", lambda x: x.upper()).start()
    excl = await FnAgent(broker.nats_url, "excl", lambda x: x + "!").start()
    await create(
        nc,
        {
            "name": "simple",
            "steps": [
                {"agent": "upper", "task": "shout", "input_from": "user"},
                {"agent": "excl", "task": "exclaim", "input_from": "step.1.output"},
            ],
        },
    )
    reply = await run(nc, "simple", "hi")
    assert reply["output"] == "HI!"
    assert set(reply["steps"]) == {"1", "2"}
    assert upper.received[0]["skill"] == "shout"
    await upper.close()
    await excl.close()


async def test_list_get_delete(broker, nc):
    a = await FnAgent(broker.nats_url, "a", lambda x: x).start()
    await create(nc, {"name": "p1", "description": "first", "steps": [{"id": "x", "agent": "a"}]})
    await create(
        nc, {"name": "p2", "steps": [{"id": "x", "agent": "a"}, {"id": "y", "agent": "a", "needs": ["x"]}]}
    )
    listing = await call(nc, API + "PIPELINE.LIST")
    assert [(p["name"], p["steps"]) for p in listing["pipelines"]] == [("p1", 1), ("p2", 2)]
    assert listing["total"] == 2 and listing["pipelines"][0]["description"] == "first"
    got = await call(nc, API + "PIPELINE.GET.p2")
    assert got["pipeline"]["steps"][1]["needs"] == ["x"]
    assert (await call(nc, API + "PIPELINE.DELETE.p1"))["deleted"] is True
    assert (await call(nc, API + "PIPELINE.GET.p1"))["code"] == 404
    assert (await call(nc, API + "PIPELINE.DELETE.p1"))["code"] == 404
    assert (await run(nc, "p1", 1))["code"] == 404
    await a.close()
