"""Every error an mq9 reply can carry, in one place: its text and the kind of failure it reports.

The texts are RobustMQ's where it has one (MQ9.md), so clients that match on them keep working;
NATS replies carry the text only. The kind is for in-process callers (the control plane maps it
to an HTTP status), so nothing outside this module ever has to read a text to learn what failed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from robustmq.store.errors import StoreClosed, StoreError, StoreWriteError, StreamExists, StreamNotFound


class Mq9ErrorKind(enum.Enum):
    """What kind of failure a request met, whatever its text says."""

    BAD_REQUEST = "bad_request"  # the body, the subject or a field breaks mq9's rules
    FORBIDDEN = "forbidden"  # another user's agent or mailbox (authentication on)
    NOT_FOUND = "not_found"  # no such mailbox
    CONFLICT = "conflict"  # the mailbox exists already
    LIMIT_REACHED = "limit_reached"  # a server-wide limit (mailboxes) is used up
    INTERNAL = "internal"  # the broker failed (a bug, the store could not write)


class Mq9Error(Exception):
    """A request failed; ``str(exc)`` is the text of the ``error`` field of the reply."""

    def __init__(self, text: str, kind: Mq9ErrorKind = Mq9ErrorKind.BAD_REQUEST) -> None:
        super().__init__(text)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class ErrorText:
    """One error text (a ``str.format`` template) with the kind of failure it reports."""

    template: str
    kind: Mq9ErrorKind = Mq9ErrorKind.BAD_REQUEST

    def format(self, **fields: object) -> str:
        return self.template.format(**fields)

    def error(self, **fields: object) -> Mq9Error:
        return Mq9Error(self.template.format(**fields), self.kind)


_FORBIDDEN = Mq9ErrorKind.FORBIDDEN
_NOT_FOUND = Mq9ErrorKind.NOT_FOUND

PREFIX_EMPTY = ErrorText("prefix must not be empty")
NAME_CHARACTERS = ErrorText("name may only contain lowercase letters, digits, and dots")
NAME_EDGES = ErrorText("prefix must start and end with a lowercase letter or digit")
NAME_TOO_LONG = ErrorText("name must be at most {max} characters")
MAILBOX_EXISTS = ErrorText("mailbox {addr} already exists", Mq9ErrorKind.CONFLICT)
MAILBOX_MISSING = ErrorText("mailbox {addr} does not exist", _NOT_FOUND)
MAILBOX_NOT_FOUND = ErrorText("mailbox not found: {addr}", _NOT_FOUND)
INVALID_MSG_ID = ErrorText("invalid msg_id: {value}")
# authentication on: a mailbox bound to an agent is read, acked and deleted only by the agent's owner
MAILBOX_FORBIDDEN = ErrorText("forbidden: mailbox {addr} belongs to another user", _FORBIDDEN)
AGENT_FORBIDDEN = ErrorText("forbidden: agent {name} belongs to another user", _FORBIDDEN)
PAYLOAD_EMPTY = ErrorText("payload must not be empty")
AGENT_INFO_EMPTY = ErrorText("agent_info must not be empty")
AGENT_NAME_EMPTY = ErrorText("agent name must not be empty")
UNRECOGNIZED_SUBJECT = ErrorText("unrecognized mq9 subject: {subject}")
INVALID_PAYLOAD = ErrorText("invalid {command} payload: {reason}")
INVALID_QUERY = ErrorText("invalid query request: {reason}")
BODY_TOO_LARGE = ErrorText("message body too large: {size} bytes (max {max} bytes)")
TOO_MANY_MAILBOXES = ErrorText("too many mailboxes (max {max})", Mq9ErrorKind.LIMIT_REACHED)
INTERNAL = ErrorText("internal error: {reason}", Mq9ErrorKind.INTERNAL)
# checked before parsing (robustmq.agents.inputs); not RobustMQ texts: it has no such limits
NESTED_TOO_DEEPLY = ErrorText("request nested too deeply (max {max})")
SUBJECT_NOT_UTF8 = ErrorText("invalid subject: not valid UTF-8: {subject}")


def invalid_payload(command: str, reason: str) -> Mq9Error:
    """The error for a body that is not valid JSON or breaks the request's schema."""
    if command == "MSG.QUERY":
        return INVALID_QUERY.error(reason=reason)
    return INVALID_PAYLOAD.error(command=command, reason=reason)


def of_store_error(exc: StoreError) -> Mq9Error:
    """A store failure met by a command, with the store's own text and the kind it amounts to."""
    if isinstance(exc, StreamNotFound):  # the mailbox went between the check and the write
        kind = Mq9ErrorKind.NOT_FOUND
    elif isinstance(exc, StreamExists):
        kind = Mq9ErrorKind.CONFLICT
    elif isinstance(exc, (StoreWriteError, StoreClosed)):
        kind = Mq9ErrorKind.INTERNAL
    else:  # e.g. a record past the store's size limit
        kind = Mq9ErrorKind.BAD_REQUEST
    return Mq9Error(str(exc), kind)
