"""Request decoding: defaults for empty bodies, parser errors, schema errors, error texts."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustmq.agents.mq9 import schemas
from robustmq.agents.mq9.errors import Mq9Error


def test_empty_body_means_defaults_where_allowed():
    assert schemas.decode("MAILBOX.CREATE", b"") == {}
    assert schemas.decode("MSG.QUERY", b"  ") == {}
    assert schemas.decode("AGENT.DISCOVER", b"") == {}


def test_fetch_requires_a_body():
    with pytest.raises(Mq9Error, match=r"^invalid MSG.FETCH payload: "):
        schemas.decode("MSG.FETCH", b"")


def test_query_errors_use_their_own_prefix():
    with pytest.raises(Mq9Error, match=r"^invalid query request: "):
        schemas.decode("MSG.QUERY", b"{nope")


def test_wrong_types_name_the_field():
    with pytest.raises(Mq9Error) as info:
        schemas.decode("MSG.FETCH", b'{"config": {"num_msgs": "ten"}}')
    assert str(info.value).startswith("invalid MSG.FETCH payload: config.num_msgs:")


def test_ack_needs_all_three_fields():
    with pytest.raises(Mq9Error, match="msg_id"):
        schemas.decode("MSG.ACK", b'{"group_name": "g", "mail_address": "a"}')


def test_unknown_fields_and_nulls_are_accepted():
    got = schemas.decode("MSG.FETCH", b'{"group_name": null, "deliver": "earliest", "extra": 1}')
    assert got["deliver"] == "earliest"


def test_bad_deliver_policy():
    with pytest.raises(Mq9Error, match="deliver"):
        schemas.decode("MSG.FETCH", b'{"deliver": "sometime"}')


def test_agent_card_detection():
    card = {"name": "a", "description": "d", "skills": []}
    assert schemas.is_agent_card(card)
    assert not schemas.is_agent_card({"name": "a", "payload": "x"})


@given(st.binary(max_size=64))
def test_decode_raises_only_mq9_errors(body):
    for command in schemas.SCHEMAS:
        try:
            schemas.decode(command, body)
        except Mq9Error:
            pass
