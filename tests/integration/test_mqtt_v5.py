"""MQTT 5.0 features: shared subscriptions, expiry, aliases, properties, flow control, reason codes."""

from __future__ import annotations

import time

import pytest
from brokerproc import start_broker
from helpers.mqtt_clients import PahoClient, RawClient, unique
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from robustmq.bridges.mqtt import packets as P

V5 = P.MQTT_5


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("mqtt"), "--http-port", "off")
    yield b.ports["mqtt"]
    b.stop()


def raw(port: int, **connect) -> RawClient:
    c = RawClient(port, V5)
    c.connect(unique("c"), **connect)
    return c


def test_connack_announces_the_server_limits(port: int) -> None:
    c = RawClient(port, V5)
    props = c.connect(unique("c")).properties
    assert (
        props[P.RECEIVE_MAXIMUM] >= 1
        and props[P.TOPIC_ALIAS_MAXIMUM] >= 1
        and props[P.MAXIMUM_PACKET_SIZE] > 0
    )
    c.disconnect()


def test_shared_subscription_gives_each_message_to_one_member(port: int) -> None:
    topic = unique("sh")
    members = [raw(port) for _ in range(3)]
    for m in members:
        m.subscribe(f"$share/g1/{topic}", qos=0)
    plain = raw(port)
    plain.subscribe(topic, qos=0)
    pub = raw(port)
    for i in range(30):
        pub.publish(topic, str(i).encode())
    got = []
    for m in members:
        while True:
            try:
                got.append(m.recv(0.5).payload)
            except TimeoutError:
                break
    assert sorted(got, key=int) == [str(i).encode() for i in range(30)]
    assert [plain.recv_type(P.Publish).payload for _ in range(30)] == [str(i).encode() for i in range(30)]
    for c in (*members, plain, pub):
        c.disconnect()


def test_no_local_on_a_shared_subscription_is_a_protocol_error(port: int) -> None:
    c = raw(port)
    c.send(P.Subscribe(1, [P.SubscriptionRequest("$share/g/x", 0, no_local=True)]))
    seen = c.closed()
    assert seen and seen[-1].reason_code == 0x82


def test_no_local_skips_the_publishers_own_messages(port: int) -> None:
    topic = unique("nl")
    c = raw(port)
    c.send(P.Subscribe(1, [P.SubscriptionRequest(topic, 0, no_local=True)]))
    c.recv_type(P.Suback)
    c.publish(topic, b"mine")
    assert c.nothing()
    other = raw(port)
    other.publish(topic, b"theirs")
    assert c.recv_type(P.Publish).payload == b"theirs"
    c.disconnect()
    other.disconnect()


def test_retain_as_published_and_retain_handling(port: int) -> None:
    topic = unique("rap")
    pub = raw(port)
    pub.publish(topic, b"kept", 1, retain=True)
    c = raw(port)
    c.send(P.Subscribe(1, [P.SubscriptionRequest(topic, 1, retain_as_published=True, retain_handling=1)]))
    c.recv_type(P.Suback)
    m = c.recv_type(P.Publish)
    assert (m.payload, m.retain) == (b"kept", True)
    c.send(P.Puback(m.packet_id))
    pub.publish(topic, b"live", 1, retain=True)
    m = c.recv_type(P.Publish)
    assert (m.payload, m.retain) == (b"live", True)  # retain as published
    c.send(P.Puback(m.packet_id))
    # retain handling 1: an existing subscription gets no retained message again
    c.send(P.Subscribe(2, [P.SubscriptionRequest(topic, 1, retain_handling=1)]))
    c.recv_type(P.Suback)
    assert c.nothing()
    # retain handling 2: never
    d = raw(port)
    d.send(P.Subscribe(1, [P.SubscriptionRequest(topic, 1, retain_handling=2)]))
    d.recv_type(P.Suback)
    assert d.nothing()
    for x in (pub, c, d):
        x.disconnect()


EXPIRY_MARGIN_S = 0.3


def test_message_expiry_drops_expired_and_forwards_the_remaining_time(port: int) -> None:
    topic = unique("exp")
    cid = unique("off")
    off = RawClient(port, V5)
    off.connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    off.subscribe(topic, qos=1)
    off.disconnect()
    pub = raw(port)
    pub.publish(topic, b"short", 1, properties={P.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish(topic, b"long", 1, pid=2, properties={P.MESSAGE_EXPIRY_INTERVAL: 100})
    # wall clock on purpose: the 1 s expiry must run out while the session is offline, and nothing
    # shows the queued message's state without taking the session back
    time.sleep(1 + EXPIRY_MARGIN_S)
    back = RawClient(port, V5)
    back.connect(cid, clean=False, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    m = back.recv_type(P.Publish)
    assert m.payload == b"long" and 95 <= m.properties[P.MESSAGE_EXPIRY_INTERVAL] <= 100
    back.send(P.Puback(m.packet_id))
    assert back.nothing()
    back.disconnect()
    pub.disconnect()


def test_inbound_topic_alias_is_remembered_and_a_bad_alias_disconnects(port: int) -> None:
    topic = unique("alias")
    sub = raw(port)
    sub.subscribe(topic)
    c = raw(port)
    c.publish(topic, b"1", properties={P.TOPIC_ALIAS: 1})
    c.publish("", b"2", properties={P.TOPIC_ALIAS: 1})
    assert [sub.recv_type(P.Publish).payload for _ in range(2)] == [b"1", b"2"]
    c.publish("", b"3", properties={P.TOPIC_ALIAS: 60000})
    seen = c.closed()
    assert seen[-1].reason_code == 0x94
    sub.send(P.Pingreq())  # the others carry on
    sub.recv_type(P.Pingresp)
    sub.disconnect()


def test_outbound_topic_aliases_up_to_the_clients_maximum(port: int) -> None:
    topic = unique("oa")
    sub = raw(port, properties={P.TOPIC_ALIAS_MAXIMUM: 1})
    sub.subscribe(f"{topic}/#")
    pub = raw(port)
    for t in (f"{topic}/a", f"{topic}/a", f"{topic}/b"):
        pub.publish(t, b"x")
    first, second, third = (sub.recv_type(P.Publish) for _ in range(3))
    assert first.topic == f"{topic}/a" and first.properties[P.TOPIC_ALIAS] == 1
    assert second.topic == "" and second.properties[P.TOPIC_ALIAS] == 1
    assert third.topic == f"{topic}/b" and P.TOPIC_ALIAS not in (third.properties or {})
    sub.disconnect()
    pub.disconnect()


def test_properties_are_forwarded_with_user_properties_in_order(port: int) -> None:
    topic = unique("props")
    sub = PahoClient(port, unique("s"), V5)
    sub.subscribe(topic, 1)
    pub = PahoClient(port, unique("p"), V5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k", "2"), ("a", "x"), ("k", "1")]
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    props.ResponseTopic = "reply/here"
    props.CorrelationData = b"\x00\x01corr"
    pub.publish(topic, b"{}", 1, properties=props)
    m = sub.get()
    assert m.properties.UserProperty == [("k", "2"), ("a", "x"), ("k", "1")]
    assert m.properties.ContentType == "application/json"
    assert m.properties.PayloadFormatIndicator == 1
    assert m.properties.ResponseTopic == "reply/here"
    assert m.properties.CorrelationData == b"\x00\x01corr"
    sub.stop()
    pub.stop()


def test_request_response_round_trip(port: int) -> None:
    service = PahoClient(port, unique("svc"), V5)
    svc_topic = unique("svc")
    service.subscribe(svc_topic, 1)
    requester = PahoClient(port, unique("req"), V5)
    reply_topic = unique("reply")
    requester.subscribe(reply_topic, 1)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = reply_topic
    props.CorrelationData = b"42"
    requester.publish(svc_topic, b"ping", 1, properties=props)
    req = service.get()
    answer = Properties(PacketTypes.PUBLISH)
    answer.CorrelationData = req.properties.CorrelationData
    service.publish(req.properties.ResponseTopic, b"pong", 1, properties=answer)
    m = requester.get()
    assert (m.payload, m.properties.CorrelationData) == (b"pong", b"42")
    service.stop()
    requester.stop()


def test_receive_maximum_limits_messages_in_flight(port: int) -> None:
    topic = unique("rm")
    c = raw(port, properties={P.RECEIVE_MAXIMUM: 2})
    c.subscribe(topic, qos=1)
    pub = raw(port)
    for i in range(5):
        pub.publish(topic, str(i).encode(), 1, pid=i + 1)
    first = [c.recv_type(P.Publish) for _ in range(2)]
    assert c.nothing(0.5)  # the window is full
    c.send(P.Puback(first[0].packet_id))
    assert c.recv_type(P.Publish).payload == b"2"
    assert c.nothing(0.3)
    c.disconnect()
    pub.disconnect()


def test_maximum_packet_size_of_the_client_is_respected(port: int) -> None:
    topic = unique("mps")
    c = raw(port, properties={P.MAXIMUM_PACKET_SIZE: 100})
    c.subscribe(topic)
    pub = raw(port)
    pub.publish(topic, b"x" * 500)
    pub.publish(topic, b"small")
    assert c.recv_type(P.Publish).payload == b"small"
    c.disconnect()
    pub.disconnect()


def test_oversize_packet_from_the_client_gets_disconnect_0x95(tmp_path) -> None:
    b = start_broker(tmp_path / "d", "--http-port", "off", env={"ROBUSTMQ_MQTT_MAX_PACKET_BYTES": "1000"})
    try:
        c = RawClient(b.ports["mqtt"], V5)
        assert c.connect(unique("c")).properties[P.MAXIMUM_PACKET_SIZE] == 1000
        c.send(P.Publish("t", b"x" * 2000))
        seen = c.closed()
        assert seen[-1].reason_code == 0x95
    finally:
        b.stop()


def test_server_keep_alive_caps_the_clients_value(tmp_path) -> None:
    b = start_broker(tmp_path / "d", "--http-port", "off", env={"ROBUSTMQ_MQTT_MAX_KEEPALIVE_S": "30"})
    try:
        c = RawClient(b.ports["mqtt"], V5)
        assert c.connect(unique("c"), keepalive=600).properties[P.SERVER_KEEP_ALIVE] == 30
        c.disconnect()
    finally:
        b.stop()


def test_subscription_identifiers_are_reported(port: int) -> None:
    root = unique("sid")
    c = raw(port)
    c.subscribe(f"{root}/#", properties={P.SUBSCRIPTION_IDENTIFIER: [7]})
    c.subscribe(f"{root}/+", pid=2, properties={P.SUBSCRIPTION_IDENTIFIER: [9]})
    pub = raw(port)
    pub.publish(f"{root}/x", b"s")
    ids = sorted(i for _ in range(2) for i in c.recv_type(P.Publish).properties[P.SUBSCRIPTION_IDENTIFIER])
    assert ids == [7, 9]
    c.disconnect()
    pub.disconnect()


def test_reason_codes_on_acks(port: int) -> None:
    c = raw(port)
    assert c.publish(unique("nobody"), b"x", 1).reason_code == 0x10  # no matching subscribers
    c.send(P.Subscribe(1, [P.SubscriptionRequest("a/#/b", 0), P.SubscriptionRequest("ok/+", 1)]))
    assert c.recv_type(P.Suback).reason_codes == [0x8F, 1]
    c.send(P.Unsubscribe(2, ["ok/+", "never"]))
    assert c.recv_type(P.Unsuback).reason_codes == [0x00, 0x11]
    c.send(P.Pubrel(999))
    assert c.recv_type(P.Pubcomp).reason_code == 0x92
    c.disconnect()


def test_paho_subscribe_options(port: int) -> None:
    topic = unique("opts")
    c = PahoClient(port, unique("c"), V5)
    c.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
    c.publish(topic, b"self", 1)
    assert c.none(0.5)
    c.stop()


def test_exceeding_the_servers_receive_maximum_disconnects_with_0x93(tmp_path) -> None:
    b = start_broker(tmp_path / "d", "--http-port", "off", env={"ROBUSTMQ_MQTT_RECEIVE_MAXIMUM": "2"})
    try:
        c = RawClient(b.ports["mqtt"], V5)
        assert c.connect(unique("c")).properties[P.RECEIVE_MAXIMUM] == 2
        for pid in (1, 2, 3):  # QoS 2 without PUBREL: all three stay in flight
            c.send(P.Publish("rm/x", b"x", 2, packet_id=pid))
        seen = c.closed()
        assert [type(p) for p in seen] == [P.Pubrec, P.Pubrec, P.Disconnect]
        assert seen[-1].reason_code == 0x93 and seen[-1].properties[P.REASON_STRING]
    finally:
        b.stop()


def test_connections_beyond_the_maximum_are_refused(tmp_path) -> None:
    b = start_broker(tmp_path / "d", "--http-port", "off", env={"ROBUSTMQ_MQTT_MAX_CONNECTIONS": "2"})
    try:
        port = b.ports["mqtt"]
        first, second = RawClient(port), RawClient(port)
        first.connect(unique("a"))
        second.connect(unique("b"))
        third = RawClient(port)
        third.send(P.Connect(unique("c")))
        assert third.closed() == []
        first.send(P.Pingreq())
        first.recv_type(P.Pingresp)
    finally:
        b.stop()


def test_qos_1_message_above_the_clients_maximum_packet_size_is_skipped(port: int) -> None:
    topic = unique("mps1")
    c = raw(port, properties={P.MAXIMUM_PACKET_SIZE: 100, P.RECEIVE_MAXIMUM: 1})
    c.subscribe(topic, qos=1)
    pub = raw(port)
    pub.publish(topic, b"x" * 500, 1)
    pub.publish(topic, b"small", 1, pid=2)
    m = c.recv_type(P.Publish)  # the window of 1 is not held by the skipped message
    assert (m.payload, m.qos) == (b"small", 1)
    c.send(P.Puback(m.packet_id))
    c.disconnect()
    pub.disconnect()
