"""Bad input on raw sockets: the offending connection is closed (5.0: DISCONNECT with the reason
first) and another client keeps receiving."""

from __future__ import annotations

import pytest
from brokerproc import start_broker
from helpers.mqtt_clients import PahoClient, RawClient, unique

from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.codec import encode


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("mqtt"), "--http-port", "off")
    yield b.ports["mqtt"]
    b.stop()


@pytest.fixture
def bystander(port: int):
    """A subscriber that must keep receiving while another connection misbehaves."""
    topic = unique("by")
    sub = PahoClient(port, unique("by"))
    sub.subscribe(topic, 1)
    pub = PahoClient(port, unique("bp"))
    yield lambda: (pub.publish(topic, b"still", 1), sub.get().payload == b"still")[1]
    sub.stop()
    pub.stop()


def publish_frame(topic: bytes, payload: bytes = b"x", first: int = 0x30) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + payload
    return bytes((first, len(body))) + body


BAD_AFTER_CONNECT = {
    "malformed_remaining_length": b"\x30\xff\xff\xff\xff\x01",
    "reserved_subscribe_flags": b"\x80\x06\x00\x01\x00\x01a\x00",
    "publish_qos_3": publish_frame(b"t", first=0x36),
    "wildcard_in_publish_topic": publish_frame(b"a/+/b"),
    "hash_in_publish_topic": publish_frame(b"a/#"),
    "invalid_utf8_topic": publish_frame(b"\xc0\xaf"),
    "nul_in_topic": publish_frame(b"a\x00b"),
    "empty_topic": publish_frame(b""),
    "packet_type_0": b"\x00\x00",
    "server_packet_from_client": b"\x20\x02\x00\x00",  # CONNACK
    "pingreq_with_flags": b"\xc3\x00",
    "subscribe_without_filters": b"\x82\x02\x00\x01",
    "truncated_string": b"\x30\x03\x00\x09a",
}


@pytest.mark.parametrize("name", sorted(BAD_AFTER_CONNECT))
@pytest.mark.parametrize("version", [P.MQTT_3_1_1, P.MQTT_5], ids=["v311", "v5"])
def test_bad_packet_closes_only_that_connection(port: int, bystander, name: str, version: int) -> None:
    c = RawClient(port, version)
    c.connect(unique("bad"))
    c.send_raw(BAD_AFTER_CONNECT[name])
    seen = c.closed()
    if version == P.MQTT_5:
        assert len(seen) == 1 and isinstance(seen[0], P.Disconnect) and seen[0].reason_code >= 0x80
    else:
        assert seen == []
    assert bystander()


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(encode(P.Publish("t", b"x")), id="publish_before_connect"),
        pytest.param(encode(P.Pingreq()), id="pingreq_before_connect"),
        pytest.param(b"\x10\x0c\x00\x04MQTT\x04\x01\x00\x3c\x00\x00", id="reserved_connect_flag"),
        pytest.param(b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00", id="unknown_protocol_name"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http_request"),
    ],
)
def test_bad_first_packet_closes_the_connection(port: int, bystander, wire: bytes) -> None:
    c = RawClient(port)
    c.send_raw(wire)
    c.closed()
    assert bystander()


def test_oversize_packet_is_refused_and_others_carry_on(tmp_path) -> None:
    b = start_broker(tmp_path / "d", "--http-port", "off", env={"ROBUSTMQ_MQTT_MAX_PACKET_BYTES": "2048"})
    try:
        port = b.ports["mqtt"]
        topic = unique("big")
        sub = PahoClient(port, unique("s"))
        sub.subscribe(topic, 0)
        c = RawClient(port)
        c.connect(unique("c"))
        c.send(P.Publish(topic, b"x" * 5000))
        c.closed()
        pub = PahoClient(port, unique("p"))
        pub.publish(topic, b"ok", 1)
        assert sub.get().payload == b"ok"
        sub.stop()
        pub.stop()
    finally:
        b.stop()


def test_many_garbage_connections_do_not_disturb_a_subscriber(port: int, bystander) -> None:
    import random

    rng = random.Random(7)
    for _ in range(20):
        c = RawClient(port)
        c.connect(unique("g"))
        c.send_raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))))
        c.close()
    assert bystander()


@pytest.mark.parametrize("version", [P.MQTT_3_1_1, P.MQTT_5], ids=["v311", "v5"])
def test_will_topic_with_a_wildcard_is_refused(port: int, bystander, version: int) -> None:
    c = RawClient(port, version)
    c.send(P.Connect(unique("w"), version, will=P.Will("a/+", b"x")))
    seen = c.closed()
    assert seen == ([P.Connack(False, 0x90)] if version == P.MQTT_5 else [])
    assert bystander()
