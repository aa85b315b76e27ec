"""Per-agent isolation with authentication on: names bound to users, work private, sender stamped."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from helpers.agents import API, Agent, call, card
from helpers.users import USERS
from helpers.waits import QUIET_S, wait_until


@pytest.fixture
def secured(broker_factory, tmp_path):
    config = tmp_path / "robustmq.toml"
    config.write_text(USERS)
    return broker_factory("--config", str(config))


async def test_only_the_owner_may_register_heartbeat_or_deregister(secured):
    alice = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start()
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    taken = await call(bob, API + "AGENT.REGISTER", card("vault"))
    assert taken["code"] == 403
    beat = await call(bob, API + "AGENT.HEARTBEAT.vault", {"instance_id": alice.instance_id})
    assert beat["code"] == 403
    gone = await call(bob, API + "AGENT.DEREGISTER.vault")
    assert gone["code"] == 403
    second = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start()
    assert second.instance_id != alice.instance_id
    own = await call(alice.nc, API + "AGENT.HEARTBEAT.vault", {"instance_id": alice.instance_id})
    assert own["error"] == ""
    await bob.close()
    await alice.close()
    await second.close()


async def test_work_reaches_only_the_instance_and_the_sender_is_stamped(secured):
    alice = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start()
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    snooped: list = []

    async def snoop(msg):
        snooped.append(msg)

    await bob.subscribe(alice.reg["serve_subject"], cb=snoop)
    await bob.subscribe("$mq9.AI.INVOKE.>", cb=snoop)
    await bob.flush()
    msg = await bob.request(
        API + "AGENT.INVOKE.vault",
        json.dumps({"input": "secret"}).encode(),
        timeout=5,
        headers={"mq9-sender": "mallory"},
    )
    reply = json.loads(msg.data)
    assert reply["output"] == "secret"
    assert alice.headers[0]["mq9-sender"] == "bob"
    await bob.flush()
    await asyncio.sleep(QUIET_S)  # a copy for the snooper, had the broker sent one, would be here by now
    assert snooped == []
    carol = await nats.connect(secured.nats_url, user="carol", password="carol-pw")
    denied = await call(carol, API + f"TASK.GET.{reply['task_id']}")
    assert denied["code"] == 403
    mine = await call(bob, API + f"TASK.GET.{reply['task_id']}")
    assert mine["task"]["state"] == "completed"
    owner_view = await call(alice.nc, API + f"TASK.EVENTS.{reply['task_id']}")
    assert owner_view["state"] == "completed"
    await carol.close()
    await bob.close()
    await alice.close()


async def test_task_events_only_from_the_agents_owner(secured):
    alice = await Agent(secured.nats_url, "vault", hold=True, user="alice", password="alice-pw").start()
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    sub = await call(bob, API + "AGENT.INVOKE.vault", {"input": 1, "mode": "async"})
    await wait_until(lambda: len(alice.received) == 1)
    forged = await call(bob, f"$mq9.AI.TASK.EVENT.{sub['task_id']}", {"type": "progress", "data": "fake"})
    assert forged["code"] == 403
    real = await call(alice.nc, f"$mq9.AI.TASK.EVENT.{sub['task_id']}", {"type": "progress", "data": "real"})
    assert real["error"] == ""
    events = await call(bob, API + f"TASK.EVENTS.{sub['task_id']}")
    assert [e["data"] for e in events["events"] if e["type"] == "progress"] == ["real"]
    await alice.release()
    await bob.close()
    await alice.close()


async def test_only_the_owner_may_subscribe_to_an_agents_serve_subject(secured):
    alice = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start()
    serve = alice.reg["serve_subject"]
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw", error_cb=on_error)
    await bob.subscribe(serve)
    await bob.flush()
    await wait_until(lambda: errors)
    assert errors == [
        f'nats: permissions violation for subscription to "{serve.lower()}"'
    ]  # nats-py lowers it
    # on the wire: nats-server's text, then the connection goes on answering
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.ports["nats"])
    await reader.readline()  # INFO
    writer.write(
        b'CONNECT {"verbose":false,"user":"bob","pass":"bob-pw"}\r\nSUB %s 1\r\nPING\r\n' % serve.encode()
    )
    assert (
        await reader.readline()
        == b"-ERR 'Permissions Violation for Subscription to \"%s\"'\r\n" % serve.encode()
    )
    assert await reader.readline() == b"PONG\r\n"
    writer.close()
    # the connection stays open and carries on
    assert bob.is_connected
    listed = await call(bob, API + "AGENT.LIST")
    assert listed["error"] == ""
    # every instance of the agent is refused too; the owner's second connection, a wildcard over
    # every agent (work reaches only the instance's own connection) and an unbound name are not
    await bob.subscribe("$mq9.AI.INVOKE.vault.*")
    await bob.flush()
    await wait_until(lambda: len(errors) == 2)
    assert errors[1] == 'nats: permissions violation for subscription to "$mq9.ai.invoke.vault.*"'
    twin = await nats.connect(secured.nats_url, user="alice", password="alice-pw", error_cb=on_error)
    await twin.subscribe(serve)
    await bob.subscribe("$mq9.AI.INVOKE.>")
    await bob.subscribe("$mq9.AI.INVOKE.nobody.x")
    await twin.flush()
    await bob.flush()
    assert len(errors) == 2
    await twin.close()
    await bob.close()
    await alice.close()


def _mqtt_suback(port: int, user: str, password: str, topic: str) -> int:
    """Subscribe with paho (MQTT 5) as ``user``; the SUBACK reason code."""
    import queue

    import paho.mqtt.client as paho

    codes: queue.Queue = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{user}-sub", protocol=paho.MQTTv5)
    client.username_pw_set(user, password)
    client.on_connect = lambda c, u, flags, rc, props: c.subscribe(topic, 0)
    client.on_subscribe = lambda c, u, mid, reasons, props: codes.put(reasons[0].value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        return codes.get(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_an_mqtt_client_may_subscribe_to_an_agents_serve_topic_only_as_its_owner(secured):
    alice = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start()
    topic = alice.reg["serve_subject"].replace(".", "/")
    port = secured.ports["mqtt"]
    assert await asyncio.to_thread(_mqtt_suback, port, "bob", "bob-pw", topic) == 0x87  # not authorized
    assert await asyncio.to_thread(_mqtt_suback, port, "bob", "bob-pw", "$mq9/AI/INVOKE/vault/+") == 0x87
    assert await asyncio.to_thread(_mqtt_suback, port, "alice", "alice-pw", topic) == 0
    await alice.close()


async def test_an_agent_registered_through_mq9_belongs_to_its_user_here_too(secured):
    alice = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    registered = await call(alice, "$mq9.AI.AGENT.REGISTER", {**card("ledger"), "mailbox": "ledger.inbox"})
    assert registered == {"error": ""}
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw", error_cb=on_error)
    taken = await call(bob, API + "AGENT.REGISTER", card("ledger"))
    assert taken["code"] == 403
    gone = await call(bob, API + "AGENT.DEREGISTER.ledger")
    assert gone["code"] == 403
    claimed = await call(bob, API + "AGENT.REGISTER", {**card("copycat"), "mailbox": "ledger.inbox"})
    assert claimed["code"] == 403 and claimed["error"] == "mailbox ledger.inbox belongs to another user"
    for subject in ("$mq9.AI.INVOKE.ledger.any", "ledger.inbox"):
        await bob.subscribe(subject)
    await bob.flush()
    await wait_until(lambda: len(errors) == 2)
    assert errors == [
        'nats: permissions violation for subscription to "$mq9.ai.invoke.ledger.any"',
        'nats: permissions violation for subscription to "ledger.inbox"',
    ]
    # the owner runs it as a live agent through the API
    agent = await Agent(secured.nats_url, "ledger", user="alice", password="alice-pw").start()
    assert agent.reg["name"] == "ledger"
    await agent.close()
    await bob.close()
    await alice.close()
