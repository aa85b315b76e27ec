"""Tools and pipelines through the SDK: a decorated tool called with schema checks, a pipeline run."""

from __future__ import annotations

import asyncio

import pytest
from helpers.waits import wait_for, wait_until
from mq9 import Agent, BadRequest, Client, TaskFailed


def text_agent(url: str) -> Agent:
    agent = Agent("texter", servers=url, description="Small text utilities")

    @agent.skill
    async def upper(text: str) -> dict:
        """Upper-case a text."""
        return {"text": text.upper()}

    @agent.skill
    async def summarize(text: str) -> str:
        """First word of a text."""
        return text.split()[0]

    @agent.tool()
    async def word_count(text: str) -> int:
        """Count the words of a text."""
        return len(text.split())

    @agent.tool()
    async def divide(a: float, b: float) -> float:
        """Divide a by b."""
        return a / b

    return agent


async def test_tool_is_registered_called_and_checked(sdk_broker):
    async with text_agent(sdk_broker.nats_url) as agent, Client(sdk_broker.nats_url) as c:
        assert agent.tools["word_count"].instance_id
        tools = {t["name"]: t for t in await c.list_tools()}
        assert tools["word_count"]["input_schema"]["properties"]["text"]["type"] == "string"
        assert await c.invoke_tool("word_count", {"text": "a b c"}) == 3
        with pytest.raises(BadRequest) as bad:
            await c.invoke_tool("word_count", {"text": 7})
        assert bad.value.details
        with pytest.raises(TaskFailed, match="ZeroDivisionError"):
            await c.invoke_tool("divide", {"a": 1, "b": 0})
        found = await c.discover_tools(semantic="how many words are in this text")
        assert found[0]["name"] == "word_count"


async def test_pipeline_of_skills_and_a_tool(sdk_broker):
    async with text_agent(sdk_broker.nats_url), Client(sdk_broker.nats_url) as c:
        await c.create_pipeline(
            {
                "name": "shout-and-count",
                "steps": [
                    {"id": "u", "agent": "texter", "skill": "upper", "input": "$.input"},
                    {
                        "id": "s",
                        "agent": "texter",
                        "skill": "summarize",
                        "input": "$.steps.u.output",
                        "needs": ["u"],
                    },
                    {
                        "id": "n",
                        "tool": "word_count",
                        "input": {"text": "$.steps.u.output.text"},
                        "needs": ["u"],
                    },
                ],
                "output": {"first": "$.steps.s.output", "words": "$.steps.n.output"},
            },
            replace=True,
        )
        out = await c.run_pipeline("shout-and-count", {"text": "hello big world"}, timeout=20)
        assert out == {"first": "HELLO", "words": 3}
        run_id = await c.run_pipeline("shout-and-count", {"text": "a b"}, wait=False)
        status = await wait_for(
            lambda: c.pipeline_status(run_id), lambda s: s["state"] != "running", 20, 0.05
        )
        assert status["state"] == "completed"
        assert status["output"] == {"first": "A", "words": 2}


async def test_pipeline_example_runs(sdk_broker):
    import os
    import subprocess
    import sys
    from pathlib import Path

    sdk = Path(__file__).resolve().parents[2] / "sdk"
    env = {**os.environ, "PYTHONPATH": str(sdk / "src"), "MQ9_SERVERS": sdk_broker.nats_url}
    translator = subprocess.Popen(
        [sys.executable, "-m", "mq9", "run", "translator:agent"], cwd=sdk / "examples", env=env
    )
    try:
        async with Client(sdk_broker.nats_url) as c:
            await wait_until(lambda: c.discover(capability="translate"), 30, interval=0.1)
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "pipeline.py"], cwd=sdk / "examples", env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "'summary': 'bonjour'" in proc.stdout
    finally:
        translator.terminate()
        translator.wait(20)


async def test_a_failing_step_fails_the_run_with_its_text(sdk_broker):
    agent = Agent("stumbler", servers=sdk_broker.nats_url)

    @agent.skill
    async def trip(text: str) -> str:
        raise RuntimeError(f"tripped on {text}")

    async with agent, Client(sdk_broker.nats_url) as c:
        await c.create_pipeline(
            {"name": "trip-once", "steps": [{"id": "t", "agent": "stumbler", "input": "$.input"}],
             "output": "$.steps.t.output"},
            replace=True,
        )  # fmt: skip
        with pytest.raises(TaskFailed) as failed:
            await c.run_pipeline("trip-once", {"text": "a stone"}, timeout=20)
        assert failed.value.text.startswith("step t: ")
        assert "tripped on a stone" in failed.value.text
        assert failed.value.reply["state"] == "failed"
        with pytest.raises(BadRequest):
            await c.create_pipeline({"name": "broken", "steps": [{"id": "x"}]})
