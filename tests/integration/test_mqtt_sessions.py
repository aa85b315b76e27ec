"""MQTT connections and sessions: CONNECT rules, takeover, clean session / session expiry, QoS state."""

from __future__ import annotations

import time

import httpx
import pytest
from brokerproc import start_broker
from helpers.mqtt_clients import PahoClient, RawClient, unique
from helpers.waits import wait_until_sync

from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.codec import encode

VERSIONS = [pytest.param(P.MQTT_3_1_1, id="v311"), pytest.param(P.MQTT_5, id="v5")]


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("mqtt"), "--http-port", "off")
    yield b.ports["mqtt"]
    b.stop()


def test_empty_client_id_needs_clean_session_in_3_1_1(port: int) -> None:
    c = RawClient(port)
    assert c.connect("", clean=False).reason_code == 0x02
    c.closed()
    ok = RawClient(port)
    assert ok.connect("", clean=True).reason_code == 0
    ok.disconnect()


def test_empty_client_id_is_assigned_in_5(port: int) -> None:
    c = RawClient(port, P.MQTT_5)
    connack = c.connect("", clean=False)
    assert connack.reason_code == 0
    assert connack.properties[P.ASSIGNED_CLIENT_IDENTIFIER]
    c.disconnect()


@pytest.mark.parametrize("level, code", [(6, 0x01), (2, 0x01)])
def test_unknown_protocol_level_is_refused_then_closed(port: int, level: int, code: int) -> None:
    c = RawClient(port)
    wire = bytearray(encode(P.Connect("x"), P.MQTT_3_1_1))
    wire[8] = level
    c.send_raw(bytes(wire))
    seen = c.closed()
    assert seen == [P.Connack(False, code)]


def test_connect_with_level_6_is_answered_the_3_1_1_way(port: int) -> None:
    c = RawClient(port, P.MQTT_3_1_1)  # the refusal is a 3.1.1 CONNACK
    wire = bytearray(encode(P.Connect("x", P.MQTT_5), P.MQTT_5))
    wire[8] = 6
    c.send_raw(bytes(wire))
    assert c.closed() == [P.Connack(False, 0x01)]  # level 6 is not 5: answered the 3.1.1 way


def test_second_connect_closes_the_connection(port: int) -> None:
    c = RawClient(port)
    c.connect(unique("c"))
    c.send(P.Connect(unique("c")))
    c.closed()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_id_takeover_closes_the_old_connection(port: int, version: int) -> None:
    cid = unique("dup")
    old = RawClient(port, version)
    old.connect(cid)
    new = RawClient(port, version)
    new.connect(cid)
    seen = old.closed()
    if version == P.MQTT_5:
        assert seen == [P.Disconnect(0x8E)]
    new.send(P.Pingreq())
    new.recv_type(P.Pingresp)
    new.disconnect()


def test_clean_session_false_keeps_subscriptions_and_queues_qos_1_and_2(port: int) -> None:
    cid = unique("persist")
    topic = unique("t")
    c = RawClient(port)
    assert c.connect(cid, clean=False).session_present is False
    c.subscribe(topic, qos=2)
    c.disconnect()
    pub = RawClient(port)
    pub.connect(unique("p"))
    pub.publish(topic, b"q0", 0)
    pub.publish(topic, b"q1", 1)
    pub.publish(topic, b"q2", 2, pid=2)
    c = RawClient(port)
    assert c.connect(cid, clean=False).session_present is True
    first = c.recv_type(P.Publish)
    second = c.recv_type(P.Publish)
    assert [(first.payload, first.qos), (second.payload, second.qos)] == [(b"q1", 1), (b"q2", 2)]
    c.send(P.Puback(first.packet_id))
    c.send(P.Pubrec(second.packet_id))
    c.recv_type(P.Pubrel)
    c.send(P.Pubcomp(second.packet_id))
    c.disconnect()
    clean = RawClient(port)
    assert clean.connect(cid, clean=True).session_present is False
    clean.disconnect()
    pub.disconnect()


def test_unacknowledged_messages_are_resent_with_dup_on_reconnect(port: int) -> None:
    cid = unique("dup")
    topic = unique("t")
    c = RawClient(port)
    c.connect(cid, clean=False)
    c.subscribe(topic, qos=2)
    pub = RawClient(port)
    pub.connect(unique("p"))
    pub.publish(topic, b"one", 1)
    pub.publish(topic, b"two", 2, pid=2)
    got = [c.recv_type(P.Publish), c.recv_type(P.Publish)]
    assert not any(p.dup for p in got)
    c.send(P.Pubrec(got[1].packet_id))  # QoS 2 half done
    c.recv_type(P.Pubrel)
    c.close()
    c = RawClient(port)
    assert c.connect(cid, clean=False).session_present
    again = c.recv_type(P.Publish)
    assert (again.payload, again.dup, again.packet_id) == (b"one", True, got[0].packet_id)
    rel = c.recv_type(P.Pubrel)  # the QoS 2 exchange resumes at PUBREL
    assert rel.packet_id == got[1].packet_id
    c.send(P.Puback(again.packet_id))
    c.send(P.Pubcomp(rel.packet_id))
    assert c.nothing()
    c.disconnect()
    pub.disconnect()


def test_qos_2_publish_resent_with_dup_is_delivered_once(port: int) -> None:
    topic = unique("once")
    sub = PahoClient(port, unique("s"))
    sub.subscribe(topic, 2)
    c = RawClient(port)
    c.connect(unique("p"))
    c.send(P.Publish(topic, b"x", 2, packet_id=7))
    c.recv_type(P.Pubrec)
    c.send(P.Publish(topic, b"x", 2, dup=True, packet_id=7))
    c.recv_type(P.Pubrec)
    c.send(P.Pubrel(7))
    c.recv_type(P.Pubcomp)
    assert sub.get().payload == b"x"
    assert sub.none(0.5)
    sub.stop()
    c.disconnect()


def test_session_expiry_keeps_then_ends_a_v5_session(broker) -> None:
    port = broker.ports["mqtt"]
    cid = unique("exp")
    topic = unique("t")
    c = RawClient(port, P.MQTT_5)
    c.connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 1})
    c.subscribe(topic, qos=1)
    c.disconnect()
    c = RawClient(port, P.MQTT_5)
    assert c.connect(cid, clean=False, properties={P.SESSION_EXPIRY_INTERVAL: 1}).session_present
    c.disconnect()
    started = time.monotonic()
    # the session's subscription leaves the router when the session ends, 1 s after the disconnect
    with httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}") as http:

        def subscribed() -> bool:
            r = http.get("/api/v1/subscriptions", params={"protocol": "mqtt", "test": topic})
            return bool(r.json()["items"])

        assert subscribed()
        wait_until_sync(lambda: not subscribed(), timeout=5, interval=0.05, what="the session's expiry")
    assert time.monotonic() - started >= 0.9
    c = RawClient(port, P.MQTT_5)
    assert not c.connect(cid, clean=False).session_present
    c.disconnect()


def test_session_expiry_zero_ends_the_session_with_the_connection(port: int) -> None:
    cid = unique("zero")
    c = RawClient(port, P.MQTT_5)
    c.connect(cid, clean=False)
    c.disconnect()
    c = RawClient(port, P.MQTT_5)
    assert not c.connect(cid, clean=False).session_present
    c.disconnect()


def test_disconnect_may_not_raise_session_expiry_from_zero(port: int) -> None:
    c = RawClient(port, P.MQTT_5)
    c.connect(unique("r"))
    c.send(P.Disconnect(0, {P.SESSION_EXPIRY_INTERVAL: 30}))
    seen = c.closed()
    assert seen and seen[0].reason_code == 0x82


def test_clean_start_discards_a_v5_session(port: int) -> None:
    cid = unique("cs")
    c = RawClient(port, P.MQTT_5)
    c.connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    c.disconnect()
    c = RawClient(port, P.MQTT_5)
    assert not c.connect(cid, clean=True, properties={P.SESSION_EXPIRY_INTERVAL: 60}).session_present
    c.disconnect()


def test_offline_messages_survive_a_broker_restart(tmp_path) -> None:
    data = tmp_path / "d"
    b = start_broker(data, "--http-port", "off")
    try:
        cid = unique("restart")
        topic = unique("t")
        c = RawClient(b.ports["mqtt"])
        c.connect(cid, clean=False)
        c.subscribe(topic, qos=1)
        c.disconnect()
        pub = RawClient(b.ports["mqtt"])
        pub.connect(unique("p"))
        pub.publish(topic, b"kept", 1)
        pub.publish(unique("r"), b"ret", 1, pid=2, retain=True)
        pub.disconnect()
    finally:
        b.stop()
    b = start_broker(data, "--http-port", "off")
    try:
        c = RawClient(b.ports["mqtt"])
        assert c.connect(cid, clean=False).session_present
        m = c.recv_type(P.Publish)
        assert (m.topic, m.payload, m.qos) == (topic, b"kept", 1)
        c.send(P.Puback(m.packet_id))
        pub = RawClient(b.ports["mqtt"])
        pub.connect(unique("p"))
        pub.publish(topic, b"live", 1)  # the restored subscription is on the router again
        m = c.recv_type(P.Publish)
        assert m.payload == b"live"
        c.send(P.Puback(m.packet_id))
        c.disconnect()
        pub.disconnect()
    finally:
        b.stop()
