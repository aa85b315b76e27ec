"""Every error text an mq9 reply can carry, in one place.

The texts are RobustMQ's where it has one (MQ9.md), so clients that match on them keep working.
"""

from __future__ import annotations


class Mq9Error(Exception):
    """A request failed; ``str(exc)`` is the text of the ``error`` field of the reply."""


PREFIX_EMPTY = "prefix must not be empty"
NAME_CHARACTERS = "name may only contain lowercase letters, digits, and dots"
NAME_EDGES = "prefix must start and end with a lowercase letter or digit"
NAME_TOO_LONG = "name must be at most {max} characters"
MAILBOX_EXISTS = "mailbox {addr} already exists"
MAILBOX_MISSING = "mailbox {addr} does not exist"
MAILBOX_NOT_FOUND = "mailbox not found: {addr}"
INVALID_MSG_ID = "invalid msg_id: {value}"
# authentication on: a mailbox bound to an agent is read, acked and deleted only by the agent's owner
MAILBOX_FORBIDDEN = "forbidden: mailbox {addr} belongs to another user"
AGENT_FORBIDDEN = "forbidden: agent {name} belongs to another user"
PAYLOAD_EMPTY = "payload must not be empty"
AGENT_INFO_EMPTY = "agent_info must not be empty"
AGENT_NAME_EMPTY = "agent name must not be empty"
UNRECOGNIZED_SUBJECT = "unrecognized mq9 subject: {subject}"
INVALID_PAYLOAD = "invalid {command} payload: {reason}"
INVALID_QUERY = "invalid query request: {reason}"
BODY_TOO_LARGE = "message body too large: {size} bytes (max {max} bytes)"
TOO_MANY_MAILBOXES = "too many mailboxes (max {max})"
INTERNAL = "internal error: {reason}"
# checked before parsing (robustmq.agents.inputs); not RobustMQ texts: it has no such limits
NESTED_TOO_DEEPLY = "request nested too deeply (max {max})"
SUBJECT_NOT_UTF8 = "invalid subject: not valid UTF-8: {subject}"


def invalid_payload(command: str, reason: str) -> Mq9Error:
    """The error for a body that is not valid JSON or breaks the request's schema."""
    if command == "MSG.QUERY":
        return Mq9Error(INVALID_QUERY.format(reason=reason))
    return Mq9Error(INVALID_PAYLOAD.format(command=command, reason=reason))
