"""mq9 state survives a broker restart: mailboxes, messages, keys, groups, delayed sends, agents."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import orjson
import pytest
from helpers.waits import wait_for

DATA = Path(__file__).parent.parent / "data" / "discovery_agents.json"
ENV = {"HF_HUB_OFFLINE": "1"}


async def call(nc, subject: str, body: bytes | dict = b"", headers: dict | None = None) -> dict:
    if isinstance(body, dict):
        body = orjson.dumps(body)
    msg = await nc.request(subject, body, timeout=10, headers=headers)
    return orjson.loads(msg.data)


async def fill(url: str) -> None:
    nc = await nats.connect(url)
    try:
        assert (await call(nc, "$mq9.AI.MAILBOX.CREATE", {"name": "keep.me", "ttl": 0}))["error"] == ""
        assert (await call(nc, "$mq9.AI.MAILBOX.CREATE", {"name": "gone.soon", "ttl": 1}))["error"] == ""
        send = "$mq9.AI.MSG.SEND.keep.me"
        await call(nc, send, b"n0")
        await call(nc, send, b"c1", {"mq9-priority": "critical"})
        await call(nc, send, b"v1", {"mq9-key": "state"})
        await call(nc, send, b"v2", {"mq9-key": "state", "mq9-tags": "x"})
        assert (await call(nc, send, b"held", {"mq9-delay": "3"}))["msg_id"] == -1
        ack = {"group_name": "g", "mail_address": "keep.me", "msg_id": 1}
        assert await call(nc, "$mq9.AI.MSG.ACK.keep.me", ack) == {"error": ""}
        for card in json.loads(DATA.read_text())["agents"]:
            assert await call(nc, "$mq9.AI.AGENT.REGISTER", card) == {"error": ""}
        assert await call(nc, "$mq9.AI.AGENT.UNREGISTER", {"name": "billing"}) == {"error": ""}
    finally:
        await nc.close()


async def check(url: str) -> None:
    nc = await nats.connect(url)
    try:
        # the delayed message is released (after the restart, or just before it) with the next offset
        released = await call(
            nc,
            "$mq9.AI.MSG.FETCH.keep.me",
            {"deliver": "from_id", "from_id": 4, "config": {"max_wait_ms": 8000}},
        )
        assert [(m["payload"], m["msg_id"]) for m in released["messages"]] == [("held", 4)]
        everything = await call(nc, "$mq9.AI.MSG.QUERY.keep.me")
        assert [m["payload"] for m in everything["messages"]] == ["n0", "c1", "v2", "held"]
        by_key = await call(nc, "$mq9.AI.MSG.QUERY.keep.me", {"key": "state"})
        assert [m["payload"] for m in by_key["messages"]] == ["v2"]
        by_tag = await call(nc, "$mq9.AI.MSG.QUERY.keep.me", {"tags": ["x"]})
        assert [m["payload"] for m in by_tag["messages"]] == ["v2"]
        group = await call(nc, "$mq9.AI.MSG.FETCH.keep.me", {"group_name": "g", "config": {"max_wait_ms": 0}})
        assert [m["payload"] for m in group["messages"]] == ["v2", "held"]
        # new sends continue the offsets
        assert (await call(nc, "$mq9.AI.MSG.SEND.keep.me", b"after"))["msg_id"] == 5
        gone = "mailbox gone.soon does not exist"  # its TTL of 1 s ends, across the restart too
        await wait_for(lambda: call(nc, "$mq9.AI.MSG.QUERY.gone.soon"), lambda r: r["error"] == gone)
        assert await call(nc, "$mq9.AI.MSG.SEND.gone.soon", b"x") == {"error": gone}
        names = {a["name"] for a in (await call(nc, "$mq9.AI.AGENT.DISCOVER"))["agents"]}
        assert "translator" in names and "billing" not in names
        text = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"text": "weather forecast"})
        assert text["agents"][0]["name"] == "weather"
        semantic = await call(nc, "$mq9.AI.AGENT.DISCOVER", {"semantic": "put this sentence into portuguese"})
        assert semantic["agents"][0]["name"] == "translator"
    finally:
        await nc.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_mq9_state_survives_a_restart(broker_factory, tmp_path, how):
    data_dir = tmp_path / f"data-{how}"
    first = broker_factory(data_dir=data_dir, env=ENV)
    await fill(first.nats_url)
    if how == "kill":
        first.kill()
    else:
        first.stop()
    second = broker_factory(data_dir=data_dir, env=ENV)
    await check(second.nats_url)
