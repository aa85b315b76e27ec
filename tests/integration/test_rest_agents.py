"""Agents, invocation and tasks over the control plane against a real broker, with agents written
directly on nats-py: an agent registered over NATS appears over HTTP, one invoked over HTTP is served
by a NATS agent, errors carry the NATS API's codes, and the SSE event stream resumes exactly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import nats
from helpers.waits import wait_until

API = "$mq9.AI.API."


def http(broker) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}", timeout=15)


def card(name: str, description: str, skill: str, tags: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "version": "1.0.0",
        "skills": [{"id": skill, "name": skill, "description": description, "tags": tags}],
    }


class EchoAgent:
    """One instance on its own nats-py connection; echoes ``input``, or fails, or holds work."""

    def __init__(self, url: str, name: str, *, fail: str | None = None, hold: bool = False) -> None:
        self.url, self.name, self.fail, self.hold = url, name, fail, hold
        self.nc: Any = None
        self.held: list[Any] = []

    async def start(self, description: str = "repeats what it is given", skill: str = "echo") -> EchoAgent:
        self.nc = await nats.connect(self.url)
        body = card(self.name, description, skill, [skill, "test"])
        msg = await self.nc.request(API + "AGENT.REGISTER", json.dumps(body).encode(), timeout=5)
        reg = json.loads(msg.data)
        assert reg["error"] == "", reg
        await self.nc.subscribe(reg["serve_subject"], cb=self._on_work)
        await self.nc.flush()
        return self

    async def _on_work(self, msg) -> None:
        data = json.loads(msg.data)
        if data.get("cancel"):
            return
        if self.hold:
            self.held.append(msg)
            return
        await self._answer(msg)

    async def _answer(self, msg) -> None:
        data = json.loads(msg.data)
        body = {"error": self.fail} if self.fail else {"output": data["input"]}
        await msg.respond(json.dumps(body).encode())

    async def release(self) -> None:
        held, self.held = self.held, []
        for msg in held:
            await self._answer(msg)

    async def event(self, task_id: str, type_: str, data: Any) -> None:
        body = json.dumps({"type": type_, "data": data}).encode()
        await self.nc.publish(f"$mq9.AI.TASK.EVENT.{task_id}", body)
        await self.nc.flush()

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


async def test_agent_registered_over_nats_appears_over_http(broker):
    agent = await EchoAgent(broker.nats_url, "echo").start()
    try:
        async with http(broker) as c:
            page = (await c.get("/api/v1/agents")).json()
            [info] = [a for a in page["items"] if a["name"] == "echo"]
            assert info["status"] == "healthy" and len(info["instances"]) == 1
            assert info["card"]["skills"][0]["id"] == "echo"
            one = (await c.get("/api/v1/agents/echo")).json()
            assert one["instances"][0]["instance_id"] == info["instances"][0]["instance_id"]
            status = (await c.get("/api/v1/agents/echo/status")).json()
            assert status["status"] == "healthy" and "error" not in status
            assert (await c.get("/api/v1/agents", params={"status": "down"})).json()["items"] == []
    finally:
        await agent.close()


async def test_invoke_over_http_is_served_by_a_nats_agent(broker):
    agent = await EchoAgent(broker.nats_url, "echo").start()
    try:
        async with http(broker) as c:
            r = await c.post("/api/v1/agents/echo/invoke", json={"input": {"text": "hi"}, "timeout_ms": 5000})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["state"] == "completed" and body["output"] == {"text": "hi"}
            assert "error" not in body
            task = (await c.get(f"/api/v1/tasks/{body['task_id']}")).json()
            assert task["state"] == "completed" and task["agent"] == "echo"

            r = await c.post("/api/v1/agents/echo/invoke", json={"input": 7, "mode": "async"})
            assert r.status_code == 202
            task_id = r.json()["task_id"]
            assert r.headers["location"] == f"/api/v1/tasks/{task_id}"

            async def completed() -> bool:
                return (await c.get(f"/api/v1/tasks/{task_id}")).json()["state"] == "completed"

            await wait_until(completed, what="async task completes")
            assert (await c.get(f"/api/v1/tasks/{task_id}")).json()["output"] == 7
    finally:
        await agent.close()


async def test_invoke_errors_carry_the_nats_api_codes(broker):
    failing = await EchoAgent(broker.nats_url, "broken", fail="boom").start()
    slow = await EchoAgent(broker.nats_url, "slow", hold=True).start()
    try:
        async with http(broker) as c:
            r = await c.post("/api/v1/agents/nobody/invoke", json={"input": 1})
            assert r.status_code == 404 and r.json()["code"] == 404
            assert r.headers["content-type"] == "application/problem+json"

            r = await c.post("/api/v1/agents/broken/invoke", json={"input": 1})
            assert r.status_code == 502 and "boom" in r.json()["detail"]
            assert r.json()["task_id"] and r.json()["state"] == "failed"

            r = await c.post("/api/v1/agents/slow/invoke", json={"input": 1, "timeout_ms": 200})
            assert r.status_code == 408 and r.json()["code"] == 408

            r = await c.post("/api/v1/agents/slow/invoke", json={"input": 1, "timeout_ms": 0})
            assert r.status_code == 400
            r = await c.post("/api/v1/agents/bad name/invoke", json={"input": 1})
            assert r.status_code == 400

            # a card registered over HTTP has no live instance yet: fail fast, or queue
            r = await c.post("/api/v1/agents", json=card("offline", "not running", "nap", ["nap"]))
            assert r.status_code == 201 and r.json()["status"] == "down"
            r = await c.post("/api/v1/agents/offline/invoke", json={"input": 1})
            assert r.status_code == 503 and r.json()["code"] == 503
            r = await c.post(
                "/api/v1/agents/offline/invoke", json={"input": 1, "mode": "async", "on_offline": "queue"}
            )
            assert r.status_code == 202 and r.json()["state"] == "submitted"
    finally:
        await failing.close()
        await slow.close()


async def test_register_list_filters_and_delete_over_http(broker):
    async with http(broker) as c:
        for name, skill in (("alpha", "translate"), ("beta", "summarize"), ("gamma", "translate")):
            r = await c.post("/api/v1/agents", json=card(name, f"{name} does {skill}", skill, [skill]))
            assert r.status_code == 201
        names = lambda page: [a["name"] for a in page["items"]]  # noqa: E731
        first = (await c.get("/api/v1/agents", params={"limit": 2})).json()
        second = (await c.get("/api/v1/agents", params={"limit": 2, "cursor": first["next_cursor"]})).json()
        assert names(first) + names(second) == ["alpha", "beta", "gamma"]
        assert names((await c.get("/api/v1/agents", params={"capability": "translate"})).json()) == [
            "alpha",
            "gamma",
        ]
        assert names((await c.get("/api/v1/agents", params={"text": "SUMMARIZE"})).json()) == ["beta"]
        assert (await c.get("/api/v1/agents", params={"status": "healthy"})).json()["items"] == []

        r = await c.delete("/api/v1/agents/beta")
        assert r.status_code == 200 and r.json() == {"name": "beta", "removed_instances": 0}
        assert (await c.get("/api/v1/agents/beta")).status_code == 404
        assert (await c.delete("/api/v1/agents/beta")).status_code == 404
        r = await c.post("/api/v1/agents", json={"name": "no spaces allowed"})
        assert r.status_code == 400


async def test_discover_and_invoke_by_intent(broker):
    translator = await EchoAgent(broker.nats_url, "translator").start(
        "translates text between languages such as French and German", "translate"
    )
    weather = await EchoAgent(broker.nats_url, "weather").start(
        "reports the weather forecast for a city", "forecast"
    )
    try:
        async with http(broker) as c:
            found = (await c.post("/api/v1/discover", json={"capability": "forecast"})).json()["agents"]
            assert [a["name"] for a in found] == ["weather"]
            found = (await c.post("/api/v1/discover", json={"text": "translate languages"})).json()["agents"]
            assert found[0]["name"] == "translator" and found[0]["status"] == "healthy"
            r = await c.post("/api/v1/discover", json={"limit": 0})
            assert r.status_code == 400

            r = await c.post(
                "/api/v1/invoke", json={"intent": "translate this text into German", "input": "hallo"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["agent"] == "translator" and r.json()["output"] == "hallo"
            r = await c.post("/api/v1/invoke", json={"input": 1})
            assert r.status_code == 400
    finally:
        await translator.close()
        await weather.close()


async def test_task_get_and_cancel(broker):
    slow = await EchoAgent(broker.nats_url, "slow", hold=True).start()
    try:
        async with http(broker) as c:
            assert (await c.get("/api/v1/tasks/no-such-task")).status_code == 404
            assert (await c.post("/api/v1/tasks/no-such-task/cancel")).status_code == 404
            r = await c.post(
                "/api/v1/agents/slow/invoke", json={"input": 1, "mode": "async", "timeout_ms": 60000}
            )
            task_id = r.json()["task_id"]
            r = await c.post(f"/api/v1/tasks/{task_id}/cancel")
            assert r.status_code == 200 and r.json() == {"state": "canceled"}
            assert (await c.get(f"/api/v1/tasks/{task_id}")).json()["state"] == "canceled"
            r = await c.post(f"/api/v1/tasks/{task_id}/cancel")
            assert r.status_code == 409 and r.json()["state"] == "canceled"
    finally:
        await slow.close()


async def read_events(
    c: httpx.AsyncClient,
    task_id: str,
    count: int | None,
    last_id: str | None = None,
    opened: asyncio.Event | None = None,
):
    """Parse SSE frames; stop after ``count`` events (or when the server ends the stream).

    ``opened`` is set at the first event: the server subscribes to the task before it replays."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events: list[dict[str, Any]] = []
    async with c.stream("GET", f"/api/v1/tasks/{task_id}/events", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, str] = {}
        async for line in r.aiter_lines():
            if line == "":
                if "data" in frame:
                    events.append({"id": frame["id"], "event": frame["event"], **json.loads(frame["data"])})
                    if opened is not None:
                        opened.set()
                    if count is not None and len(events) >= count:
                        break
                frame = {}
                continue
            name, _, value = line.partition(": ")
            frame[name] = value
    return events


async def test_task_events_stream_resumes_from_last_event_id_without_loss_or_repeat(broker):
    agent = await EchoAgent(broker.nats_url, "worker", hold=True).start()
    try:
        async with http(broker) as c:
            r = await c.post(
                "/api/v1/agents/worker/invoke", json={"input": "job", "mode": "async", "timeout_ms": 60000}
            )
            task_id = r.json()["task_id"]

            async def dispatched() -> bool:
                return len(agent.held) == 1

            await wait_until(dispatched, what="work reaches the agent")
            await agent.event(task_id, "progress", {"pct": 10})
            first = await read_events(c, task_id, count=2)
            assert [e["seq"] for e in first] == [1, 2]
            assert first[0]["id"] == "1" and first[0]["event"] == "state"

            # while nobody listens, more happens; then the task completes
            await agent.event(task_id, "progress", {"pct": 50})
            await agent.event(task_id, "artifact", {"part": "half"})
            await agent.release()

            async def done() -> bool:
                return (await c.get(f"/api/v1/tasks/{task_id}")).json()["state"] == "completed"

            await wait_until(done, what="task completes")
            rest = await read_events(c, task_id, count=None, last_id=first[-1]["id"])
            seqs = [e["seq"] for e in first + rest]
            assert seqs == list(range(1, len(seqs) + 1)), seqs
            assert rest[-1]["event"] == "state" and rest[-1]["data"]["state"] == "completed"
            assert any(e["event"] == "artifact" for e in rest)
            # a reader that saw everything gets nothing more, and the stream ends
            assert await read_events(c, task_id, count=None, last_id=str(seqs[-1])) == []
            assert (
                await c.get(f"/api/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "x"})
            ).status_code == 400
    finally:
        await agent.close()


async def test_task_events_stream_follows_live_events(broker):
    agent = await EchoAgent(broker.nats_url, "live", hold=True).start()
    try:
        async with http(broker) as c:
            r = await c.post(
                "/api/v1/agents/live/invoke", json={"input": "x", "mode": "async", "timeout_ms": 60000}
            )
            task_id = r.json()["task_id"]

            async def dispatched() -> bool:
                return len(agent.held) == 1

            await wait_until(dispatched, what="work reaches the agent")
            opened = asyncio.Event()
            reader = asyncio.create_task(read_events(c, task_id, count=None, opened=opened))
            await asyncio.wait_for(opened.wait(), 10)  # the stream is live: what follows comes live
            for pct in (25, 75):
                await agent.event(task_id, "progress", {"pct": pct})
            await agent.release()
            events = await asyncio.wait_for(reader, 10)
            seqs = [e["seq"] for e in events]
            assert seqs == list(range(1, len(seqs) + 1))
            assert [e["data"]["pct"] for e in events if e["event"] == "progress"] == [25, 75]
            assert events[-1]["data"]["state"] == "completed"
    finally:
        await agent.close()


async def test_metrics_cover_invocations_tasks_streams_and_mailboxes(broker):
    agent = await EchoAgent(broker.nats_url, "metered").start()
    try:
        async with http(broker) as c:
            for i in range(3):
                assert (await c.post("/api/v1/agents/metered/invoke", json={"input": i})).status_code == 200
            await c.post("/api/v1/mailboxes", json={"name": "metered.box"})
            await c.post("/api/v1/mailboxes/metered.box/messages", json={"payload": "x"})
            text = (await c.get("/metrics")).text
        assert 'robustmq_agent_invocations_total{agent="metered",outcome="completed"} 3.0' in text
        assert 'robustmq_agent_invocation_latency_ms{agent="metered",stat="p99"}' in text
        assert 'robustmq_tasks{state="completed"} 3.0' in text
        assert 'robustmq_agents{status="healthy"} 1.0' in text
        assert 'robustmq_mailbox_records{mailbox="metered.box"} 1.0' in text
        assert 'robustmq_stream_records{stream="metered.box"} 1.0' in text
        assert "robustmq_store_index_lag_records " in text
        assert "robustmq_store_commits_total " in text
        assert 'robustmq_messages_in_total{protocol="nats"}' in text  # server-wide, closed connections too
        assert 'robustmq_connections_accepted_total{protocol="nats"}' in text
    finally:
        await agent.close()


async def test_an_open_event_stream_ends_when_the_broker_stops(broker):
    agent = await EchoAgent(broker.nats_url, "lingering", hold=True).start()
    try:
        async with http(broker) as c:
            r = await c.post(
                "/api/v1/agents/lingering/invoke", json={"input": 1, "mode": "async", "timeout_ms": 60000}
            )
            task_id = r.json()["task_id"]
            opened = asyncio.Event()
            reader = asyncio.create_task(read_events(c, task_id, count=None, opened=opened))
            await asyncio.wait_for(opened.wait(), 10)
            assert not reader.done()
            code = await asyncio.to_thread(broker.stop)
            assert code == 0
            events = await asyncio.wait_for(reader, 10)
            assert events and events[0]["seq"] == 1
    finally:
        await agent.close()


async def test_unknown_agent_and_task_paths_are_404_and_an_unmatched_intent_is_503(broker):
    async with http(broker) as c:
        r = await c.get("/api/v1/agents/ghost/status")
        assert r.status_code == 404 and r.json()["detail"] == "agent ghost not found"
        r = await c.get("/api/v1/tasks/no-such-task/events")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        r = await c.post("/api/v1/invoke", json={"intent": "book a flight to Lisbon", "input": 1})
        assert r.status_code == 503 and r.json()["code"] == 503
        r = await c.get("/api/v1/agents", params={"cursor": "bm90LWEtY3Vyc29y"})
        assert r.status_code == 400
