"""One subject space over AMQP (aio-pika): amq.topic publishes reach NATS and MQTT subscribers with
headers, NATS and MQTT publishes reach queues bound with ``*`` and ``#``, and an AMQP publish lands
in an mq9 mailbox."""

from __future__ import annotations

import asyncio
import json
import queue
import uuid

import aio_pika
import nats
import paho.mqtt.client as paho
import pytest
from brokerproc import start_broker
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = pytest.mark.timeout(60)
WAIT_S = 5.0


class Mqtt5:
    """A paho MQTT 5 client with its loop in a thread; received messages land in a queue."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv5)
        self.messages: queue.Queue = queue.Queue()
        connected: queue.Queue = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, props: connected.put(rc)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        connected.get(timeout=WAIT_S)

    def subscribe(self, topic: str) -> None:
        done: queue.Queue = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, props: done.put(codes)
        self.client.subscribe(topic, 1)
        done.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, user_properties: list[tuple[str, str]]) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = user_properties
        info = self.client.publish(topic, payload, 1, properties=props)
        info.wait_for_publish(WAIT_S)  # QoS 1: PUBACK once stored and routed
        assert info.is_published()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("amqp-subjects") / "data", "--http-port", "off")
    yield b
    b.stop()


def _root() -> str:
    return "r" + uuid.uuid4().hex[:8]


async def _queue_bound(ch: aio_pika.abc.AbstractChannel, *keys: str) -> aio_pika.abc.AbstractQueue:
    q = await ch.declare_queue("", exclusive=True)
    topic = await ch.get_exchange("amq.topic")
    for key in keys:
        await q.bind(topic, key)
    return q


async def _get(q: aio_pika.abc.AbstractQueue, timeout: float = 3.0) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        msg = await q.get(no_ack=True, fail=False)
        if msg is not None:
            return msg
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("no message")
        await asyncio.sleep(0.02)


async def test_amq_topic_publish_reaches_nats_and_mqtt_subscribers_with_headers(broker) -> None:
    root = _root()
    nc = await nats.connect(broker.nats_url)
    sub = await nc.subscribe(f"{root}.>")
    await nc.flush()
    mqtt = Mqtt5(broker.ports["mqtt"])
    mqtt.subscribe(f"{root}/#")
    conn = await aio_pika.connect(broker.amqp_url)
    ch = await conn.channel()
    topic = await ch.get_exchange("amq.topic")
    await topic.publish(
        aio_pika.Message(b"hello", headers={"trace": "t1", "n": 3}), routing_key=f"{root}.b.c"
    )
    msg = await sub.next_msg(timeout=5)
    assert (msg.subject, msg.data) == (f"{root}.b.c", b"hello")
    assert msg.headers["trace"] == "t1" and msg.headers["n"] == "3"
    m = await asyncio.to_thread(mqtt.messages.get, True, WAIT_S)
    assert (m.topic, m.payload) == (f"{root}/b/c", b"hello")
    assert ("trace", "t1") in m.properties.UserProperty
    mqtt.stop()
    await conn.close()
    await nc.close()


async def test_nats_publishes_reach_queues_bound_with_star_and_hash(broker) -> None:
    root = _root()
    conn = await aio_pika.connect(broker.amqp_url)
    ch = await conn.channel()
    star = await _queue_bound(ch, f"{root}.*.c")
    hash_ = await _queue_bound(ch, f"{root}.#")
    both = await _queue_bound(ch, f"{root}.*.c", f"{root}.#")  # one copy, though two bindings match
    nc = await nats.connect(broker.nats_url)
    await nc.publish(f"{root}.b.c", b"1", headers={"k": "v"})
    await nc.publish(f"{root}", b"2")  # '#' matches zero words
    await nc.publish(f"{root}.x.y.z", b"3")
    await nc.flush()
    got = await _get(star)
    assert (got.body, got.routing_key, got.exchange, got.headers["k"]) == (
        b"1",
        f"{root}.b.c",
        "amq.topic",
        "v",
    )
    assert [(await _get(hash_)).body for _ in range(3)] == [b"1", b"2", b"3"]
    assert [(await _get(both)).body for _ in range(3)] == [b"1", b"2", b"3"]
    assert await both.get(no_ack=True, fail=False) is None
    assert await star.get(no_ack=True, fail=False) is None
    await nc.close()
    await conn.close()


async def test_mqtt_publish_reaches_an_amqp_queue(broker) -> None:
    root = _root()
    conn = await aio_pika.connect(broker.amqp_url)
    ch = await conn.channel()
    q = await _queue_bound(ch, f"{root}.sensors.#")
    device = Mqtt5(broker.ports["mqtt"])
    await asyncio.to_thread(device.publish, f"{root}/sensors/t1", b"21.5", [("unit", "C")])
    got = await _get(q)
    assert (got.body, got.routing_key, got.headers["unit"]) == (b"21.5", f"{root}.sensors.t1", "C")
    device.stop()
    await conn.close()


async def test_amqp_publish_lands_in_an_mq9_mailbox(broker) -> None:
    nc = await nats.connect(broker.nats_url)
    address = f"agent.amqp{uuid.uuid4().hex[:8]}.inbox"
    created = await nc.request("$mq9.AI.MAILBOX.CREATE", json.dumps({"name": address}).encode(), timeout=5)
    assert json.loads(created.data)["error"] == ""
    conn = await aio_pika.connect(broker.amqp_url)
    ch = await conn.channel(publisher_confirms=True)
    topic = await ch.get_exchange("amq.topic")
    await topic.publish(aio_pika.Message(b"from amqp"), routing_key=address)  # confirmed once stored
    fetched = await nc.request(
        f"$mq9.AI.MSG.FETCH.{address}", json.dumps({"deliver": "earliest"}).encode(), timeout=5
    )
    body = json.loads(fetched.data)
    assert [m["payload"] for m in body["messages"]] == ["from amqp"]
    await conn.close()
    await nc.close()


async def test_aio_pika_consume_with_confirms_and_manual_ack(broker) -> None:
    conn = await aio_pika.connect(broker.amqp_url)
    ch = await conn.channel(publisher_confirms=True)
    await ch.set_qos(prefetch_count=10)
    q = await ch.declare_queue("", exclusive=True)
    for i in range(50):
        await ch.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=q.name)
    seen = []
    async with q.iterator() as it:
        async for msg in it:
            seen.append(msg.body)
            await msg.ack()
            if len(seen) == 50:
                break
    assert seen == [str(i).encode() for i in range(50)]
    await conn.close()


async def test_mandatory_publish_to_amq_topic_returns_only_when_nothing_took_it(broker) -> None:
    root = _root()
    conn = await aio_pika.connect(broker.amqp_url)
    ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
    await _queue_bound(ch, f"{root}.#.z")  # subscribes to root.>, but a.b is not a match
    topic = await ch.get_exchange("amq.topic")
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await topic.publish(aio_pika.Message(b"x"), routing_key=f"{root}.a.b", mandatory=True)
    nc = await nats.connect(broker.nats_url)
    await nc.subscribe(f"{root}.n")
    await nc.flush()
    await topic.publish(
        aio_pika.Message(b"y"), routing_key=f"{root}.n", mandatory=True
    )  # a NATS subscriber took it
    await nc.close()
    await conn.close()
