"""The MQTT codec without a network: every packet type round-trips, bad input raises MqttError only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.codec import MqttDecoder, encode
from robustmq.bridges.mqtt.errors import (
    MalformedPacket,
    MqttError,
    PacketTooLarge,
    UnsupportedProtocolVersion,
)

VERSIONS = (P.MQTT_3_1_1, P.MQTT_5)

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
blob = st.binary(max_size=40)
u16 = st.integers(1, 65535)
reason = st.integers(0, 255)

property_values = {
    P.PAYLOAD_FORMAT_INDICATOR: st.integers(0, 1),
    P.MESSAGE_EXPIRY_INTERVAL: st.integers(0, 2**32 - 1),
    P.CONTENT_TYPE: text,
    P.RESPONSE_TOPIC: text,
    P.CORRELATION_DATA: blob,
    P.SUBSCRIPTION_IDENTIFIER: st.lists(st.integers(1, 268_435_455), min_size=1, max_size=3),
    P.SESSION_EXPIRY_INTERVAL: st.integers(0, 2**32 - 1),
    P.SERVER_KEEP_ALIVE: st.integers(0, 65535),
    P.REASON_STRING: text,
    P.RECEIVE_MAXIMUM: u16,
    P.TOPIC_ALIAS: u16,
    P.USER_PROPERTY: st.lists(st.tuples(text, text), min_size=1, max_size=4),
    P.MAXIMUM_PACKET_SIZE: st.integers(1, 2**32 - 1),
}
properties = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(sorted(property_values)), st.none(), min_size=1, max_size=5).flatmap(
        lambda d: st.fixed_dictionaries({k: property_values[k] for k in d})
    ),
)


def packets(v5: bool) -> st.SearchStrategy:
    props = properties if v5 else st.none()
    code = reason if v5 else st.just(0)
    will = st.builds(P.Will, text, blob, st.integers(0, 2), st.booleans(), props)
    connect = st.builds(
        P.Connect, text, st.just(P.MQTT_5 if v5 else P.MQTT_3_1_1), st.booleans(), st.integers(0, 65535),
        st.none() | will, st.none() | text, st.none() | blob, props,
    )  # fmt: skip
    if not v5:  # 3.1.1 forbids a password without a user name
        connect = connect.filter(lambda c: not (c.password is not None and c.username is None))
    publish = st.builds(
        lambda t, b, q, r, d, pid, pr: P.Publish(t, b, q, r, d if q else False, pid if q else 0, pr),
        text, blob, st.integers(0, 2), st.booleans(), st.booleans(), u16, props,
    )  # fmt: skip
    sub = st.builds(
        P.SubscriptionRequest, text, st.integers(0, 2),
        *(
            (st.booleans(), st.booleans(), st.integers(0, 2))
            if v5 else (st.just(False), st.just(False), st.just(0))
        ),
    )  # fmt: skip

    def ack(cls: type) -> st.SearchStrategy:
        return st.builds(cls, u16, code, props)

    return st.one_of(
        connect,
        st.builds(P.Connack, st.booleans(), reason, props),
        publish,
        ack(P.Puback), ack(P.Pubrec), ack(P.Pubrel), ack(P.Pubcomp),
        st.builds(P.Subscribe, u16, st.lists(sub, min_size=1, max_size=4), props),
        st.builds(P.Suback, u16, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=4), props),
        st.builds(P.Unsubscribe, u16, st.lists(text, min_size=1, max_size=4), props),
        st.builds(P.Unsuback, u16, st.lists(reason, max_size=4) if v5 else st.just([]), props),
        st.just(P.Pingreq()), st.just(P.Pingresp()),
        st.builds(P.Disconnect, code, props),
        *([st.builds(P.Auth, code, props)] if v5 else []),
    )  # fmt: skip


def decode_all(data: bytes, version: int) -> list:
    return MqttDecoder(version=version).receive(data)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_every_packet_type_round_trips(version: int, data) -> None:
    packet = data.draw(packets(version == P.MQTT_5))
    wire = encode(packet, version)
    assert decode_all(wire, version) == [packet]


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_packets_split_at_any_byte_decode_the_same(version: int, data) -> None:
    batch = data.draw(st.lists(packets(version == P.MQTT_5), min_size=1, max_size=5))
    wire = b"".join(encode(p, version) for p in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = MqttDecoder(version=version)
    out = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        out.extend(decoder.receive(wire[prev:cut]))
        prev = cut
    assert out == batch
    assert decoder.buffered_bytes == 0


@pytest.mark.parametrize("version", (None, P.MQTT_3_1_1, P.MQTT_5))
@settings(max_examples=1500, deadline=None)
@given(blob=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_the_codec_error(version, blob: bytes) -> None:
    decoder = MqttDecoder(max_packet_bytes=1024, version=version)
    try:
        decoder.receive(blob)
    except MqttError:
        pass


def test_mqtt_3_1_connect_is_understood() -> None:
    wire = encode(P.Connect("c1", P.MQTT_3_1, protocol_name="MQIsdp"), P.MQTT_3_1)
    decoder = MqttDecoder()
    [packet] = decoder.receive(wire)
    assert packet.protocol_level == P.MQTT_3_1 and decoder.version == P.MQTT_3_1


def test_connect_switches_the_decoder_to_5_within_one_chunk() -> None:
    props = {P.USER_PROPERTY: [("a", "1")]}
    wire = encode(P.Connect("c", P.MQTT_5), P.MQTT_5) + encode(
        P.Publish("t", b"x", properties=props), P.MQTT_5
    )
    out = MqttDecoder().receive(wire)
    assert out[1] == P.Publish("t", b"x", properties=props)


def test_unknown_protocol_level_is_reported_with_its_level() -> None:
    wire = bytearray(encode(P.Connect("c"), P.MQTT_3_1_1))
    wire[8] = 6
    with pytest.raises(UnsupportedProtocolVersion) as info:
        MqttDecoder().receive(bytes(wire))
    assert info.value.level == 6


@pytest.mark.parametrize(
    "wire",
    [
        b"\x30\xff\xff\xff\xff\x01",  # five remaining-length bytes
        b"\x82\x06\x00\x01\x00\x01a\x00"[:0] + b"\x80\x06\x00\x01\x00\x01a\x00",  # SUBSCRIBE flags 0
        b"\x36\x05\x00\x01a\x00\x01",  # PUBLISH QoS 3
        b"\x00\x00",  # packet type 0
        b"\x30\x04\x00\x02\xc0\xaf",  # ill-formed UTF-8 topic
        b"\x30\x03\x00\x01\x00",  # U+0000 in topic
        b"\x10\x0c\x00\x04MQTT\x04\x01\x00\x3c\x00\x00",  # reserved CONNECT flag
        b"\xc1\x00",  # PINGREQ with flags
        b"\x32\x05\x00\x01a\x00\x00",  # QoS 1 with packet id 0
    ],
)
def test_malformed_input_is_rejected(wire: bytes) -> None:
    with pytest.raises(MalformedPacket):
        MqttDecoder(version=P.MQTT_3_1_1).receive(wire)


def test_oversize_packet_is_rejected_before_it_is_buffered() -> None:
    decoder = MqttDecoder(max_packet_bytes=100, version=P.MQTT_3_1_1)
    with pytest.raises(PacketTooLarge):
        decoder.receive(b"\x30\xe8\x07")  # announces 1000 bytes


def test_repeated_property_is_malformed() -> None:
    body = b"\x00\x01t" + b"\x04\x01\x01\x01\x00"  # payload format indicator twice
    with pytest.raises(MalformedPacket):
        MqttDecoder(version=P.MQTT_5).receive(bytes((0x30, len(body))) + body)


def test_user_properties_keep_order_and_repeats() -> None:
    props = {P.USER_PROPERTY: [("k", "2"), ("a", "1"), ("k", "1")]}
    wire = encode(P.Publish("t", b"", properties=props), P.MQTT_5)
    [packet] = MqttDecoder(version=P.MQTT_5).receive(wire)
    assert packet.properties == props
