"""Unit tests: mailbox records, header blocks, send options and the safe ACK point."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mq9 import Message
from mq9.headers import decode_headers, encode_headers
from mq9.messages import encode_payload, send_headers
from mq9.worker import safe_ack_id

header_key = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1
)
header_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)


@given(st.dictionaries(header_key, header_value, max_size=8))
def test_header_block_round_trips(headers):
    assert decode_headers(encode_headers(headers)) == headers


@given(st.binary(max_size=200))
def test_decoding_any_bytes_never_raises(block):
    decode_headers(block)


def test_record_from_fetch_becomes_a_message():
    block = list(encode_headers({"mq9-priority": "urgent", "mq9-key": "k1", "mq9-tags": "a, b"}))
    record = {
        "msg_id": 3,
        "payload": '{"x": 1}',
        "priority": "urgent",
        "header": block,
        "create_time": 1716451200,
    }
    msg = Message.from_record(record, "box.one")
    assert msg.msg_id == 3
    assert msg.payload == b'{"x": 1}'
    assert msg.json() == {"x": 1}
    assert msg.priority == "urgent"
    assert msg.key == "k1"
    assert msg.tags == ["a", "b"]
    assert msg.create_time == 1716451200
    assert msg.mailbox == "box.one"


def test_record_without_headers():
    msg = Message.from_record(
        {"msg_id": 0, "payload": "hi", "priority": "normal", "header": None, "create_time": 1}
    )
    assert msg.headers == {} and msg.text() == "hi" and msg.key is None and msg.tags == []


def test_send_options_become_mq9_headers():
    headers = send_headers(priority="urgent", ttl=60, delay=5, key="k", tags=["x", " y "])
    assert headers == {
        "mq9-priority": "urgent",
        "mq9-ttl": "60",
        "mq9-delay": "5",
        "mq9-key": "k",
        "mq9-tags": "x,y",
    }
    assert send_headers() == {}
    with pytest.raises(ValueError):
        send_headers(priority="high")
    with pytest.raises(ValueError):
        send_headers(tags=["a,b"])


def test_payloads_encode_bytes_text_and_json():
    assert encode_payload(b"\x00\x01") == b"\x00\x01"
    assert encode_payload("héllo") == "héllo".encode()
    assert encode_payload({"a": [1, 2]}) == b'{"a":[1,2]}'


def m(msg_id: int, priority: str = "normal") -> Message:
    return Message(msg_id=msg_id, payload=b"", priority=priority)


def test_ack_point_of_a_complete_batch_is_the_last_handled_offset():
    batch = [m(5, "critical"), m(2), m(3), m(7)]
    assert safe_ack_id(batch, {2, 3, 5, 7}, full=False) == 7


def test_ack_point_stops_below_an_unhandled_message():
    batch = [m(5, "critical"), m(2), m(3), m(7)]
    # 3 failed: acking 5 would skip it (ACK is cumulative across priorities)
    assert safe_ack_id(batch, {2, 5}, full=False) == 2
    assert safe_ack_id(batch, {5}, full=False) is None


def test_full_batch_ending_in_normal_acks_up_to_its_last_normal_offset():
    batch = [m(9, "critical"), m(1), m(2)]
    # normal messages after 2 may exist; critical 9 was handled but stays above the ack point
    assert safe_ack_id(batch, {1, 2, 9}, full=True) == 2


def test_full_batch_of_higher_priorities_alone_cannot_be_acked():
    batch = [m(4, "critical"), m(6, "urgent")]
    # lower-priority messages with lower offsets may exist and were not seen
    assert safe_ack_id(batch, {4, 6}, full=True) is None
