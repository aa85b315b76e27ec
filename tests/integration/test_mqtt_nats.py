"""One subject space: MQTT to NATS, NATS to MQTT, headers both ways, MQTT into an mq9 mailbox."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from brokerproc import start_broker
from helpers.mqtt_clients import PahoClient, RawClient, unique
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from robustmq.bridges.mqtt import packets as P


@pytest.fixture(scope="module")
def ports(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("mqtt"), "--http-port", "off")
    yield b.ports
    b.stop()


async def test_mqtt_publish_reaches_a_nats_subscriber_with_headers(ports) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{ports['nats']}")
    root = unique("dev")
    sub = await nc.subscribe(f"{root}.>")
    await nc.flush()
    pub = PahoClient(ports["mqtt"], unique("p"), P.MQTT_5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("unit", "C"), ("unit", "F")]
    props.ContentType = "text/plain"
    await asyncio.to_thread(pub.publish, f"{root}/sensor.1/temp", b"21.5", 1, properties=props)
    msg = await sub.next_msg(timeout=5)
    assert msg.subject == f"{root}.sensor%2E1.temp"
    assert msg.data == b"21.5"
    assert msg.headers["unit"] in ("C", "F")  # nats-py folds repeated keys
    assert msg.headers["mqtt-content-type"] == "text/plain"
    pub.stop()
    await nc.close()


async def test_nats_publish_reaches_an_mqtt_subscriber_with_user_properties(ports) -> None:
    root = unique("cmd")
    sub5 = PahoClient(ports["mqtt"], unique("s5"), P.MQTT_5)
    sub5.subscribe(f"{root}/#", 1)
    sub3 = PahoClient(ports["mqtt"], unique("s3"))
    sub3.subscribe(f"{root}/+/go", 1)
    nc = await nats.connect(f"nats://127.0.0.1:{ports['nats']}")
    await nc.publish(f"{root}.robot.go", b"now", headers={"trace": "abc", "mqtt-content-type": "text/plain"})
    await nc.flush()
    m5 = await asyncio.to_thread(sub5.get)
    m3 = await asyncio.to_thread(sub3.get)
    assert (m5.topic, m5.payload, m5.qos) == (f"{root}/robot/go", b"now", 1)
    assert m5.properties.UserProperty == [("trace", "abc")]
    assert m5.properties.ContentType == "text/plain"
    assert (m3.topic, m3.payload) == (f"{root}/robot/go", b"now")
    sub5.stop()
    sub3.stop()
    await nc.close()


async def test_nats_request_is_answered_by_an_mqtt_responder(ports) -> None:
    svc_topic = unique("svc")
    responder = PahoClient(ports["mqtt"], unique("r"), P.MQTT_5)

    def answer(client, userdata, m) -> None:
        client.publish(m.properties.ResponseTopic, b"pong:" + m.payload, 1)

    responder.client.on_message = answer
    responder.subscribe(svc_topic, 1)
    nc = await nats.connect(f"nats://127.0.0.1:{ports['nats']}")
    reply = await nc.request(svc_topic, b"ping", timeout=5)
    assert reply.data == b"pong:ping"
    responder.stop()
    await nc.close()


async def test_mqtt_publish_lands_in_an_mq9_mailbox_and_is_fetched_over_nats(ports) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{ports['nats']}")
    address = f"agent.translator{unique('x').replace('-', '')}.inbox"
    created = await nc.request("$mq9.AI.MAILBOX.CREATE", json.dumps({"name": address}).encode(), timeout=5)
    assert json.loads(created.data)["error"] == ""
    device = RawClient(ports["mqtt"], P.MQTT_5)
    device.connect(unique("device"))
    topic = address.replace(".", "/")
    ack = device.publish(topic, b"hola", 1, properties={P.USER_PROPERTY: [("mq9-priority", "urgent")]})
    assert ack.reason_code == 0  # acknowledged once stored
    ack = device.publish(topic, b"adios", 2, pid=2)
    assert ack.reason_code == 0
    fetched = await nc.request(
        f"$mq9.AI.MSG.FETCH.{address}", json.dumps({"deliver": "earliest"}).encode(), timeout=5
    )
    body = json.loads(fetched.data)
    assert body["error"] == ""
    by_payload = {m["payload"]: m for m in body["messages"]}
    assert set(by_payload) == {"hola", "adios"}
    assert by_payload["hola"]["priority"] == "urgent"
    device.disconnect()
    await nc.close()


async def test_retained_messages_survive_a_restart(tmp_path) -> None:
    data = tmp_path / "d"
    b = start_broker(data, "--http-port", "off")
    topic = unique("ret")
    try:
        c = RawClient(b.ports["mqtt"], P.MQTT_5)
        c.connect(unique("p"))
        c.publish(topic, b"keep", 1, retain=True, properties={P.USER_PROPERTY: [("a", "1")]})
        c.publish(topic + "/gone", b"x", 1, pid=2, retain=True)
        c.publish(topic + "/gone", b"", 1, pid=3, retain=True)
        c.disconnect()
    finally:
        b.stop()
    b = start_broker(data, "--http-port", "off")
    try:
        c = RawClient(b.ports["mqtt"], P.MQTT_5)
        c.connect(unique("s"))
        c.subscribe(topic + "/#", qos=1)
        m = c.recv_type(P.Publish)
        assert (m.topic, m.payload, m.retain) == (topic, b"keep", True)
        assert m.properties[P.USER_PROPERTY] == [("a", "1")]
        c.send(P.Puback(m.packet_id))
        assert c.nothing()
        c.disconnect()
    finally:
        b.stop()
