"""The AMQP codec without a network: framing, message assembly, frame errors, and a fuzz test."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import frame

from robustmq.bridges.amqp import errors as E
from robustmq.bridges.amqp.codec import (
    FrameDecoder,
    Heartbeat,
    Message,
    Method,
    content_frames,
    decode_properties,
    deliver_frames,
    short_string,
)
from robustmq.bridges.amqp.errors import AmqpConnectionError, BadProtocolHeader
from robustmq.bridges.amqp.limits import PROTOCOL_HEADER

FRAME_MAX = 4096


def _decoder() -> FrameDecoder:
    d = FrameDecoder(FRAME_MAX, 1 << 20)
    assert d.receive(PROTOCOL_HEADER) == []
    return d


def _publish(body: bytes, props: C.Basic.Properties | None = None, channel: int = 1) -> bytes:
    props = props or C.Basic.Properties()
    return frame.marshal(
        C.Basic.Publish(exchange="ex", routing_key="a.b", mandatory=True), channel
    ) + content_frames(channel, props.marshal(), body, FRAME_MAX)


def test_method_frames_decode_to_pamqp_methods() -> None:
    d = _decoder()
    events = d.receive(frame.marshal(C.Channel.Open(), 3) + frame.marshal(C.Basic.Qos(prefetch_count=7), 3))
    assert [type(e) for e in events] == [Method, Method]
    assert events[1].channel == 3 and events[1].method.prefetch_count == 7


def test_publish_header_and_bodies_become_one_message_with_properties_kept() -> None:
    d = _decoder()
    props = C.Basic.Properties(
        content_type="text/plain", headers={"k": "v", "n": 5}, delivery_mode=2, priority=3
    )
    body = bytes(range(256)) * 40  # several body frames at frame_max 4096
    (msg,) = d.receive(_publish(body, props))
    assert isinstance(msg, Message)
    assert (msg.exchange, msg.routing_key, msg.mandatory) == ("ex", "a.b", True)
    assert msg.body == body
    assert msg.properties.headers == {"k": "v", "n": 5} and msg.properties.delivery_mode == 2
    assert decode_properties(msg.raw_properties).content_type == "text/plain"


def test_empty_body_completes_at_the_header() -> None:
    (msg,) = _decoder().receive(_publish(b""))
    assert msg.body == b""


def test_bytes_split_anywhere_give_the_same_events() -> None:
    data = (
        _publish(b"x" * 5000)
        + frame.marshal(C.Basic.Ack(delivery_tag=9), 1)
        + b"\x08\x00\x00\x00\x00\x00\x00\xce"
    )
    whole = _decoder().receive(data)
    for cut in (1, 7, 8, 100, len(data) - 1):
        d = _decoder()
        parts = d.receive(data[:cut]) + d.receive(data[cut:])
        assert [type(e) for e in parts] == [type(e) for e in whole] == [Message, Method, Heartbeat]


def test_wrong_protocol_header_is_refused() -> None:
    with pytest.raises(BadProtocolHeader):
        FrameDecoder(FRAME_MAX, 100).receive(b"GET / HTTP/1.1\r\n")
    with pytest.raises(BadProtocolHeader):
        FrameDecoder(FRAME_MAX, 100).receive(b"AMQP\x00\x00\x08\x00")


def test_wrong_frame_end_is_a_frame_error() -> None:
    data = frame.marshal(C.Channel.Open(), 1)
    with pytest.raises(AmqpConnectionError) as err:
        _decoder().receive(data[:-1] + b"\x00")
    assert err.value.code == E.FRAME_ERROR
    assert "invalid_frame_end_marker,0" in err.value.text


def test_frame_over_frame_max_is_a_frame_error_before_its_payload_arrives() -> None:
    with pytest.raises(AmqpConnectionError) as err:
        _decoder().receive(struct.pack(">BHI", 1, 1, 200_000))
    assert err.value.code == E.FRAME_ERROR and "frame_too_large,200000,4088" in err.value.text


def test_unknown_method_and_content_out_of_order_are_connection_errors() -> None:
    with pytest.raises(AmqpConnectionError) as err:
        _decoder().receive(struct.pack(">BHIHH", 1, 1, 4, 99, 10) + b"\xce")
    assert err.value.code == E.NOT_IMPLEMENTED and (err.value.class_id, err.value.method_id) == (99, 10)
    with pytest.raises(AmqpConnectionError) as err:
        _decoder().receive(struct.pack(">BHI", 3, 1, 3) + b"abc\xce")
    assert err.value.code == E.UNEXPECTED_FRAME
    publish = frame.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1)
    with pytest.raises(AmqpConnectionError) as err:
        _decoder().receive(publish + frame.marshal(C.Basic.Qos(), 1))
    assert err.value.code == E.UNEXPECTED_FRAME and "expected content header" in err.value.text


def test_deliver_fast_path_decodes_with_pamqp() -> None:
    props = C.Basic.Properties(headers={"a": "b"}, message_id="m1")
    data = deliver_frames(
        2, short_string("ctag"), 42, True, "amq.topic", "a.b", props.marshal(), b"body", FRAME_MAX
    )
    n, channel, method = frame.unmarshal(data)
    assert channel == 2 and method.name == "Basic.Deliver"
    assert (method.consumer_tag, method.delivery_tag, method.redelivered) == ("ctag", 42, True)
    assert (method.exchange, method.routing_key) == ("amq.topic", "a.b")
    n2, _, header = frame.unmarshal(data[n:])
    assert header.body_size == 4 and header.properties.headers == {"a": "b"}
    _, _, body = frame.unmarshal(data[n + n2 :])
    assert body.value == b"body"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_any_bytes_give_events_or_a_protocol_error_never_a_crash(data: bytes, cut: int) -> None:
    d = _decoder()
    try:
        d.receive(data[:cut])
        d.receive(data[cut:])
    except AmqpConnectionError as exc:
        assert exc.code in E.CODE_NAMES


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=9000), min_size=1, max_size=4),
    st.dictionaries(
        st.text(min_size=1, max_size=8), st.one_of(st.text(max_size=20), st.integers(-1000, 1000)), max_size=4
    ),
    st.integers(min_value=1, max_value=64),
)
def test_published_messages_come_out_whole_however_the_bytes_are_chunked(
    bodies: list[bytes], headers: dict, chunk: int
) -> None:
    props = C.Basic.Properties(headers=headers or None)
    data = b"".join(_publish(b, props) for b in bodies)
    d = _decoder()
    got = []
    for i in range(0, len(data), chunk * 97):
        got.extend(d.receive(data[i : i + chunk * 97]))
    assert [m.body for m in got] == bodies
    assert all((m.properties.headers or {}) == headers for m in got)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.text(max_size=30), st.booleans())
def test_the_one_step_publish_path_equals_the_frame_by_frame_path(
    body: bytes, key: str, mandatory: bool
) -> None:
    props = C.Basic.Properties(message_id="m", headers={"k": key})
    data = frame.marshal(
        C.Basic.Publish(exchange="x", routing_key=key, mandatory=mandatory), 1
    ) + content_frames(1, props.marshal(), body, FRAME_MAX)
    (fast,) = _decoder().receive(data)
    slow_decoder = _decoder()
    slow = [e for i in range(len(data)) for e in slow_decoder.receive(data[i : i + 1])]
    assert len(slow) == 1
    for field in ("exchange", "routing_key", "mandatory", "raw_properties", "body"):
        assert getattr(fast, field) == getattr(slow[0], field)


def test_cached_delivery_frames_equal_freshly_built_ones() -> None:
    from robustmq.bridges.amqp.codec import DeliveryWire, deliver_cached

    raw = C.Basic.Properties(headers={"a": 1}).marshal()
    body = b"z" * 10_000
    wire = DeliveryWire("ex", "a.b")
    for channel, tag in ((1, 1), (1, 2), (3, 1)):  # reused, then rebuilt for another channel
        assert deliver_cached(
            wire, channel, short_string("t"), tag, tag == 2, raw, body, FRAME_MAX
        ) == deliver_frames(channel, short_string("t"), tag, tag == 2, "ex", "a.b", raw, body, FRAME_MAX)
