"""mq9 errors carry a kind beside their text: the control plane maps kinds to HTTP statuses, while
NATS replies keep RobustMQ's texts byte for byte."""

from __future__ import annotations

import pytest

from api.mq9_calls import STATUS_OF_KIND, problem_of
from robustmq.agents.mq9 import errors
from robustmq.agents.mq9.errors import ErrorText, Mq9Error, Mq9ErrorKind
from robustmq.agents.mq9.service import _error_body
from robustmq.store.errors import RecordTooLarge, StoreClosed, StoreWriteError, StreamExists, StreamNotFound

INTENDED_STATUS = (
    (Mq9ErrorKind.BAD_REQUEST, 400),
    (Mq9ErrorKind.FORBIDDEN, 403),
    (Mq9ErrorKind.NOT_FOUND, 404),
    (Mq9ErrorKind.CONFLICT, 409),  # the mailbox exists
    (Mq9ErrorKind.LIMIT_REACHED, 409),
    (Mq9ErrorKind.INTERNAL, 503),  # retry later, as when the service is not running
)


def test_the_status_table_covers_every_error_kind():
    assert {kind for kind, _ in INTENDED_STATUS} == set(Mq9ErrorKind) == set(STATUS_OF_KIND)


@pytest.mark.parametrize(("kind", "status"), INTENDED_STATUS)
def test_every_error_kind_maps_to_its_intended_http_status(kind: Mq9ErrorKind, status: int):
    assert STATUS_OF_KIND[kind] == status
    problem = problem_of(Mq9Error("some text", kind))
    assert problem.status == status
    assert problem.detail == "some text"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (errors.MAILBOX_MISSING, 404),
        (errors.MAILBOX_NOT_FOUND, 404),
        (errors.MAILBOX_EXISTS, 409),
        (errors.TOO_MANY_MAILBOXES, 409),
        (errors.MAILBOX_FORBIDDEN, 403),
        (errors.AGENT_FORBIDDEN, 403),
        (errors.INTERNAL, 503),
        (errors.INVALID_MSG_ID, 400),
        (errors.BODY_TOO_LARGE, 400),
        (errors.INVALID_PAYLOAD, 400),
        (errors.NESTED_TOO_DEEPLY, 400),
    ],
)
def test_each_error_text_reaches_rest_with_the_status_of_its_kind(text: ErrorText, status: int):
    assert STATUS_OF_KIND[text.kind] == status


def test_every_error_text_has_a_kind_rest_can_map():
    texts = [v for v in vars(errors).values() if isinstance(v, ErrorText)]
    assert len(texts) >= 20
    for text in texts:
        assert text.kind in STATUS_OF_KIND, text.template


def test_the_wire_text_is_unchanged_by_the_kind():
    error = errors.MAILBOX_MISSING.error(addr="a.b")
    assert str(error) == errors.MAILBOX_MISSING.format(addr="a.b") == "mailbox a.b does not exist"
    assert error.args == ("mailbox a.b does not exist",)
    assert _error_body(str(error)) == b'{"error":"mailbox a.b does not exist"}'
    assert errors.invalid_payload("MSG.QUERY", "x").kind is Mq9ErrorKind.BAD_REQUEST
    assert str(errors.invalid_payload("MSG.ACK", "x")) == "invalid MSG.ACK payload: x"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (StreamNotFound("stream not found: a"), Mq9ErrorKind.NOT_FOUND),
        (StreamExists("stream already exists: a"), Mq9ErrorKind.CONFLICT),
        (StoreWriteError("cannot write to the store at /x: full"), Mq9ErrorKind.INTERNAL),
        (StoreClosed("the store is closed"), Mq9ErrorKind.INTERNAL),
        (RecordTooLarge("record of 9 bytes exceeds the limit of 1 bytes"), Mq9ErrorKind.BAD_REQUEST),
    ],
)
def test_store_failures_keep_their_text_and_get_a_kind(exc: Exception, kind: Mq9ErrorKind):
    error = errors.of_store_error(exc)  # type: ignore[arg-type]
    assert error.kind is kind
    assert str(error) == str(exc)
