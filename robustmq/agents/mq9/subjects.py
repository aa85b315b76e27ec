"""Parsing of ``$mq9.AI.*`` subjects into commands, for the current and the legacy layout.

Pure functions: a subject in, a ``Command`` (or ``None`` for subjects mq9 must leave alone) out.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

PREFIX = "$mq9.AI."
SERVICE_SUBJECT = "$mq9.AI.>"

# Subject families under the prefix that belong to other services or are ordinary routed subjects
# (MQ9.md section 3): mq9 neither answers nor rejects them.
FOREIGN_SECOND_TOKENS = frozenset({"API", "INVOKE", "TOOL", "TASK"})

LEGACY_PRIORITIES = ("high", "normal", "low")


class Kind(Enum):
    MAILBOX_CREATE = "MAILBOX.CREATE"
    MSG_SEND = "MSG.SEND"
    MSG_FETCH = "MSG.FETCH"
    MSG_ACK = "MSG.ACK"
    MSG_QUERY = "MSG.QUERY"
    MSG_DELETE = "MSG.DELETE"
    AGENT_REGISTER = "AGENT.REGISTER"
    AGENT_UNREGISTER = "AGENT.UNREGISTER"
    AGENT_REPORT = "AGENT.REPORT"
    AGENT_DISCOVER = "AGENT.DISCOVER"
    LEGACY_SEND = "MAILBOX.MSG"
    LEGACY_LIST = "MAILBOX.LIST"
    LEGACY_DELETE = "MAILBOX.DELETE"
    UNKNOWN = "UNKNOWN"


class Command(NamedTuple):
    kind: Kind
    address: str = ""
    # MSG.DELETE / MAILBOX.DELETE: the raw last token (validated by the service)
    msg_id: str = ""
    # MAILBOX.MSG: the legacy priority token
    priority: str = ""


_AGENT = {
    "REGISTER": Kind.AGENT_REGISTER,
    "UNREGISTER": Kind.AGENT_UNREGISTER,
    "REPORT": Kind.AGENT_REPORT,
    "DISCOVER": Kind.AGENT_DISCOVER,
}
_MSG_WITH_ADDRESS = {
    "SEND": Kind.MSG_SEND,
    "FETCH": Kind.MSG_FETCH,
    "ACK": Kind.MSG_ACK,
    "QUERY": Kind.MSG_QUERY,
}
_UNKNOWN = Command(Kind.UNKNOWN)
_CREATE = Command(Kind.MAILBOX_CREATE)


PARSE_CACHE_MAX_ENTRIES = 8192
_cache: dict[str, Command | None] = {}


def parse(subject: str) -> Command | None:
    """The command a ``$mq9.AI.*`` subject names; ``None`` when mq9 must ignore the subject.

    Results are cached per subject: a mailbox's SEND and FETCH subjects repeat.
    """
    try:
        return _cache[subject]
    except KeyError:
        pass
    command = _parse(subject)
    if len(_cache) >= PARSE_CACHE_MAX_ENTRIES:
        _cache.clear()
    _cache[subject] = command
    return command


def _parse(subject: str) -> Command | None:
    if not subject.startswith(PREFIX):
        return None
    tokens = subject.split(".")
    n = len(tokens)
    if n < 3:
        return _UNKNOWN
    family = tokens[2]
    if family in FOREIGN_SECOND_TOKENS:
        return None
    if any(not t for t in tokens):
        return _UNKNOWN
    if family == "MSG" and n >= 4:
        verb = tokens[3]
        kind = _MSG_WITH_ADDRESS.get(verb)
        if kind is not None:
            if n < 5:
                return _UNKNOWN
            return Command(kind, ".".join(tokens[4:]))
        if verb == "DELETE" and n >= 6:
            return Command(Kind.MSG_DELETE, ".".join(tokens[4:-1]), tokens[-1])
        return _UNKNOWN
    if family == "AGENT" and n == 4:
        kind = _AGENT.get(tokens[3])
        return Command(kind) if kind is not None else _UNKNOWN
    if family == "MAILBOX" and n >= 4:
        verb = tokens[3]
        if verb == "CREATE":
            return _CREATE if n == 4 else _UNKNOWN
        if verb == "MSG" and n >= 6 and tokens[-1] in LEGACY_PRIORITIES:
            return Command(Kind.LEGACY_SEND, ".".join(tokens[4:-1]), priority=tokens[-1])
        if verb == "LIST" and n >= 5:
            return Command(Kind.LEGACY_LIST, ".".join(tokens[4:]))
        if verb == "DELETE" and n >= 6:
            return Command(Kind.LEGACY_DELETE, ".".join(tokens[4:-1]), tokens[-1])
    return _UNKNOWN


def legacy_delivery_subject(address: str, priority: str) -> str:
    """Where a legacy mailbox subscriber receives a message of ``priority`` (high|normal|low)."""
    return f"{PREFIX}MAILBOX.MSG.{address}.{priority}"


SEND_PREFIX = PREFIX + "MSG.SEND."
LEGACY_MESSAGE_PREFIX = PREFIX + "MAILBOX.MSG."


def mailbox_subjects(address: str) -> tuple[str, ...]:
    """Every literal subject that carries messages into the mailbox at ``address``."""
    return (
        address,
        SEND_PREFIX + address,
        *(legacy_delivery_subject(address, priority) for priority in LEGACY_PRIORITIES),
    )


def mailbox_of_subject(subject: str) -> str | None:
    """The mailbox address a literal subject carries messages into, when it can be one.

    A subject outside ``$mq9.AI.`` may be an address itself; under it, only a SEND subject and a
    legacy ``MAILBOX.MSG.<address>.<priority>`` subject name one.
    """
    if not subject.startswith(PREFIX):
        return subject
    if subject.startswith(SEND_PREFIX):
        return subject[len(SEND_PREFIX) :] or None
    if subject.startswith(LEGACY_MESSAGE_PREFIX):
        address, _, last = subject[len(LEGACY_MESSAGE_PREFIX) :].rpartition(".")
        return address if address and last in LEGACY_PRIORITIES else None
    return None
