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
from helpers.waits import wait_for, wait_until
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
    return [
        line.split(":", 1)[1].strip()
        for line in block.split("\r\n")
        if line.lower().startswith("mq9-sender:")
    ]


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
    # the agent API creates the mailbox through mq9 without waiting
    await wait_for(lambda: call(alice, MQ9 + f"MSG.QUERY.{address}"), lambda r: r["error"] == "")
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
    # the delayed send is released into the mailbox after its second
    reply = await wait_for(
        lambda: call(alice, MQ9 + f"MSG.QUERY.{address}"), lambda r: len(r["messages"]) == 3
    )
    messages = reply["messages"]
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
    reply = await wait_for(
        lambda: call(alice, MQ9 + f"MSG.QUERY.{address}"), lambda r: len(r["messages"]) >= 2
    )
    messages = reply["messages"]
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
    # a name nobody holds is free to register (and is bob's from now on)
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
    await wait_until(lambda: errors)
    assert "permissions violation for subscription" in str(errors[0]).lower()
    own: list = []

    async def keep(msg) -> None:
        own.append(msg)

    await alice.subscribe(f"$mq9.AI.MAILBOX.MSG.{address}.*", cb=keep)
    await wait_until(lambda: own)
    assert len(own) == 1 and got == []
    await snoop.close()
    await alice.close()
    await bob.close()


class Watcher:
    """One connection's deliveries, with the subscription errors the server sent it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.got: list = []

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    async def on_msg(self, msg) -> None:
        self.got.append(msg)

    async def connect(self, url: str, user: str) -> Any:
        return await nats.connect(url, user=user, password=f"{user}-pw", error_cb=self.on_error)


def mailbox_subjects(address: str) -> set[str]:
    return {
        address,
        MQ9 + f"MSG.SEND.{address}",
        *(MQ9 + f"MAILBOX.MSG.{address}.{p}" for p in ("high", "normal", "low")),
    }


async def test_live_deliveries_on_an_owned_address_reach_only_the_owner_with_the_stamped_sender(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    snoop = Watcher()
    spy = await snoop.connect(secured.nats_url, "bob")
    await spy.subscribe(address, cb=snoop.on_msg)  # the address itself: refused
    await spy.flush()
    await wait_until(lambda: snoop.errors)
    assert snoop.errors == [f'nats: permissions violation for subscription to "{address}"']
    await spy.subscribe(MQ9 + f"MSG.SEND.{address}", cb=snoop.on_msg)  # the SEND subject: refused too
    await spy.flush()
    await wait_until(lambda: len(snoop.errors) == 2)
    # wildcards that match the address are allowed, and see nothing of it
    for pattern in (address.split(".")[0] + ".*", ">", "$mq9.AI.MSG.SEND.>", "$mq9.AI.MAILBOX.MSG.>"):
        await spy.subscribe(pattern, cb=snoop.on_msg)
    await spy.flush()
    own = Watcher()
    await alice.subscribe(address, cb=own.on_msg)
    await alice.subscribe(MQ9 + f"MSG.SEND.{address}", cb=own.on_msg)
    await alice.flush()
    await bob.publish(address, b"raw", headers={"mq9-sender": "alice", "x-trace": "t1"})
    await call(bob, MQ9 + f"MSG.SEND.{address}", b"sent", {"mq9-sender": "alice"})
    await bob.publish(MQ9 + f"MAILBOX.MSG.{address}.high", b"legacy")
    await bob.flush()
    await wait_until(lambda: len(own.got) == 2)
    await spy.flush()  # anything routed to the spy before its PONG has arrived by now
    assert [(m.subject, m.data, m.headers["mq9-sender"]) for m in own.got] == [
        (address, b"raw", "bob"),
        (MQ9 + f"MSG.SEND.{address}", b"sent", "bob"),
    ]
    assert own.got[0].headers["x-trace"] == "t1"
    assert [m.subject for m in snoop.got if m.subject in mailbox_subjects(address)] == []
    # the owner still reads all three from the mailbox, stamped the same way
    messages = (await call(alice, MQ9 + f"MSG.QUERY.{address}"))["messages"]
    assert sorted((m["payload"], tuple(sender_of(m))) for m in messages) == [
        ("legacy", ("bob",)), ("raw", ("bob",)), ("sent", ("bob",))
    ]  # fmt: skip
    await spy.close()
    await alice.close()
    await bob.close()


async def test_a_subscription_made_before_the_agent_claimed_the_address_stops_receiving(secured):
    n = next(_ids)
    address = f"early{n}.inbox"
    alice = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    early = Watcher()
    await bob.subscribe(address, cb=early.on_msg)
    await bob.flush()
    await alice.publish(address, b"before")
    await alice.flush()
    await wait_until(lambda: len(early.got) == 1)
    reg = await call(alice, API + "AGENT.REGISTER", card(f"early{n}", address))
    assert reg["error"] == ""
    own = Watcher()
    await alice.subscribe(address, cb=own.on_msg)
    await alice.flush()
    await alice.publish(address, b"after")
    await alice.flush()
    await wait_until(lambda: len(own.got) == 1)
    await bob.flush()
    assert [m.data for m in early.got] == [b"before"]
    await alice.close()
    await bob.close()


class MqttWatcher:
    """A paho MQTT 5 client in its own thread: SUBACK codes and received messages."""

    def __init__(self, port: int, user: str) -> None:
        import queue

        self.subacks: queue.Queue = queue.Queue()
        self.messages: list = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}{next(_ids)}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, f"{user}-pw")
        self.client.on_subscribe = lambda c, u, mid, reasons, props: self.subacks.put(reasons[0].value)
        self.client.on_message = lambda c, u, msg: self.messages.append(msg)
        connected: queue.Queue = queue.Queue()
        self.client.on_connect = lambda c, u, flags, rc, props: connected.put(rc)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        connected.get(timeout=10)

    def subscribe(self, topic: str) -> int:
        self.client.subscribe(topic, 1)
        return self.subacks.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def user_properties(msg) -> dict[str, str]:
    return dict(getattr(msg.properties, "UserProperty", []) or [])


async def test_mqtt_subscriptions_to_an_owned_address_follow_the_same_rule(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    topic = address.replace(".", "/")
    port = secured.ports["mqtt"]
    spy = await asyncio.to_thread(MqttWatcher, port, "bob")
    owner = await asyncio.to_thread(MqttWatcher, port, "alice")
    assert await asyncio.to_thread(spy.subscribe, topic) == 0x87  # not authorized
    assert await asyncio.to_thread(spy.subscribe, "#") == 1
    assert await asyncio.to_thread(spy.subscribe, topic.split("/")[0] + "/+") == 1
    assert await asyncio.to_thread(owner.subscribe, topic) == 1
    await bob.publish(address, b"to alice", headers={"mq9-sender": "alice"})
    await bob.flush()
    await wait_until(lambda: owner.messages)
    await bob.publish("unrelated.topic", b"marker")  # the spy gets this one after anything earlier
    await bob.flush()
    await wait_until(lambda: spy.messages)
    assert [m.topic for m in spy.messages] == ["unrelated/topic"]
    assert owner.messages[0].payload == b"to alice"
    assert user_properties(owner.messages[0])["mq9-sender"] == "bob"
    await asyncio.to_thread(spy.close)
    await asyncio.to_thread(owner.close)
    await alice.close()
    await bob.close()


async def test_a_legacy_mqtt_subscription_to_an_owned_mailbox_is_refused_to_other_users(secured):
    alice, bob, address = await owned_mailbox(secured.nats_url)
    await call(alice, MQ9 + f"MSG.SEND.{address}", b"private")
    legacy = "$mq9/AI/MAILBOX/MSG/" + address.replace(".", "/") + "/+"
    port = secured.ports["mqtt"]
    spy = await asyncio.to_thread(MqttWatcher, port, "bob")
    assert await asyncio.to_thread(spy.subscribe, legacy) == 0x87
    assert await asyncio.to_thread(spy.subscribe, "$mq9/AI/MAILBOX/MSG/#") == 1
    owner = await asyncio.to_thread(MqttWatcher, port, "alice")
    assert await asyncio.to_thread(owner.subscribe, legacy) == 1
    await wait_until(lambda: owner.messages)  # the stored message is pushed to the owner
    assert json.loads(owner.messages[0].payload)["msg_id"] == 0
    await bob.publish(MQ9 + f"MAILBOX.MSG.{address}.normal", b"legacy send")
    await bob.flush()
    await wait_until(lambda: len(owner.messages) == 2)
    await bob.publish(MQ9 + "MAILBOX.MSG.nobody.normal", b"marker")
    await bob.flush()
    await wait_until(lambda: spy.messages)
    assert [m.topic for m in spy.messages] == ["$mq9/AI/MAILBOX/MSG/nobody/normal"]
    await asyncio.to_thread(spy.close)
    await asyncio.to_thread(owner.close)
    await alice.close()
    await bob.close()


async def test_an_agent_registered_through_mq9_is_bound_to_its_user(secured):
    n = next(_ids)
    name, address = f"mqagent{n}", f"mqagent{n}.inbox"
    alice = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    assert (await call(alice, MQ9 + "MAILBOX.CREATE", {"name": address, "ttl": 0}))["error"] == ""
    assert await call(alice, MQ9 + "AGENT.REGISTER", card(name, address)) == {"error": ""}
    forbidden = {"error": f"forbidden: agent {name} belongs to another user"}
    assert await call(bob, MQ9 + "AGENT.REGISTER", card(name, "")) == forbidden
    assert await call(bob, MQ9 + "AGENT.UNREGISTER", {"name": name}) == forbidden
    assert await call(bob, MQ9 + "AGENT.REPORT", {"name": name, "report_info": "x"}) == forbidden
    taken = await call(bob, API + "AGENT.REGISTER", card(name, ""))
    assert taken["code"] == 403
    # the card's mailbox is the agent's now: read by alice only, and nobody else's agent may claim it
    await call(bob, MQ9 + f"MSG.SEND.{address}", b"hi")
    assert await fetch(bob, address) == {"error": f"forbidden: mailbox {address} belongs to another user"}
    assert [m["payload"] for m in (await fetch(alice, address))["messages"]] == ["hi"]
    claim = await call(bob, MQ9 + "AGENT.REGISTER", card(f"thief{n}", address))
    assert claim == {"error": f"forbidden: mailbox {address} belongs to another user"}
    info = await call(bob, API + f"AGENT.INFO.{name}")
    assert info["agent"]["mailbox"] == address
    # unregistered by its owner, the name and the mailbox are free again
    assert await call(alice, MQ9 + "AGENT.UNREGISTER", {"name": name}) == {"error": ""}
    assert await call(bob, MQ9 + "AGENT.REGISTER", card(name, "")) == {"error": ""}
    assert (await fetch(bob, address))["error"] == ""
    await alice.close()
    await bob.close()


def persistent_subscriber(port: int, user: str, client_id: str, topics: list[str]) -> None:
    """An MQTT 3.1.1 client with a persistent session subscribes to ``topics`` and leaves."""
    import queue

    acked: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.username_pw_set(user, f"{user}-pw")
    client.on_subscribe = lambda c, u, mid, reasons, props: acked.put(mid)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic in topics:
            client.subscribe(topic, 1)
            acked.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_restored_mqtt_subscriptions_are_checked_against_agent_owners_again(broker_factory, tmp_path):
    import httpx

    config = tmp_path / "robustmq.toml"
    # the subscription list is a server-wide view: an admin's (users are no REST admins implicitly)
    config.write_text(USERS + '\n[[auth.users]]\nuser = "ops"\npassword = "ops-pw"\nrole = "admin"\n')
    data = tmp_path / "restart-data"
    first = broker_factory("--config", str(config), data_dir=data)
    await asyncio.to_thread(
        persistent_subscriber, first.ports["mqtt"], "bob", "bob-device", ["claimed/inbox", "free/topic"]
    )
    alice = await nats.connect(first.nats_url, user="alice", password="alice-pw")
    reg = await call(alice, API + "AGENT.REGISTER", card("claimer", "claimed.inbox"))
    assert reg["error"] == ""
    await alice.close()
    first.stop()
    second = broker_factory("--config", str(config), data_dir=data)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{second.ports['http']}", auth=("ops", "ops-pw")
    ) as http:
        listed = (await http.get("/api/v1/subscriptions", params={"protocol": "mqtt"})).json()
    assert sorted(item["subject"] for item in listed["items"]) == ["free.topic"]
