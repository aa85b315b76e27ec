"""The blocking facade ``mq9.sync.Client`` against the real broker and an agent process."""

from __future__ import annotations

import pytest
from helpers.waits import wait_until_sync
from mq9 import NotFound, TaskFailed
from mq9.sync import Client

ECHO_AGENT = '''
from mq9 import Agent, TaskContext

agent = Agent("echo", description="Echoes what it gets")


@agent.skill
async def echo(text: str, ctx: TaskContext) -> str:
    """Echo the text back."""
    await ctx.progress({"len": len(text)})
    if text == "fail":
        raise ValueError("asked to fail")
    return text
'''


def wait_live(c: Client, name: str, timeout_s: float = 30.0) -> None:
    def healthy() -> bool:
        try:
            return c.agent_status(name)["status"] == "healthy"
        except NotFound:
            return False

    wait_until_sync(healthy, timeout_s, interval=0.1, what=f"agent {name} up")


def test_sync_client_mailbox_round_trip(sdk_broker):
    with Client(sdk_broker.nats_url) as c:
        box = c.create_mailbox("sync.box", ttl=60)
        assert c.send(box, b"one", priority="urgent") == 0
        msgs = c.fetch(box, group="g", deliver="earliest")
        assert [(m.msg_id, m.payload, m.priority) for m in msgs] == [(0, b"one", "urgent")]
        c.ack(box, group="g", msg_id=0)
        assert c.fetch(box, group="g", max_wait_ms=50) == []
        assert [m.payload for m in c.query(box)] == [b"one"]


def test_sync_client_invokes_follows_and_fails(sdk_broker, agent_processes):
    agent_processes(ECHO_AGENT, "echo_agent:agent", sdk_broker.nats_url)
    with Client(sdk_broker.nats_url) as c:
        wait_live(c, "echo")
        assert c.invoke("echo", {"text": "hi"}) == "hi"
        task = c.invoke("echo", {"text": "later"}, wait=False)
        assert task.result(timeout=10) == "later"
        assert [e.data for e in task.events() if e.type == "progress"] == [{"len": 5}]
        with pytest.raises(TaskFailed, match="asked to fail"):
            c.invoke("echo", {"text": "fail"})
        assert [a.name for a in c.discover(text="echoes")][:1] == ["echo"]
        # methods without a blocking twin of their own are proxied too
        assert c.is_connected
        with pytest.raises(NotFound):
            c.deregister("nobody")
