"""The legacy layout of the robustmq==1.0.0 SDK, spoken by nats-py: per-connection reply shapes,
MAILBOX.MSG sends, push delivery of stored and new messages, LIST and DELETE."""

from __future__ import annotations

import asyncio
import base64
import json

import nats
import orjson
import pytest
from brokerproc import start_broker
from helpers.waits import QUIET_S, wait_until

LEGACY_NAME = "robustmq-mq9-python"


@pytest.fixture(scope="module")
def mq9_broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("mq9legacy") / "data", env={"HF_HUB_OFFLINE": "1"})
    yield b
    b.stop()


@pytest.fixture
async def legacy(mq9_broker):
    client = await nats.connect(mq9_broker.nats_url, name=LEGACY_NAME)
    yield client
    await client.close()


@pytest.fixture
async def current(mq9_broker):
    client = await nats.connect(mq9_broker.nats_url)
    yield client
    await client.close()


async def call(nc, subject: str, body: dict | bytes = b"{}") -> dict:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    msg = await nc.request(subject, body, timeout=10)
    return orjson.loads(msg.data)


def decode_push(msg) -> tuple[object, bytes, str]:
    """(msg_id, payload, priority) the way the SDK reads a pushed message."""
    priority = msg.subject.rsplit(".", 1)[1]
    try:
        envelope = json.loads(msg.data)
    except ValueError:
        envelope = None
    if isinstance(envelope, dict) and "msg_id" in envelope:
        return envelope["msg_id"], base64.b64decode(envelope["payload"]), priority
    return "", msg.data, priority


async def test_legacy_connection_gets_legacy_replies(legacy):
    reply = await call(legacy, "$mq9.AI.MAILBOX.CREATE", {"ttl": 3600})
    assert "error" not in reply and reply["mail_id"]
    failed = await call(legacy, "$mq9.AI.MAILBOX.CREATE", {"ttl": "x"})
    assert set(failed) == {"error"} and failed["error"]


async def test_public_create_marks_a_connection_legacy(current):
    reply = await call(
        current, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60, "public": True, "name": "legacy.public.one"}
    )
    assert reply == {"mail_id": "legacy.public.one", "is_new": True}
    # the connection stays legacy-shaped from now on
    again = await call(current, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60})
    assert "error" not in again and "mail_id" in again


async def test_current_connection_keeps_current_replies(current):
    reply = await call(current, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60})
    assert reply["error"] == "" and reply["mail_address"]


async def test_send_subscribe_list_delete(legacy, current):
    mail_id = (await call(legacy, "$mq9.AI.MAILBOX.CREATE", {"ttl": 3600}))["mail_id"]
    for priority, body in (("low", b"l0"), ("normal", b"n1"), ("high", b"h2")):
        await legacy.publish(f"$mq9.AI.MAILBOX.MSG.{mail_id}.{priority}", body)
    await legacy.flush()
    listed = await call(legacy, f"$mq9.AI.MAILBOX.LIST.{mail_id}")
    assert "error" not in listed
    assert [(m["msg_id"], m["priority"]) for m in listed["messages"]] == [
        (0, "low"),
        (1, "normal"),
        (2, "high"),
    ]
    assert all(isinstance(m["ts"], int) and m["ts"] > 0 for m in listed["messages"])

    received: asyncio.Queue = asyncio.Queue()

    async def on_msg(msg):
        await received.put(decode_push(msg))

    await legacy.subscribe(f"$mq9.AI.MAILBOX.MSG.{mail_id}.*", cb=on_msg)
    await legacy.flush()
    # stored messages first, higher priority first
    stored = [await asyncio.wait_for(received.get(), 10) for _ in range(3)]
    assert stored == [(2, b"h2", "high"), (1, b"n1", "normal"), (0, b"l0", "low")]
    # then new ones, live
    await legacy.publish(f"$mq9.AI.MAILBOX.MSG.{mail_id}.normal", b"live")
    _, payload, priority = await asyncio.wait_for(received.get(), 10)
    assert (payload, priority) == (b"live", "normal")
    # a current-layout send to the same mailbox is pushed too, with current priorities mapped
    await call(current, f"$mq9.AI.MSG.SEND.{mail_id}", b"from-current")
    msg_id, payload, priority = await asyncio.wait_for(received.get(), 10)
    assert (msg_id, payload, priority) == (4, b"from-current", "normal")

    assert await call(legacy, f"$mq9.AI.MAILBOX.DELETE.{mail_id}.1") == {"deleted": True}
    listed = await call(legacy, f"$mq9.AI.MAILBOX.LIST.{mail_id}")
    assert [m["msg_id"] for m in listed["messages"]] == [0, 2, 3, 4]
    # messages stay after push: subscribing again replays them
    again: asyncio.Queue = asyncio.Queue()

    async def on_again(msg):
        await again.put(decode_push(msg))

    await legacy.subscribe(f"$mq9.AI.MAILBOX.MSG.{mail_id}.high", cb=on_again)
    assert await asyncio.wait_for(again.get(), 10) == (2, b"h2", "high")


async def test_queue_group_members_share_the_stored_messages(legacy, mq9_broker):
    mail_id = (await call(legacy, "$mq9.AI.MAILBOX.CREATE", {"ttl": 3600}))["mail_id"]
    for i in range(4):
        await legacy.publish(f"$mq9.AI.MAILBOX.MSG.{mail_id}.normal", f"m{i}".encode())
    await legacy.flush()
    other = await nats.connect(mq9_broker.nats_url, name=LEGACY_NAME)
    got: list[bytes] = []
    try:

        async def on_msg(msg):
            got.append(decode_push(msg)[1])

        await legacy.subscribe(f"$mq9.AI.MAILBOX.MSG.{mail_id}.*", queue="workers", cb=on_msg)
        await other.subscribe(f"$mq9.AI.MAILBOX.MSG.{mail_id}.*", queue="workers", cb=on_msg)
        await legacy.flush()
        await other.flush()
        for i in range(4, 8):
            await legacy.publish(f"$mq9.AI.MAILBOX.MSG.{mail_id}.normal", f"m{i}".encode())
        await legacy.flush()
        await wait_until(lambda: len(got) >= 8)
        await legacy.flush()
        await other.flush()
        await asyncio.sleep(QUIET_S)  # a second copy of any message, had one been pushed, would be here now
        assert sorted(got) == [f"m{i}".encode() for i in range(8)]
    finally:
        await other.close()


async def test_legacy_errors_are_json_without_success_keys(legacy):
    reply = await call(legacy, "$mq9.AI.MAILBOX.LIST.nope")
    assert reply == {"error": "mailbox nope does not exist"}
    reply = await call(legacy, "$mq9.AI.MAILBOX.DELETE.nope.x")
    assert reply == {"error": "invalid msg_id: x"}


async def test_legacy_send_to_a_missing_mailbox_is_silently_dropped(legacy):
    await legacy.publish("$mq9.AI.MAILBOX.MSG.nobody.normal", b"lost")
    await legacy.flush()
    assert legacy.is_connected
    reply = await call(legacy, "$mq9.AI.MAILBOX.CREATE", {"ttl": 10})
    assert "mail_id" in reply
