"""``stamp_sender``: the broker's ``mq9-sender`` replaces every client value, the rest is untouched."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from robustmq.agents.mq9.sender import stamp_sender
from robustmq.headers import decode_headers, encode_headers

_text = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=12
)
_names = st.one_of(_text, st.sampled_from(["mq9-sender", "MQ9-SENDER", "Mq9-Sender", "mq9-priority"]))
_items = st.lists(st.tuples(_names, _text), max_size=6)


def test_a_message_without_headers_gets_one_line():
    assert stamp_sender(None, "bob") == b"NATS/1.0\r\nmq9-sender: bob\r\n\r\n"


def test_without_a_user_nothing_is_added_and_forged_values_go():
    assert stamp_sender(None, None) is None
    assert stamp_sender(b"NATS/1.0\r\nmq9-sender: root\r\n\r\n", None) is None
    block = b"NATS/1.0\r\nk: v\r\n\r\n"
    assert stamp_sender(block, None) is block


def test_the_status_line_is_kept():
    assert stamp_sender(b"NATS/1.0 503\r\n\r\n", "bob") == b"NATS/1.0 503\r\nmq9-sender: bob\r\n\r\n"


@given(_items, st.one_of(st.none(), _text))
def test_every_other_header_is_kept_in_order_and_the_sender_is_the_users(items, user):
    stamped = stamp_sender(encode_headers(items), user)
    kept = [(k, v) for k, v in items if k.lower() != "mq9-sender"]
    expected = kept + ([("mq9-sender", user)] if user is not None else [])
    assert decode_headers(stamped) == expected
    if not expected:
        assert stamped is None
