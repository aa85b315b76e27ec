"""A decorated agent on the real broker: discovered, invoked, followed, cancelled, stopped cleanly."""

from __future__ import annotations

import asyncio

import pytest
from helpers.waits import wait_until
from mq9 import (
    Agent,
    BadRequest,
    Client,
    Conflict,
    DeadlineExceeded,
    NoLiveAgent,
    NotFound,
    TaskCanceled,
    TaskContext,
    TaskFailed,
)


def translator(url: str, **options) -> Agent:
    agent = Agent(
        "translator", servers=url, description="Translates text between languages", version="1.0.0",
        max_concurrency=4, **options,
    )  # fmt: skip

    @agent.skill(tags=["translate", "language"], examples=["translate hello to French", "say this in German"])
    async def translate(text: str, target: str = "fr") -> dict:
        """Translate text into the target language."""
        words = {"fr": "bonjour", "de": "hallo"}
        return {"text": words.get(target, text) if text == "hello" else text, "target": target}

    @agent.skill(tags=["fail"])
    async def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(reason)

    return agent


def weather(url: str) -> Agent:
    agent = Agent("weather", servers=url, description="Weather forecasts for cities")

    @agent.skill(tags=["weather", "forecast"], examples=["will it rain in Paris tomorrow"])
    async def forecast(city: str) -> str:
        """Tomorrow's weather forecast for a city."""
        return f"sunny in {city}"

    return agent


async def test_agent_is_discovered_by_meaning_and_invoked(sdk_broker):
    async with (
        translator(sdk_broker.nats_url),
        weather(sdk_broker.nats_url),
        Client(sdk_broker.nats_url) as c,
    ):
        found = await wait_until(
            lambda: c.discover(semantic="turn English into German", limit=5), timeout=10, interval=0.05
        )
        assert found[0].name == "translator"
        assert found[0].status == "healthy"
        assert found[0].card["skills"][0]["id"] == "translate"
        assert "translate" in found[0].skills
        out = await c.invoke(found[0].name, {"text": "hello", "target": "de"}, skill="translate", timeout=5)
        assert out == {"text": "hallo", "target": "de"}
        # the first skill is the default
        assert await c.invoke("translator", {"text": "hello"}) == {"text": "bonjour", "target": "fr"}
        detail = await c.invoke("weather", {"city": "Oslo"}, details=True)
        assert detail.output == "sunny in Oslo"
        assert detail.task_id and detail.instance_id


async def test_invoke_by_intent_picks_the_agent(sdk_broker):
    async with (
        translator(sdk_broker.nats_url),
        weather(sdk_broker.nats_url),
        Client(sdk_broker.nats_url) as c,
    ):
        await wait_until(lambda: c.discover(semantic="weather forecast"), timeout=10, interval=0.05)
        out = await c.invoke_intent("what will the weather be like in Rome", {"city": "Rome"}, details=True)
        assert out.agent == "weather"
        assert out.output == "sunny in Rome"


async def test_invalid_input_is_the_agents_error(sdk_broker):
    async with translator(sdk_broker.nats_url), Client(sdk_broker.nats_url) as c:
        with pytest.raises(TaskFailed) as info:
            await c.invoke("translator", {"target": 3}, skill="translate")
        assert "text" in info.value.text and "Field required" in info.value.text
        with pytest.raises(TaskFailed, match="unknown skill"):
            await c.invoke("translator", {}, skill="nope")


async def test_every_error_class(sdk_broker):
    slow = Agent("slow", servers=sdk_broker.nats_url)

    @slow.skill
    async def wait(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    async with translator(sdk_broker.nats_url), slow, Client(sdk_broker.nats_url) as c:
        with pytest.raises(TaskFailed, match="boom") as failed:
            await c.invoke("translator", {"reason": "boom"}, skill="explode")
        assert failed.value.code == 502 and failed.value.task_id
        with pytest.raises(DeadlineExceeded) as late:
            await c.invoke("slow", {"seconds": 3}, timeout=0.3)
        assert late.value.code == 408
        with pytest.raises(NotFound):
            await c.agent_info("nobody")
        with pytest.raises(NotFound):
            await c.task("no-such-task").get()
        with pytest.raises(BadRequest):
            await c.discover(text="x", limit=0)
        task = await c.invoke("translator", {"text": "hi"}, wait=False)
        await task.result(timeout=10)
        with pytest.raises(Conflict):
            await task.cancel()
    # every instance has stopped: the agent is known but nobody is live
    async with Client(sdk_broker.nats_url) as c:
        with pytest.raises(NoLiveAgent) as none:
            await c.invoke("translator", {"text": "hi"})
        assert none.value.code == 503


async def test_progress_events_follow_an_async_task(sdk_broker):
    agent = Agent("counter", servers=sdk_broker.nats_url)

    @agent.skill
    async def count(to: int, ctx: TaskContext) -> int:
        """Counts, reporting each step."""
        for i in range(1, to + 1):
            await ctx.progress({"step": i})
        return to

    async with agent, Client(sdk_broker.nats_url) as c:
        task = await c.invoke("counter", {"to": 3}, wait=False)
        assert task.id
        assert await task.result(timeout=10) == 3
        events = [e async for e in task.events()]
        progress = [e.data for e in events if e.type == "progress"]
        assert progress == [{"step": 1}, {"step": 2}, {"step": 3}]
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # replay from a sequence number skips what was already seen
        later = [e async for e in task.events(after_seq=seqs[0])]
        assert [e.seq for e in later] == seqs[1:]
        record = await task.get()
        assert record["state"] == "completed" and record["output"] == 3


async def test_events_stream_live_while_the_task_runs(sdk_broker):
    agent = Agent("ticker", servers=sdk_broker.nats_url)
    release = asyncio.Event()

    @agent.skill
    async def tick(ctx: TaskContext) -> str:
        ctx.progress(pct=50)
        await release.wait()
        return "ok"

    async with agent, Client(sdk_broker.nats_url) as c:
        task = await c.invoke("ticker", {}, wait=False)
        seen = []
        async for event in task.events():
            seen.append(event)
            if event.type == "progress":
                release.set()
        assert {"pct": 50} in [e.data for e in seen]
        assert await task.state() == "completed"


async def test_cancellation_reaches_the_skill(sdk_broker):
    agent = Agent("looper", servers=sdk_broker.nats_url)
    started = asyncio.Event()
    observed = asyncio.Event()

    @agent.skill
    async def loop(ctx: TaskContext) -> str:
        started.set()
        while not ctx.cancelled:
            await asyncio.sleep(0.01)
        observed.set()
        return "stopped early"

    async with agent, Client(sdk_broker.nats_url) as c:
        task = await c.invoke("looper", {}, wait=False, timeout=30)
        await asyncio.wait_for(started.wait(), 10)
        assert await task.cancel() == "canceled"
        await asyncio.wait_for(observed.wait(), 10)
        with pytest.raises(TaskCanceled):
            await task.result(timeout=10)


async def test_stop_finishes_work_in_flight_then_deregisters(sdk_broker):
    agent = Agent("careful", servers=sdk_broker.nats_url)
    started = asyncio.Event()

    @agent.skill
    async def work(ms: int) -> str:
        started.set()
        await asyncio.sleep(ms / 1000)
        return "finished"

    await agent.start()
    async with Client(sdk_broker.nats_url) as c:
        call = asyncio.create_task(c.invoke("careful", {"ms": 500}))
        await asyncio.wait_for(started.wait(), 10)
        await agent.stop()
        assert agent.in_flight == 0
        assert await call == "finished"
        status = await c.agent_status("careful")
        assert status["status"] == "down"
        with pytest.raises(NoLiveAgent):
            await c.invoke("careful", {"ms": 1})


async def test_queued_invocation_runs_when_an_instance_starts(sdk_broker):
    agent = Agent("latecomer", servers=sdk_broker.nats_url)

    @agent.skill
    async def hello(name: str) -> str:
        return f"hello {name}"

    async with Client(sdk_broker.nats_url) as c:
        await agent.start()  # known to the registry
        await agent.stop()
        task = await c.invoke("latecomer", {"name": "q"}, wait=False, on_offline="queue", timeout=30)
        async with agent:
            assert await task.result(timeout=20) == "hello q"


async def test_sync_skill_runs_in_a_thread_and_reports_progress(sdk_broker):
    agent = Agent("blocking", servers=sdk_broker.nats_url)

    @agent.skill
    def crunch(rows: int, ctx: TaskContext) -> int:
        """A blocking function: it runs in a worker thread, so the agent keeps serving."""
        for i in range(rows):
            ctx.progress(row=i)
        return rows * 2

    async with agent, Client(sdk_broker.nats_url) as c:
        task = await c.invoke("blocking", {"rows": 3}, wait=False)
        assert await task.result(timeout=10) == 6
        progress = [e.data for e in [e async for e in task.events()] if e.type == "progress"]
        assert progress == [{"row": 0}, {"row": 1}, {"row": 2}]


async def test_idempotency_key_returns_the_first_task(sdk_broker):
    agent = Agent("once", servers=sdk_broker.nats_url)
    runs = []

    @agent.skill
    async def charge(amount: int) -> int:
        runs.append(amount)
        return len(runs)

    async with agent, Client(sdk_broker.nats_url) as c:
        first = await c.invoke("once", {"amount": 5}, wait=False, idempotency_key="order-17")
        second = await c.invoke("once", {"amount": 5}, wait=False, idempotency_key="order-17")
        assert first.id == second.id
        assert await second.result(timeout=10) == 1
        assert runs == [5]


async def test_an_instance_the_broker_forgot_registers_again_on_its_next_heartbeat(sdk_broker):
    agent = Agent("forgotten", servers=sdk_broker.nats_url, heartbeat_interval=0.1)

    @agent.skill
    async def hello(name: str) -> str:
        return f"hello {name}"

    async with agent, Client(sdk_broker.nats_url) as c:
        first = agent.instance_id
        await c.deregister("forgotten", first)
        await wait_until(lambda: agent.instance_id != first, timeout=10, interval=0.05)
        await wait_until(lambda: c.agent_status("forgotten"), timeout=10, interval=0.05)
        assert await c.invoke("forgotten", {"name": "again"}) == "hello again"
