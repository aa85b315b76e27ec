"""MQTT publish/subscribe with paho-mqtt for 3.1, 3.1.1 and 5.0: QoS, wildcards, retained, will, keepalive."""

from __future__ import annotations

import time

import pytest
from brokerproc import start_broker
from helpers.mqtt_clients import PahoClient, RawClient, unique
from helpers.waits import wait_until_sync

from robustmq.bridges.mqtt import packets as P

VERSIONS = [pytest.param(P.MQTT_3_1_1, id="v311"), pytest.param(P.MQTT_5, id="v5")]


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("mqtt"), "--http-port", "off")
    yield b.ports["mqtt"]
    b.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_qos_0_1_2_are_delivered_at_their_qos(port: int, version: int) -> None:
    topic = unique("q") + "/x"
    sub = PahoClient(port, unique("sub"), version)
    sub.subscribe(topic, 2)
    pub = PahoClient(port, unique("pub"), version)
    for qos in (0, 1, 2):
        pub.publish(topic, f"m{qos}".encode(), qos)
    got = sub.get_n(3)
    assert [(m.payload, m.qos) for m in got] == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
    sub.stop()
    pub.stop()


def test_mqtt_3_1_client_is_served(port: int) -> None:
    topic = unique("v31")
    sub = PahoClient(port, unique("s"), P.MQTT_3_1)
    sub.subscribe(topic, 1)
    pub = PahoClient(port, unique("p"), P.MQTT_3_1)
    pub.publish(topic, b"old", 1)
    assert sub.get().payload == b"old"
    sub.stop()
    pub.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_delivery_qos_is_the_lower_of_publish_and_subscription(port: int, version: int) -> None:
    topic = unique("min")
    sub = PahoClient(port, unique("sub"), version)
    sub.subscribe(topic, 1)
    pub = PahoClient(port, unique("pub"), version)
    pub.publish(topic, b"two", 2)
    pub.publish(topic, b"zero", 0)
    assert [(m.payload, m.qos) for m in sub.get_n(2)] == [(b"two", 1), (b"zero", 0)]
    sub.stop()
    pub.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcards_plus_and_hash(port: int, version: int) -> None:
    root = unique("w")
    sub = PahoClient(port, unique("sub"), version)
    sub.subscribe(f"{root}/+/temp", 0)
    sub.subscribe(f"{root}/house/#", 0)
    pub = PahoClient(port, unique("pub"), version)
    for t in (
        f"{root}/kitchen/temp",
        f"{root}/house",
        f"{root}/house/a/b",
        f"{root}/kitchen/hum",
        f"{root}//temp",
    ):
        pub.publish(t, t.encode(), 1)
    got = sorted(m.topic for m in sub.get_n(4))
    assert got == sorted([f"{root}/kitchen/temp", f"{root}/house", f"{root}/house/a/b", f"{root}//temp"])
    assert sub.none()
    sub.stop()
    pub.stop()


def test_dollar_topics_are_not_matched_by_a_leading_wildcard(port: int) -> None:
    sub = PahoClient(port, unique("sub"))
    sub.subscribe("#", 0)
    dollar = PahoClient(port, unique("sub"))
    topic = "$" + unique("sys") + "/x"
    dollar.subscribe("$" + topic[1:].split("/")[0] + "/#", 0)
    pub = PahoClient(port, unique("pub"))
    pub.publish(topic, b"d", 1)
    assert dollar.get().topic == topic
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # '#' sees other tests' traffic, never the $ topic
        try:
            m = sub.get(0.1)
        except Exception:
            continue
        assert not m.topic.startswith("$")
    for c in (sub, dollar, pub):
        c.stop()


def test_topic_with_dots_and_empty_levels_round_trips(port: int) -> None:
    topic = unique("dots") + "/v1.2//x y"
    sub = PahoClient(port, unique("sub"))
    sub.subscribe(topic, 1)
    pub = PahoClient(port, unique("pub"))
    pub.publish(topic, b"p", 1)
    assert sub.get().topic == topic
    sub.stop()
    pub.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_is_set_delivered_on_subscribe_and_cleared(port: int, version: int) -> None:
    root = unique("ret")
    pub = PahoClient(port, unique("pub"), version)
    pub.publish(f"{root}/a", b"r1", 1, retain=True)
    pub.publish(f"{root}/a", b"r2", 1, retain=True)
    sub = PahoClient(port, unique("sub"), version)
    sub.subscribe(f"{root}/#", 1)
    m = sub.get()
    assert (m.topic, m.payload, m.retain) == (f"{root}/a", b"r2", True)
    pub.publish(f"{root}/a", b"live", 1, retain=True)
    m = sub.get()
    assert (m.payload, m.retain) == (b"live", False)  # live forwarding clears RETAIN
    pub.publish(f"{root}/a", b"", 1, retain=True)  # an empty retained payload deletes
    assert sub.get().payload == b""
    late = PahoClient(port, unique("late"), version)
    late.subscribe(f"{root}/+", 1)
    assert late.none()
    for c in (pub, sub, late):
        c.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(port: int, version: int) -> None:
    topic = unique("uns")
    sub = PahoClient(port, unique("sub"), version)
    sub.subscribe(topic, 1)
    pub = PahoClient(port, unique("pub"), version)
    pub.publish(topic, b"1", 1)
    assert sub.get().payload == b"1"
    sub.unsubscribe(topic)  # returns on the UNSUBACK: the subscription is gone
    pub.publish(topic, b"2", 1)  # returns on the PUBACK: the broker has routed it
    assert sub.none()
    sub.stop()
    pub.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_will_is_published_when_the_connection_drops(port: int, version: int) -> None:
    topic = unique("will")
    watcher = PahoClient(port, unique("w"), version)
    watcher.subscribe(topic, 1)
    dying = RawClient(port, version)
    dying.connect(unique("d"), will=P.Will(topic, b"gone", 1))
    dying.close()  # no DISCONNECT
    m = watcher.get()
    assert (m.topic, m.payload) == (topic, b"gone")
    polite = RawClient(port, version)
    polite.connect(unique("d"), will=P.Will(topic, b"never", 1))
    polite.disconnect()
    assert watcher.none(0.5)
    watcher.stop()


def test_v5_disconnect_with_will_publishes_it(port: int) -> None:
    topic = unique("will5")
    watcher = PahoClient(port, unique("w"), P.MQTT_5)
    watcher.subscribe(topic, 1)
    c = RawClient(port, P.MQTT_5)
    c.connect(unique("d"), will=P.Will(topic, b"bye", 0, properties={P.CONTENT_TYPE: "text/plain"}))
    c.disconnect(0x04)
    m = watcher.get()
    assert m.payload == b"bye" and m.properties.ContentType == "text/plain"
    watcher.stop()


def test_will_delay_is_cancelled_by_a_reconnect(port: int) -> None:
    topic = unique("wd")
    watcher = PahoClient(port, unique("w"), P.MQTT_5)
    watcher.subscribe(topic, 1)
    cid = unique("d")
    will = P.Will(topic, b"late", 1, properties={P.WILL_DELAY_INTERVAL: 1})
    c = RawClient(port, P.MQTT_5)
    c.connect(cid, will=will, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    c.close()
    c2 = RawClient(port, P.MQTT_5)
    c2.connect(cid, clean=False, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    assert watcher.none(1.5)
    c2.close()  # this connection had no will
    c3 = RawClient(port, P.MQTT_5)
    c3.connect(unique("d"), will=will, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    c3.close()
    assert watcher.get().payload == b"late"  # published once the delay ran out
    watcher.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_keepalive_expiry_closes_the_client_and_publishes_its_will(port: int, version: int) -> None:
    topic = unique("ka")
    watcher = PahoClient(port, unique("w"), version)
    watcher.subscribe(topic, 1)
    silent = RawClient(port, version)
    silent.connect(unique("s"), keepalive=1, will=P.Will(topic, b"timeout", 0))
    started = time.monotonic()
    seen = silent.closed(timeout=5)
    if version == P.MQTT_5:
        assert seen and isinstance(seen[-1], P.Disconnect) and seen[-1].reason_code == 0x8D
    assert time.monotonic() - started >= 1.0
    assert watcher.get().payload == b"timeout"
    watcher.stop()


PING_EVERY_S = 0.5


def test_pingreq_keeps_the_connection_alive(port: int) -> None:
    c = RawClient(port)
    c.connect(unique("p"), keepalive=1)
    for _ in range(4):
        # wall clock on purpose: 4 x 0.5 s outlasts 1.5 x the 1 s keepalive only if the pings count
        time.sleep(PING_EVERY_S)
        c.send(P.Pingreq())
        c.recv_type(P.Pingresp)
    c.disconnect()


def test_overlapping_subscriptions_deliver_a_copy_at_the_highest_qos(port: int) -> None:
    root = unique("ov")
    sub = RawClient(port)
    sub.connect(unique("s"))
    sub.send(P.Subscribe(1, [P.SubscriptionRequest(f"{root}/#", 2), P.SubscriptionRequest(f"{root}/+", 1)]))
    assert sub.recv_type(P.Suback).reason_codes == [2, 1]
    pub = RawClient(port)
    pub.connect(unique("p"))
    pub.publish(f"{root}/x", b"o", 2)
    copies = []
    while True:
        try:
            pk = sub.recv(0.5)
        except TimeoutError:
            break
        if isinstance(pk, P.Pubrel):
            sub.send(P.Pubcomp(pk.packet_id))
            continue
        copies.append(pk.qos)
        if pk.qos == 1:
            sub.send(P.Puback(pk.packet_id))
        elif pk.qos == 2:
            sub.send(P.Pubrec(pk.packet_id))
    assert 2 in copies
    sub.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_websocket_transport_with_subprotocol_mqtt(tmp_path, version: int) -> None:
    b = start_broker(tmp_path / "d", "--http-port", "off", "--mqtt-ws-port", "0")
    try:
        ws = b.ports["mqtt-ws"]
        topic = unique("ws")
        sub = PahoClient(ws, unique("s"), version, transport="websockets")
        sub.subscribe(topic, 1)
        tcp = PahoClient(b.ports["mqtt"], unique("p"), version)
        tcp.publish(topic, b"x" * 70000, 1)
        sub.client.publish(topic, b"small", 1)
        got = sub.get_n(2)
        assert [len(m.payload) for m in got] == [70000, 5]
        sub.stop()
        tcp.stop()
    finally:
        b.stop()


def test_shared_subscription_is_accepted_from_a_3_1_1_client(port: int) -> None:
    topic = unique("sh311")
    members = [RawClient(port) for _ in range(2)]
    for m in members:
        m.connect(unique("m"))
        assert m.subscribe(f"$share/g/{topic}", qos=0).reason_codes == [0]
    pub = RawClient(port)
    pub.connect(unique("p"))
    for i in range(10):
        pub.publish(topic, str(i).encode())
    got = []
    for m in members:
        while True:
            try:
                got.append(m.recv(0.4).payload)
            except TimeoutError:
                break
    assert sorted(got, key=int) == [str(i).encode() for i in range(10)]
    for c in (*members, pub):
        c.disconnect()


def test_retained_will_is_kept_for_later_subscribers(port: int) -> None:
    topic = unique("rwill")
    watcher = RawClient(port)
    watcher.connect(unique("w"))
    watcher.subscribe(topic, qos=0)
    dying = RawClient(port)
    dying.connect(unique("d"), will=P.Will(topic, b"offline", 1, retain=True))
    dying.close()
    assert watcher.recv_type(P.Publish).payload == b"offline"  # the broker retains a will before sending it
    watcher.disconnect()
    late = RawClient(port)
    late.connect(unique("l"))
    late.subscribe(topic, qos=1)
    m = late.recv_type(P.Publish)
    assert (m.payload, m.retain, m.qos) == (b"offline", True, 1)
    late.send(P.Puback(m.packet_id))
    late.disconnect()


def retained_payloads(port: int, topic_filter: str) -> list[bytes]:
    """What a new subscription gets retained: the broker sends it right after the SUBACK, so all of it
    comes before the answer to a PINGREQ sent next."""
    c = RawClient(port, P.MQTT_5)
    c.connect(unique("peek"))
    c.subscribe(topic_filter, qos=0)
    c.send(P.Pingreq())
    payloads = []
    while not isinstance(packet := c.recv(), P.Pingresp):
        payloads.append(packet.payload)
    c.disconnect()
    return payloads


def test_expired_retained_message_is_not_delivered(port: int) -> None:
    topic = unique("rexp")
    c = RawClient(port, P.MQTT_5)
    c.connect(unique("p"))
    c.publish(topic, b"brief", 1, retain=True, properties={P.MESSAGE_EXPIRY_INTERVAL: 1})
    c.publish(topic + "/long", b"lasting", 1, pid=2, retain=True, properties={P.MESSAGE_EXPIRY_INTERVAL: 60})
    assert retained_payloads(port, topic) == [b"brief"]
    wait_until_sync(lambda: retained_payloads(port, topic) == [], timeout=5, what="the 1 s retained expiry")
    c.subscribe(topic + "/#", qos=1)
    m = c.recv_type(P.Publish)
    assert m.payload == b"lasting" and m.retain and m.properties[P.MESSAGE_EXPIRY_INTERVAL] <= 60
    c.send(P.Puback(m.packet_id))
    assert c.nothing()
    c.disconnect()
