"""The operations a NATS client sends, as plain event objects produced by the parser.

``Ping`` and ``Pong`` carry nothing and are singletons (``PING``, ``PONG``).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any


class Connect:
    __slots__ = ("options",)

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def __eq__(self, other: object) -> bool:
        return type(other) is Connect and other.options == self.options

    def __repr__(self) -> str:
        return f"Connect({self.options!r})"


class Pub(tuple):
    """PUB or HPUB: ``(subject, reply, headers, payload)``; ``headers`` is the raw block or ``None``.

    A tuple, because the parser makes one per message: building it costs a fraction of an object.
    """

    __slots__ = ()

    def __new__(cls, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> Pub:
        return tuple.__new__(cls, (subject, reply, headers, payload))

    subject = property(itemgetter(0))
    reply = property(itemgetter(1))
    headers = property(itemgetter(2))
    payload = property(itemgetter(3))

    def __repr__(self) -> str:
        return f"Pub({self[0]!r}, {self[1]!r}, {self[2]!r}, {self[3]!r})"


class PubRun(tuple):
    """Consecutive plain PUBs (no reply, no headers) to one subject: ``(subject, payloads)``.

    Only a parser built with ``merge_runs=True`` produces it; it stands for one ``Pub`` per payload,
    in order, and lets the connection route the run at once.
    """

    __slots__ = ()

    def __new__(cls, subject: str, payloads: list[bytes]) -> PubRun:
        return tuple.__new__(cls, (subject, payloads))

    subject = property(itemgetter(0))
    payloads = property(itemgetter(1))

    def expand(self) -> list[Pub]:
        return [Pub(self[0], None, None, p) for p in self[1]]

    def __repr__(self) -> str:
        return f"PubRun({self[0]!r}, {self[1]!r})"


class PubBatch(list):
    """Consecutive plain PUBs (no reply, no headers) to varied subjects: ``[subject, payload, ...]``.

    Only a parser built with ``merge_runs=True`` produces it; a flat list, so the parser adds a
    message with two appends and the connection routes the batch in one loop.
    """

    __slots__ = ()

    def expand(self) -> list[Pub]:
        it = iter(self)
        return [Pub(subject, None, None, payload) for subject, payload in zip(it, it, strict=False)]

    def __repr__(self) -> str:
        return f"PubBatch({list.__repr__(self)})"


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

Event = Connect | Pub | PubRun | PubBatch | Sub | Unsub | Ping | Pong
