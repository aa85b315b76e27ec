"""mq9 subject parsing: current layout, legacy layout, and subjects mq9 leaves alone."""

from hypothesis import given
from hypothesis import strategies as st

from robustmq.agents.mq9.subjects import Command, Kind, parse


def test_send_address_may_contain_dots():
    assert parse("$mq9.AI.MSG.SEND.task.001.callback") == Command(Kind.MSG_SEND, "task.001.callback")


def test_every_addressed_command():
    for verb, kind in (("FETCH", Kind.MSG_FETCH), ("ACK", Kind.MSG_ACK), ("QUERY", Kind.MSG_QUERY)):
        assert parse(f"$mq9.AI.MSG.{verb}.a.b") == Command(kind, "a.b")


def test_delete_takes_the_last_token_as_msg_id():
    assert parse("$mq9.AI.MSG.DELETE.a.b.7") == Command(Kind.MSG_DELETE, "a.b", "7")


def test_agent_and_mailbox_commands():
    assert parse("$mq9.AI.MAILBOX.CREATE").kind is Kind.MAILBOX_CREATE
    for verb in ("REGISTER", "UNREGISTER", "REPORT", "DISCOVER"):
        assert parse(f"$mq9.AI.AGENT.{verb}").kind is Kind[f"AGENT_{verb}"]


def test_unknown_subjects_from_the_reference():
    for subject in (
        "$mq9.AI.UNKNOWN.FOO",
        "$mq9.AI.MSG.SEND",
        "$mq9.AI.MSG.UNKNOWN.x",
        "$mq9.AI.AGENT.UNKNOWN",
        "$mq9.AI.MAILBOX.CREATE.extra",
        "$mq9.AI.MSG.DELETE.onlyaddress",
    ):
        assert parse(subject).kind is Kind.UNKNOWN, subject


def test_foreign_families_are_left_alone():
    for subject in (
        "$mq9.AI.API.AGENT.REGISTER",
        "$mq9.AI.INVOKE.translator.1",
        "$mq9.AI.TOOL.search.1",
        "$mq9.AI.TASK.EVENT.42",
        "plain.subject",
    ):
        assert parse(subject) is None, subject


def test_legacy_layout():
    assert parse("$mq9.AI.MAILBOX.MSG.abc.high") == Command(Kind.LEGACY_SEND, "abc", priority="high")
    assert parse("$mq9.AI.MAILBOX.LIST.abc") == Command(Kind.LEGACY_LIST, "abc")
    assert parse("$mq9.AI.MAILBOX.DELETE.abc.3") == Command(Kind.LEGACY_DELETE, "abc", "3")
    assert parse("$mq9.AI.MAILBOX.MSG.abc.urgent").kind is Kind.UNKNOWN


@given(st.text(alphabet="abc.$*>AIMSGq9 ", max_size=40))
def test_parse_never_raises(subject):
    parse("$mq9.AI." + subject)
