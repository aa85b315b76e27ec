"""A broker nobody asks to find agents never loads numpy or the embedding model; the first card
or the first semantic query loads them, and the answers are what they would have been."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest


def loaded(pid: int, needle: str) -> bool:
    """Is a shared library or file whose path contains ``needle`` mapped into process ``pid``?"""
    with open(f"/proc/{pid}/maps") as maps:
        return any(needle in line for line in maps)


async def call(nc, subject: str, body: dict | None = None) -> dict:
    msg = await nc.request(subject, json.dumps(body or {}).encode(), timeout=30)
    return json.loads(msg.data)


CARD = {
    "name": "translator",
    "description": "translates documents between English and French",
    "version": "1.0.0",
    "skills": [
        {"id": "translate", "name": "translate", "description": "translate text", "tags": ["language"]}
    ],
}


@pytest.fixture
def light(broker_factory):
    return broker_factory("--http-port", "off", env={"HF_HUB_OFFLINE": "1"})


async def test_an_idle_broker_with_keyword_searches_loads_neither_numpy_nor_the_model(light):
    nc = await nats.connect(light.nats_url)
    assert await call(nc, "$mq9.AI.AGENT.DISCOVER", {"text": "translate"}) == {"error": "", "agents": []}
    box = await call(nc, "$mq9.AI.MAILBOX.CREATE", {"name": "idle.box"})
    assert box["error"] == ""
    await nc.close()
    assert not loaded(light.proc.pid, "numpy")
    assert not loaded(light.proc.pid, "wordllama")


async def test_the_first_semantic_query_loads_the_model_and_answers(light):
    nc = await nats.connect(light.nats_url)
    first = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"semantic": "someone to translate my letter"})
    assert first == {"error": "", "agents": []}
    assert await call(nc, "$mq9.AI.AGENT.REGISTER", CARD) == {"error": ""}
    found = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"semantic": "convert a text into French"})
    assert [a["name"] for a in found["agents"]] == ["translator"]
    assert loaded(light.proc.pid, "wordllama")
    await nc.close()


async def test_a_card_registered_right_after_start_is_found_by_meaning_at_once(light):
    nc = await nats.connect(light.nats_url)
    assert await call(nc, "$mq9.AI.AGENT.REGISTER", CARD) == {"error": ""}
    found, text = await asyncio.gather(
        call(nc, "$mq9.AI.AGENT.DISCOVER", {"semantic": "convert a text into French"}),
        call(nc, "$mq9.AI.AGENT.DISCOVER", {"text": "translate"}),
    )
    assert [a["name"] for a in found["agents"]] == ["translator"]
    assert [a["name"] for a in text["agents"]] == ["translator"]
    await nc.close()
