"""mq9 agent registry over NATS with nats-py: REGISTER, UNREGISTER, REPORT, DISCOVER."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import orjson
import pytest
from brokerproc import start_broker

DATA = Path(__file__).parent.parent / "data" / "discovery_agents.json"


@pytest.fixture(scope="module")
def mq9_broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("mq9agents") / "data", env={"HF_HUB_OFFLINE": "1"})
    yield b
    b.stop()


@pytest.fixture
async def nc(mq9_broker):
    client = await nats.connect(mq9_broker.nats_url)
    yield client
    await client.close()


@pytest.fixture(scope="module")
def cards():
    return json.loads(DATA.read_text())["agents"]


async def call(nc, subject: str, body: bytes | dict = b"") -> dict:
    if isinstance(body, dict):
        body = orjson.dumps(body)
    msg = await nc.request(subject, body, timeout=10)
    return orjson.loads(msg.data)


async def register_all(nc, cards) -> None:
    for card in cards:
        assert await call(nc, "$mq9.AI.AGENT.REGISTER", card) == {"error": ""}


async def test_register_a_bare_agent_card_and_list_it(nc, cards):
    card = dict(cards[0], name="lister-card")
    assert await call(nc, "$mq9.AI.AGENT.REGISTER", card) == {"error": ""}
    listed = await call(nc, "$mq9.AI.AGENT.DISCOVER")
    assert listed["error"] == ""
    item = next(a for a in listed["agents"] if a["name"] == "lister-card")
    assert set(item) == {"name", "agent_info"}
    assert json.loads(item["agent_info"])["description"] == card["description"]


async def test_register_name_and_payload_shape(nc, cards):
    info = json.dumps(dict(cards[1], name="wrapped-billing"))
    assert await call(nc, "$mq9.AI.AGENT.REGISTER", {"name": "wrapped-billing", "payload": info}) == {
        "error": ""
    }
    listed = await call(nc, "$mq9.AI.AGENT.DISCOVER", {})
    item = next(a for a in listed["agents"] if a["name"] == "wrapped-billing")
    assert item["agent_info"] == info
    # an info that is an AgentCard is searchable
    found = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"text": "refund invoice", "limit": 50})
    assert "wrapped-billing" in [a["name"] for a in found["agents"]]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "payload must not be empty"),
        (b'{"name": "x", "payload": ""}', "agent_info must not be empty"),
    ],
)
async def test_register_errors(nc, body, error):
    assert await call(nc, "$mq9.AI.AGENT.REGISTER", body) == {"error": error}


async def test_register_rejects_other_shapes(nc):
    for body in (b"{oops", b'{"something": 1}', b"[1, 2]"):
        reply = await call(nc, "$mq9.AI.AGENT.REGISTER", body)
        assert reply["error"].startswith("invalid AGENT.REGISTER payload: "), reply
        assert list(reply) == ["error"]


async def test_reregister_updates_the_card_and_its_index(nc, cards):
    base = dict(cards[4], name="updatable")
    await call(nc, "$mq9.AI.AGENT.REGISTER", base)
    changed = dict(base, description="Plays chess and explains openings.", skills=[])
    await call(nc, "$mq9.AI.AGENT.REGISTER", changed)
    listed = await call(nc, "$mq9.AI.AGENT.DISCOVER")
    item = next(a for a in listed["agents"] if a["name"] == "updatable")
    assert json.loads(item["agent_info"])["description"] == changed["description"]
    found = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"text": "chess openings"})
    assert [a["name"] for a in found["agents"]] == ["updatable"]


async def test_unregister_and_report(nc, cards):
    await call(nc, "$mq9.AI.AGENT.REGISTER", dict(cards[5], name="leaving"))
    assert await call(nc, "$mq9.AI.AGENT.REPORT", {"name": "leaving", "report_info": "busy"}) == {"error": ""}
    assert await call(nc, "$mq9.AI.AGENT.REPORT", {"name": "leaving"}) == {"error": ""}
    assert await call(nc, "$mq9.AI.AGENT.UNREGISTER", {"name": "leaving"}) == {"error": ""}
    assert await call(nc, "$mq9.AI.AGENT.UNREGISTER", {"name": "never-was"}) == {"error": ""}
    names = [a["name"] for a in (await call(nc, "$mq9.AI.AGENT.DISCOVER"))["agents"]]
    assert "leaving" not in names
    assert await call(nc, "$mq9.AI.AGENT.UNREGISTER", {"name": ""}) == {
        "error": "agent name must not be empty"
    }
    assert await call(nc, "$mq9.AI.AGENT.REPORT", {"name": ""}) == {"error": "agent name must not be empty"}
    assert (await call(nc, "$mq9.AI.AGENT.REPORT", {"report_info": 3}))["error"].startswith(
        "invalid AGENT.REPORT payload: "
    )


async def test_discover_text_and_semantic_over_the_labelled_set(nc, cards):
    await register_all(nc, cards)
    text = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"text": "weather forecast"})
    assert text["agents"][0]["name"] == "weather"
    first = text["agents"][0]
    assert set(first) == {"agent_id", "name", "description", "agent_info"}
    assert first["agent_id"] == "default\u0000weather"
    assert first["description"] == next(c for c in cards if c["name"] == "weather")["description"]
    semantic = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"semantic": "do I need an umbrella in London today"})
    assert semantic["agents"][0]["name"] == "weather"
    # semantic wins over text
    both = await call(
        nc, "$mq9.AI.AGENT.DISCOVER", {"semantic": "translate this letter into Italian", "text": "weather"}
    )
    assert both["agents"][0]["name"] == "translator"


async def test_discover_pages(nc, cards):
    await register_all(nc, cards)
    pages = []
    for page in (1, 2, 3):
        reply = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"semantic": "help me", "limit": 5, "page": page})
        pages.append([a["name"] for a in reply["agents"]])
    assert all(len(p) == 5 for p in pages)
    flat = [n for p in pages for n in p]
    assert len(set(flat)) == 15
    default_limit = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"semantic": "help me"})
    assert len(default_limit["agents"]) == 20


async def test_discover_bad_request(nc):
    reply = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"limit": "all"})
    assert reply["error"].startswith("invalid AGENT.DISCOVER payload: limit")
