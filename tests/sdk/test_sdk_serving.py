"""Unit tests: what an agent replies on its serve subjects, per the wire contract (no broker).

An instance receives ``{"task_id", "skill", "input", "deadline_ms"}`` and replies ``{"output"}`` or
``{"error"}``; a tool receives ``{"task_id", "arguments", "deadline_ms"}`` and replies
``{"result"}`` or ``{"error"}``; ``{"task_id", "cancel": true}`` cancels a running task.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from helpers.waits import wait_until
from mq9 import Agent, TaskContext


class FakeMsg:
    def __init__(self, body: dict | bytes, reply: str = "reply.1", subject: str = "s") -> None:
        self.data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.reply = reply
        self.subject = subject


class FakeConnection:
    is_closed = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def publish(self, subject: str, body: bytes) -> None:
        self.sent.append((subject, json.loads(body)))


@pytest.fixture
def agent():
    agent = Agent("unit", max_concurrency=2, cancel_grace=0.05)
    agent._slots = asyncio.Semaphore(2)
    agent.client._nc = FakeConnection()
    return agent


def replies(agent: Agent) -> list[dict]:
    return [body for subject, body in agent.client._nc.sent if subject == "reply.1"]


async def settle(agent: Agent) -> None:
    await wait_until(lambda: not agent._running, interval=0.001, what="the agent's tasks finished")


async def test_skill_output_and_default_skill(agent):
    @agent.skill
    async def add(a: int, b: int = 1) -> int:
        return a + b

    await agent._on_invoke(
        FakeMsg({"task_id": "t1", "skill": "add", "input": {"a": 2, "b": 3}, "deadline_ms": 0})
    )
    await agent._on_invoke(FakeMsg({"task_id": "t2", "input": {"a": 5}}))
    await settle(agent)
    assert replies(agent) == [{"output": 5}, {"output": 6}]
    assert agent.processed == 2 and agent.failed == 0


async def test_errors_become_error_replies(agent):
    @agent.skill
    async def boom(reason: str) -> str:
        raise ValueError(reason)

    await agent._on_invoke(FakeMsg({"task_id": "t1", "input": {"reason": "bad day"}}))
    await agent._on_invoke(FakeMsg({"task_id": "t2", "input": {"reason": 4}}))
    await agent._on_invoke(FakeMsg({"task_id": "t3", "skill": "nope", "input": {}}))
    await agent._on_invoke(FakeMsg(b"not json"))
    await settle(agent)
    out = replies(agent)
    assert {"error": "invalid request: Expecting value: line 1 column 1 (char 0)"} in out
    assert {"error": "ValueError: bad day"} in out
    invalid = next(r for r in out if "invalid input" in r["error"])
    assert invalid["details"] == [{"path": "reason", "message": "Input should be a valid string"}]
    assert {"error": "unknown skill 'nope' of agent unit"} in out
    assert agent.failed == 3


async def test_progress_is_published_before_the_reply(agent):
    @agent.skill
    async def work(ctx: TaskContext) -> str:
        ctx.progress(step=1)
        return "done"

    await agent._on_invoke(FakeMsg({"task_id": "t9", "input": {}}))
    await settle(agent)
    assert agent.client._nc.sent == [
        ("$mq9.AI.TASK.EVENT.t9", {"type": "progress", "data": {"step": 1}}),
        ("reply.1", {"output": "done"}),
    ]


async def test_cancel_sets_the_flag_then_cancels_a_skill_that_ignores_it(agent):
    seen = asyncio.Event()

    began: list[str] = []

    @agent.skill
    async def polite(ctx: TaskContext) -> str:
        began.append("polite")
        await ctx.wait_cancelled()
        seen.set()
        return "stopped"

    @agent.skill
    async def stubborn() -> str:
        began.append("stubborn")
        await asyncio.sleep(60)  # the work a cancel must cut short
        return "never"

    await agent._on_invoke(FakeMsg({"task_id": "p", "skill": "polite", "input": {}}))
    await agent._on_invoke(FakeMsg({"task_id": "s", "skill": "stubborn", "input": {}}))
    await wait_until(lambda: len(began) == 2)  # both skills are running
    await agent._on_invoke(FakeMsg({"task_id": "p", "cancel": True}, reply=""))
    await agent._on_invoke(FakeMsg({"task_id": "s", "cancel": True}, reply=""))
    await asyncio.wait_for(seen.wait(), 5)
    await asyncio.wait_for(settle(agent), 5)
    assert sorted(r.get("output", r.get("error")) for r in replies(agent)) == ["stopped", "task canceled"]


async def test_tool_result_and_errors(agent):
    @agent.tool()
    async def div(a: float, b: float) -> float:
        return a / b

    on_call = agent._tool_callback(agent.tools["div"])
    await on_call(FakeMsg({"task_id": "t1", "arguments": {"a": 1, "b": 4}, "deadline_ms": 0}))
    await on_call(FakeMsg({"task_id": "t2", "arguments": {"a": 1, "b": 0}}))
    await on_call(FakeMsg({"task_id": "t3", "arguments": {"a": "x"}}))
    await settle(agent)
    out = replies(agent)
    assert out[0] == {"result": 0.25}
    assert out[1] == {"error": "ZeroDivisionError: float division by zero"}
    assert out[2]["error"].startswith("invalid input for tool div")
