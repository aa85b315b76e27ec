"""Isolation by the message, whatever pattern a snooper subscribes with.

bob holds ``>``, ``_INBOX.>``, ``$mq9.AI.>`` and ``$mq9.AI.TASK.UPDATES.*`` over NATS and ``#``
over MQTT while alice uses her mailbox, invokes her agent (sync and async), watches her task and
makes plain requests: none of her inputs, outputs, messages or replies reaches bob, and wildcards
still carry everything public.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import paho.mqtt.client as mqtt
import pytest
from helpers.agents import API, Agent, call, card
from helpers.users import USERS
from helpers.waits import QUIET_S, wait_for, wait_until

MQ9 = "$mq9.AI."
SECRETS = ("mailbox-secret", "input-secret", "reply-secret", "async-secret")


@pytest.fixture
def secured(broker_factory, tmp_path):
    config = tmp_path / "robustmq.toml"
    config.write_text(USERS)
    return broker_factory("--config", str(config))


class Snooper:
    """bob on NATS with every wildcard, and on MQTT with ``#``."""

    def __init__(self) -> None:
        self.nats: list[tuple[str, bytes]] = []
        self.mqtt: list[tuple[str, bytes]] = []
        self.nc: Any = None
        self.client: Any = None

    async def start(self, broker) -> Snooper:
        self.nc = await nats.connect(broker.nats_url, user="bob", password="bob-pw")

        async def keep(msg) -> None:
            self.nats.append((msg.subject, msg.data))

        for pattern in (">", "_INBOX.>", "$mq9.AI.>", "$mq9.AI.TASK.UPDATES.*"):
            await self.nc.subscribe(pattern, cb=keep)
        await self.nc.flush()
        subscribed = asyncio.Event()
        loop = asyncio.get_running_loop()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bob-snoop", protocol=mqtt.MQTTv311)
        client.username_pw_set("bob", "bob-pw")
        client.on_message = lambda c, u, m: self.mqtt.append((m.topic, m.payload))
        client.on_subscribe = lambda *a: loop.call_soon_threadsafe(subscribed.set)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=0)
        client.connect("127.0.0.1", broker.ports["mqtt"])
        client.loop_start()
        self.client = client
        await asyncio.wait_for(subscribed.wait(), 5)
        return self

    def saw(self, needle: str) -> list[str]:
        return [s for s, data in self.nats + self.mqtt if needle.encode() in data]

    async def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        await self.nc.close()


async def test_wildcards_receive_none_of_another_users_private_traffic(secured):
    bob = await Snooper().start(secured)
    agent = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start(
        {**card("vault"), "mailbox": "vault.inbox"}
    )
    alice = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    # the agent API creates the mailbox through mq9 without waiting
    await wait_for(lambda: call(alice, MQ9 + "MSG.QUERY.vault.inbox"), lambda r: r["error"] == "")

    # the mailbox: a send (its subject is guarded) and a FETCH whose reply carries the message
    assert (await call(alice, MQ9 + "MSG.SEND.vault.inbox", b"mailbox-secret"))["error"] == ""
    got = await call(
        alice, MQ9 + "MSG.FETCH.vault.inbox", {"deliver": "earliest", "config": {"max_wait_ms": 0}}
    )
    assert [m["payload"] for m in got["messages"]] == ["mailbox-secret"]

    # a sync invoke: the request carries the input, the agent's reply and alice's reply the output
    done = await call(alice, API + "AGENT.INVOKE.vault", {"input": "input-secret"})
    assert done["output"] == "input-secret"

    # an async invoke watched on its update feed
    updates: list[dict] = []

    async def on_update(msg) -> None:
        updates.append(json.loads(msg.data))

    agent.hold = True
    accepted = await call(alice, API + "AGENT.INVOKE.vault", {"input": "async-secret", "mode": "async"})
    await alice.subscribe(f"$mq9.AI.TASK.UPDATES.{accepted['task_id']}", cb=on_update)
    await alice.flush()
    await wait_until(lambda: len(agent.pending) == 1)
    await agent.release()
    await wait_until(lambda: any(u.get("state") == "completed" for u in updates))
    assert json.dumps(updates).count("async-secret") >= 1

    # a plain request between alice's connections: the request subject is public, the reply is not
    async def answer(msg) -> None:
        await msg.respond(b"reply-secret")

    await agent.nc.subscribe("alice.svc", cb=answer)
    await agent.nc.flush()
    assert (await alice.request("alice.svc", b"question", timeout=5)).data == b"reply-secret"

    # public traffic still reaches every wildcard
    await alice.publish("news.today", b"public-news")
    await alice.flush()
    await wait_until(lambda: len(bob.saw("public-news")) >= 2)  # NATS ">" and MQTT "#"
    await wait_until(lambda: len(bob.saw("question")) >= 1)
    await bob.nc.flush()
    await asyncio.sleep(QUIET_S)  # deliveries that should not happen have no event to wait for
    for secret in SECRETS:
        assert bob.saw(secret) == [], secret
    await bob.close()
    await alice.close()
    await agent.close()


async def test_a_snooper_who_learns_an_inbox_cannot_claim_it(secured):
    alice = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    inbox = alice.new_inbox()
    mine: list[bytes] = []
    stolen: list[bytes] = []

    async def keep_mine(msg) -> None:
        mine.append(msg.data)

    async def keep_stolen(msg) -> None:
        stolen.append(msg.data)

    await alice.subscribe(inbox, cb=keep_mine)
    await alice.flush()
    # bob subscribes the exact inbox (say he saw it as the reply subject of a public request)
    await bob.subscribe(inbox, cb=keep_stolen)
    await bob.subscribe(inbox + ".>", cb=keep_stolen)
    await bob.flush()
    await alice.publish(inbox, b"for alice only")
    await alice.flush()
    await wait_until(lambda: mine == [b"for alice only"])
    await bob.flush()
    await asyncio.sleep(QUIET_S)  # a stolen copy, had the broker sent one, would be here by now
    assert stolen == []
    await alice.close()
    await bob.close()


async def test_task_updates_reach_the_caller_and_the_agents_owner_only(secured):
    agent = await Agent(secured.nats_url, "vault", hold=True, user="alice", password="alice-pw").start()
    bob = await nats.connect(secured.nats_url, user="bob", password="bob-pw")
    owner = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    accepted = await call(bob, API + "AGENT.INVOKE.vault", {"input": "bobs-input", "mode": "async"})
    subject = f"$mq9.AI.TASK.UPDATES.{accepted['task_id']}"
    seen: dict[str, list[dict]] = {"bob": [], "owner": []}

    async def bob_cb(msg) -> None:
        seen["bob"].append(json.loads(msg.data))

    async def owner_cb(msg) -> None:
        seen["owner"].append(json.loads(msg.data))

    await bob.subscribe(subject, cb=bob_cb)
    await owner.subscribe("$mq9.AI.TASK.UPDATES.*", cb=owner_cb)
    await bob.flush()
    await owner.flush()
    await wait_until(lambda: len(agent.pending) == 1)
    await agent.release()
    await wait_until(lambda: any(u["state"] == "completed" for u in seen["bob"]))
    await wait_until(lambda: any(u["state"] == "completed" for u in seen["owner"]))
    await agent.close()
    await bob.close()
    await owner.close()


async def test_without_users_wildcards_see_everything_as_before(broker):
    snoop = await nats.connect(broker.nats_url)
    seen: list[tuple[str, bytes]] = []

    async def keep(msg) -> None:
        seen.append((msg.subject, msg.data))

    await snoop.subscribe(">", cb=keep)
    await snoop.flush()
    asker = await nats.connect(broker.nats_url)
    answerer = await nats.connect(broker.nats_url)

    async def answer(msg) -> None:
        await msg.respond(b"open-reply")

    await answerer.subscribe("svc", cb=answer)
    await answerer.flush()
    assert (await asker.request("svc", b"q", timeout=5)).data == b"open-reply"
    await wait_until(lambda: any(data == b"open-reply" for _, data in seen))
    for conn in (snoop, asker, answerer):
        await conn.close()


async def test_an_amqp_queue_bound_to_everything_receives_no_private_traffic(secured):
    import aio_pika

    url = f"amqp://bob:bob-pw@127.0.0.1:{secured.ports['amqp']}/"
    conn = await aio_pika.connect(url)
    channel = await conn.channel()
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind("amq.topic", routing_key="#")
    got: list[bytes] = []

    async def keep(message) -> None:
        got.append(message.body)
        await message.ack()

    await queue.consume(keep)
    agent = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start()
    alice = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    done = await call(alice, API + "AGENT.INVOKE.vault", {"input": "input-secret"})
    assert done["output"] == "input-secret"
    await alice.publish("news.today", b"public-news")
    await alice.flush()
    await wait_until(lambda: b"public-news" in got)  # the binding works for public subjects
    await alice.flush()
    await asyncio.sleep(QUIET_S)
    assert [body for body in got if b"input-secret" in body] == []
    await conn.close()
    await alice.close()
    await agent.close()


def _kafka_read(bootstrap: str, user: str, password: str, topic: str) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        sasl_plain_username=user, sasl_plain_password=password, enable_auto_commit=False,
    )  # fmt: skip
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got: list[bytes] = []
        for _ in range(10):
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
            if got:
                break
        return got
    finally:
        consumer.close()


async def test_kafka_does_not_read_another_users_mailbox(secured):
    from kafka.errors import TopicAuthorizationFailedError

    agent = await Agent(secured.nats_url, "vault", user="alice", password="alice-pw").start(
        {**card("vault"), "mailbox": "vault.inbox"}
    )
    alice = await nats.connect(secured.nats_url, user="alice", password="alice-pw")
    await wait_for(lambda: call(alice, MQ9 + "MSG.QUERY.vault.inbox"), lambda r: r["error"] == "")
    assert (await call(alice, MQ9 + "MSG.SEND.vault.inbox", b"mailbox-secret"))["error"] == ""
    assert (await call(alice, API + "AGENT.INVOKE.vault", {"input": "input-secret"}))[
        "output"
    ] == "input-secret"
    bootstrap = secured.kafka_bootstrap
    # (the broker's own "$..." journals are refused the same way; kafka-python cannot name them)
    with pytest.raises(TopicAuthorizationFailedError):
        await asyncio.to_thread(_kafka_read, bootstrap, "bob", "bob-pw", "vault.inbox")
    assert await asyncio.to_thread(_kafka_read, bootstrap, "alice", "alice-pw", "vault.inbox") == [
        b"mailbox-secret"
    ]
    await alice.close()
    await agent.close()
