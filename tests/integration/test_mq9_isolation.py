"""mq9 mailboxes with authentication on: an agent's mailbox is read and acked by its owner only,
and every stored message carries the sender's user as ``mq9-sender`` (never a client's value)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import nats
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

API = "$mq9.AI.API."
MQ9 = "$mq9.AI."
_ids = itertools.count()

USERS = """
[[auth.users]]
user = "alice"
password = "alice-pw"

[[auth.users]]
user = "bob"
password = "bob-pw"
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    from brokerproc import start_broker

    d = tmp_path_factory.mktemp("mq9-isolation")
    (d / "robustmq.toml").write_text(USERS)
    b = start_broker(d / "data", "--http-port", "off", "--config", str(d / "robustmq.toml"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def open_broker(tmp_path_factory):
    from brokerproc import start_broker

    b = start_broker(tmp_path_factory.mktemp("mq9-open") / "data", "--http-port", "off", "--mqtt-port", "off")
    yield b
    b.stop()


async def call(nc, subject: str, body: Any = b"", headers: dict[str, str] | None = None) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await nc.request(subject, data, timeout=10, headers=headers)
    return json.loads(msg.data)


def card(name: str, mailbox: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"the {name} agent",
        "version": "1.0.0",
        "skills": [{"id": "echo", "name": "echo", "description": "repeat the input", "tags": ["test"]}],
        "mailbox": mailbox,
    }


def sender_of(message: dict[str, Any]) -> list[str]:
    """Every ``mq9-sender`` value in a stored message's raw header block."""
    block = bytes(message["header"] or b"").decode()
    return [line.split(":", 1)[1].strip() for line in block.split("\r\n") if line.lower().startswith("mq9-sender:")]


async def fetch(nc, address: str) -> dict[str, Any]:
    return await call(nc, MQ9 + f"MSG.FETCH.{address}", {"deliver": "earliest", "config": {"max_wait_ms": 0}})


async def owned_mailbox(url: str) -> tuple[Any, Any, str]:
    """alice registers an agent with a mailbox; returns (alice, bob, address) connections."""
    n = next(_ids)
    alice = await nats.connect(url, user="alice", password="alice-pw")
    bob = await nats.connect(url, user="bob", password="bob-pw")
    address = f"vault{n}.inbox"
    reg = await call(alice, API + "AGENT.REGISTER", card(f"vault{n}", address))
    assert reg["error"] == "", reg
    for _ in range(100):  # the agent API creates the mailbox through mq9 without waiting
        if (await call(alice, MQ9 + f"MSG.QUERY.{address}"))["error"] == "":
            break
        await asyncio.sleep(0.02)
    return alice, bob, address


async def test_only_the_owner_may_fetch_ack_query_or_delete_an_agents_mailbox(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    sent = await call(bob, MQ9 + f"MSG.SEND.{address}", b"for alice")
    assert sent["error"] == "" and sent["msg_id"] == 0
    forbidden = {"error": f"forbidden: mailbox {address} belongs to another user"}
    assert await fetch(bob, address) == forbidden
    ack = {"group_name": "g", "mail_address": address, "msg_id": 0}
    assert await call(bob, MQ9 + f"MSG.ACK.{address}", ack) == forbidden
    # the body's address is the one acked, whatever the subject says
    assert await call(bob, MQ9 + "MSG.ACK.somewhere.else", ack) == forbidden
    assert await call(bob, MQ9 + f"MSG.QUERY.{address}") == forbidden
    assert await call(bob, MQ9 + f"MSG.DELETE.{address}.0") == forbidden
    got = await fetch(alice, address)
    assert [m["payload"] for m in got["messages"]] == ["for alice"]
    assert await call(alice, MQ9 + f"MSG.ACK.{address}", ack) == {"error": ""}
    # bob's failed attempts changed nothing: the message is still there for alice
    assert (await call(alice, MQ9 + f"MSG.QUERY.{address}"))["messages"][0]["payload"] == "for alice"
    await alice.close()
    await bob.close()


async def test_another_user_cannot_claim_an_owned_mailbox_for_an_agent(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    taken = await call(bob, API + "AGENT.REGISTER", card(f"impostor{next(_ids)}", address))
    assert taken["code"] == 403 and taken["error"] == f"mailbox {address} belongs to another user"
    assert (await fetch(bob, address))["error"].startswith("forbidden: ")
    await alice.close()
    await bob.close()


async def test_a_mailbox_no_agent_claims_is_open_to_every_user(secured):
    alice = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    created = await call(alice, MQ9 + "MAILBOX.CREATE", {"name": f"shared{next(_ids)}"})
    address = created["mail_address"]
    await call(alice, MQ9 + f"MSG.SEND.{address}", b"hello")
    got = await fetch(bob, address)
    assert got["error"] == "" and sender_of(got["messages"][0]) == ["alice"]
    await alice.close()
    await bob.close()


async def test_send_stamps_the_authenticated_user_and_drops_forged_senders(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    await call(bob, MQ9 + f"MSG.SEND.{address}", b"plain")
    forged = {"mq9-sender": "alice", "Mq9-Sender": "root", "mq9-priority": "urgent", "x-trace": "t1"}
    await call(bob, MQ9 + f"MSG.SEND.{address}", b"forged", forged)
    await call(bob, MQ9 + f"MSG.SEND.{address}", b"later", {"mq9-sender": "alice", "mq9-delay": "1"})
    await asyncio.sleep(1.5)  # the delayed send is released into the mailbox
    messages = (await call(alice, MQ9 + f"MSG.QUERY.{address}"))["messages"]
    by_payload = {m["payload"]: m for m in messages}
    assert sorted(by_payload) == ["forged", "later", "plain"]
    for m in messages:
        assert sender_of(m) == ["bob"]
    forged_block = bytes(by_payload["forged"]["header"]).decode()
    assert "x-trace: t1" in forged_block and by_payload["forged"]["priority"] == "urgent"
    await alice.close()
    await bob.close()


async def test_a_plain_nats_publish_on_the_address_is_stamped_too(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    await bob.publish(address, b"raw", headers={"mq9-sender": "alice"})
    await bob.publish(address, b"bare")
    await bob.flush()
    for _ in range(100):
        messages = (await call(alice, MQ9 + f"MSG.QUERY.{address}"))["messages"]
        if len(messages) == 2:
            break
        await asyncio.sleep(0.02)
    assert [(m["payload"], sender_of(m)) for m in messages] == [("raw", ["bob"]), ("bare", ["bob"])]
    await alice.close()
    await bob.close()


def mqtt_publish(port: int, topic: str, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev{next(_ids)}", protocol=mqtt.MQTTv5)
    client.username_pw_set("bob", "bob-pw")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("mq9-sender", "alice")]
        client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_an_mqtt_publish_into_a_mailbox_carries_the_mqtt_user(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    await asyncio.to_thread(mqtt_publish, secured.ports["mqtt"], address.replace(".", "/"), b"from a device")
    messages = (await call(alice, MQ9 + f"MSG.QUERY.{address}"))["messages"]
    assert [(m["payload"], sender_of(m)) for m in messages] == [("from a device", ["bob"])]
    await alice.close()
    await bob.close()


async def test_without_authentication_client_sender_values_are_kept_and_nothing_is_stamped(open_broker):
    nc = await nats.connect(open_broker.nats_url)
    address = (await call(nc, MQ9 + "MAILBOX.CREATE", {"name": f"open{next(_ids)}"}))["mail_address"]
    await call(nc, MQ9 + f"MSG.SEND.{address}", b"claimed", {"mq9-sender": "anyone"})
    await call(nc, MQ9 + f"MSG.SEND.{address}", b"anonymous")
    messages = (await call(nc, MQ9 + f"MSG.QUERY.{address}"))["messages"]
    assert [(m["payload"], sender_of(m)) for m in messages] == [("claimed", ["anyone"]), ("anonymous", [])]
    assert messages[1]["header"] is None
    await nc.close()


async def test_an_agent_bound_to_a_user_is_registered_unregistered_and_reported_on_only_by_them(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    name = address.split(".")[0]
    forbidden = {"error": f"forbidden: agent {name} belongs to another user"}
    assert await call(bob, MQ9 + "AGENT.REGISTER", card(name, address)) == forbidden
    wrapped = {"name": name, "payload": json.dumps(card(name, address))}
    assert await call(bob, MQ9 + "AGENT.REGISTER", wrapped) == forbidden
    assert await call(bob, MQ9 + "AGENT.UNREGISTER", {"name": name}) == forbidden
    assert await call(bob, MQ9 + "AGENT.REPORT", {"name": name, "report_info": "down"}) == forbidden
    listed = await call(bob, MQ9 + "AGENT.DISCOVER")
    assert name in [a["name"] for a in listed["agents"]]
    assert await call(alice, MQ9 + "AGENT.REPORT", {"name": name, "report_info": "fine"}) == {"error": ""}
    assert await call(alice, MQ9 + "AGENT.UNREGISTER", {"name": name}) == {"error": ""}
    # an agent only mq9 knows is bound to nobody
    assert await call(bob, MQ9 + "AGENT.REGISTER", card(f"free{next(_ids)}", "")) == {"error": ""}
    await alice.close()
    await bob.close()


async def test_a_legacy_push_subscription_to_an_owned_mailbox_is_refused_to_other_users(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    await call(alice, MQ9 + f"MSG.SEND.{address}", b"private")
    errors: list[Exception] = []
    got: list = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    async def snooped(msg) -> None:
        got.append(msg)

    snoop = await nats.connect(secured.nats_url, user="bob", password="bob-pw", error_cb=on_error)
    await snoop.subscribe(f"$mq9.AI.MAILBOX.MSG.{address}.*", cb=snooped)
    await snoop.flush()
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.02)
    assert "permissions violation for subscription" in str(errors[0]).lower()
    own: list = []

    async def keep(msg) -> None:
        own.append(msg)

    await alice.subscribe(f"$mq9.AI.MAILBOX.MSG.{address}.*", cb=keep)
    for _ in range(100):
        if own:
            break
        await asyncio.sleep(0.02)
    assert len(own) == 1 and got == []
    await snoop.close()
    await alice.close()
    await bob.close()
