"""Tools and pipelines with authentication on: tool names bound to users, runs to their caller."""

from __future__ import annotations

import nats
import pytest
from helpers.agents import API, Agent, call
from helpers.tools import Tool
from helpers.users import USERS


@pytest.fixture
def secured(broker_factory, tmp_path):
    config = tmp_path / "robustmq.toml"
    config.write_text(USERS)
    return broker_factory("--config", str(config))


async def test_a_tool_name_belongs_to_its_first_user(secured):
    alice_tool = await Tool(
        secured.nats_url, "ledger", lambda a: 1, user="alice", password="alice-pw"
    ).start()
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    taken = await call(bob, API + "TOOL.REGISTER", {"name": "ledger", "input_schema": {"type": "object"}})
    assert taken["code"] == 403
    beat = await call(bob, API + "TOOL.HEARTBEAT.ledger", {"instance_id": alice_tool.reg["instance_id"]})
    assert beat["code"] == 403
    assert (await call(bob, API + "TOOL.INVOKE.ledger", {"arguments": {}}))["result"] == 1
    await bob.close()
    await alice_tool.close()


async def test_a_run_is_seen_by_its_caller_and_its_steps_carry_the_caller(secured):
    alice = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start()
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    carol = await nats.connect(secured.nats_url, user="carol", password="carol-pw")
    created = await call(
        bob, API + "PIPELINE.CREATE", {"name": "p", "steps": [{"id": "v", "agent": "vault"}]}
    )
    assert created["error"] == ""
    reply = await call(bob, API + "PIPELINE.RUN.p", {"input": 1})
    assert reply["state"] == "completed"
    assert alice.headers[0]["mq9-sender"] == "bob"
    assert (await call(bob, API + f"PIPELINE.STATUS.{reply['run_id']}"))["state"] == "completed"
    assert (await call(carol, API + f"PIPELINE.STATUS.{reply['run_id']}"))["code"] == 403
    for conn in (bob, carol):
        await conn.close()
    await alice.close()
