"""Integers JSON cannot carry here (past 64 bits) are refused at validation with a 400, over NATS
and over HTTP, and the agent API keeps answering; a card registered over HTTP is listed at once."""

from __future__ import annotations

import json

import httpx
import nats

API = "$mq9.AI.API."
HUGE = 123456789012345678901234567890


def card(name: str, **extra) -> dict:
    return {
        "name": name,
        "description": "repeats what it is given",
        "version": "1.0.0",
        "skills": [{"id": "echo", "name": "echo", "description": "echo", "tags": ["echo"]}],
        **extra,
    }


async def ask(nc, subject: str, body: dict | str) -> dict:
    raw = body if isinstance(body, str) else json.dumps(body)
    msg = await nc.request(API + subject, raw.encode(), timeout=5)
    return json.loads(msg.data)


async def test_integers_past_64_bits_are_a_400_over_nats(broker):
    nc = await nats.connect(broker.nats_url)
    try:
        bad_card = await ask(nc, "AGENT.REGISTER", card("big", metadata={"serial": HUGE}))
        assert bad_card["code"] == 400
        assert (
            bad_card["error"]
            == "invalid request: metadata.serial: integer beyond 64 bits (send it as a string)"
        )
        skill = {"id": "s", "name": "s", "description": "d", "tags": [], "examples": [], "limit": -HUGE}
        in_skill = await ask(nc, "AGENT.REGISTER", card("big", skills=[skill]))
        assert in_skill["code"] == 400 and "skills.0.limit" in in_skill["error"]

        reg = await ask(nc, "AGENT.REGISTER", card("big"))
        assert reg["error"] == "", reg
        served: list[dict] = []

        async def on_work(msg) -> None:
            served.append(json.loads(msg.data))
            await msg.respond(json.dumps({"output": json.loads(msg.data)["input"]}).encode())

        await nc.subscribe(reg["serve_subject"], cb=on_work)
        await nc.flush()
        bad_input = await ask(nc, "AGENT.INVOKE.big", {"input": {"n": [1, HUGE]}})
        assert bad_input["code"] == 400
        assert (
            bad_input["error"] == "invalid request: input.n.1: integer beyond 64 bits (send it as a string)"
        )
        by_intent = await ask(nc, "INVOKE", {"intent": "repeat this", "input": HUGE})
        assert by_intent["code"] == 400 and by_intent["error"].startswith("invalid request: input:")
        assert served == []

        # the edges of the range, a digit run inside a string and a long float are fine
        for value in (2**64 - 1, -(2**63), str(HUGE), 1.2345678901234567890123):
            ok = await ask(nc, "AGENT.INVOKE.big", {"input": value})
            assert ok["state"] == "completed", ok
            assert ok["output"] == value
        event = await ask(nc, "AGENT.INVOKE.big", {"input": 1, "mode": "async"})
        bad_event = await nc.request(
            f"$mq9.AI.TASK.EVENT.{event['task_id']}",
            json.dumps({"type": "progress", "data": HUGE}).encode(),
            timeout=5,
        )
        assert json.loads(bad_event.data)["code"] in (400, 409)  # 409 when the echo already finished it
    finally:
        await nc.close()


async def test_integers_past_64_bits_are_a_400_over_http_and_a_card_is_listed_at_once(broker):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}", timeout=15) as http:
        bad = await http.post("/api/v1/agents", json=card("big-http", metadata={"n": HUGE}))
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/problem+json")
        for n in range(3):
            created = await http.post("/api/v1/agents", json=card(f"card-{n}", mailbox=f"box.card{n}"))
            assert created.status_code == 201, created.text
            assert created.json()["status"] == "down"
            listed = await http.get("/api/v1/agents")
            assert [a["name"] for a in listed.json()["items"]] == [f"card-{i}" for i in range(n + 1)]
        assert (await http.delete("/api/v1/agents/card-1")).status_code == 200
        listed = await http.get("/api/v1/agents")
        assert [a["name"] for a in listed.json()["items"]] == ["card-0", "card-2"]
        bad_invoke = await http.post("/api/v1/agents/card-0/invoke", json={"input": HUGE})
        assert bad_invoke.status_code == 400
    nc = await nats.connect(broker.nats_url)
    try:
        info = await ask(nc, "AGENT.INFO.card-2", {})
        assert info["agent"]["mailbox"] == "box.card2"
        listed = await ask(nc, "AGENT.LIST", {})
        assert [a["name"] for a in listed["agents"]] == ["card-0", "card-2"]
    finally:
        await nc.close()
