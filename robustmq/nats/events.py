"""The operations a NATS client sends, as plain event objects produced by the parser.

``Ping`` and ``Pong`` carry nothing and are singletons (``PING``, ``PONG``).
"""

from __future__ import annotations

from typing import Any


class Connect:
    __slots__ = ("options",)

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def __eq__(self, other: object) -> bool:
        return type(other) is Connect and other.options == self.options

    def __repr__(self) -> str:
        return f"Connect({self.options!r})"


class Pub:
    """PUB or HPUB: ``headers`` is the raw header block for HPUB, ``None`` for PUB."""

    __slots__ = ("subject", "reply", "headers", "payload")

    def __init__(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        self.subject = subject
        self.reply = reply
        self.headers = headers
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Pub
            and other.subject == self.subject
            and other.reply == self.reply
            and other.headers == self.headers
            and other.payload == self.payload
        )

    def __repr__(self) -> str:
        return f"Pub({self.subject!r}, {self.reply!r}, {self.headers!r}, {self.payload!r})"


class Sub:
    __slots__ = ("subject", "queue", "sid")

    def __init__(self, subject: str, queue: str | None, sid: str) -> None:
        self.subject = subject
        self.queue = queue
        self.sid = sid

    def __eq__(self, other: object) -> bool:
        return type(other) is Sub and (other.subject, other.queue, other.sid) == (
            self.subject,
            self.queue,
            self.sid,
        )

    def __repr__(self) -> str:
        return f"Sub({self.subject!r}, {self.queue!r}, {self.sid!r})"


class Unsub:
    """UNSUB: ``max_msgs`` is 0 when absent (remove at once)."""

    __slots__ = ("sid", "max_msgs")

    def __init__(self, sid: str, max_msgs: int) -> None:
        self.sid = sid
        self.max_msgs = max_msgs

    def __eq__(self, other: object) -> bool:
        return type(other) is Unsub and (other.sid, other.max_msgs) == (self.sid, self.max_msgs)

    def __repr__(self) -> str:
        return f"Unsub({self.sid!r}, {self.max_msgs})"


class Ping:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PING"


class Pong:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PONG"


PING = Ping()
PONG = Pong()

Event = Connect | Pub | Sub | Unsub | Ping | Pong
