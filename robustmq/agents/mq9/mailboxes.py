"""Mailboxes: what mq9 reads and writes, held in memory and made durable through the store.

The in-memory view answers FETCH, QUERY and ACK without I/O: per mailbox an offset-ordered record
list, one offset list per priority, the newest offset of each key and each group's position.
Durability (the log, restarts) is the job of ``robustmq.agents.mq9.persistence``.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from robustmq.agents.mq9 import errors
from robustmq.agents.mq9.errors import Mq9Error

# FETCH order: critical first, then urgent, then normal (legacy "low" after normal)
PRIORITY_NAMES = ("critical", "urgent", "normal", "low")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITY_NAMES)}
NORMAL = PRIORITY_RANK["normal"]
# legacy priorities and how they map onto the current levels for FETCH / records
LEGACY_TO_CURRENT = {"high": "urgent", "normal": "normal", "low": "low"}
CURRENT_TO_LEGACY = {"critical": "high", "urgent": "high", "normal": "normal", "low": "low"}

NAME_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.")
NAME_EDGE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
MAX_ADDRESS_CHARS = 128
GENERATED_NAME_BYTES = 8

FETCH_DEFAULT_NUM_MSGS = 100
FETCH_DEFAULT_MAX_WAIT_MS = 500
FETCH_MAX_WAIT_MS = 60_000
QUERY_DEFAULT_LIMIT = 100
QUERY_MAX_LIMIT = 100


def now_s() -> int:
    return int(time.time())


def check_address(name: str) -> None:
    """The CREATE name rules of MQ9.md, in their order."""
    if not name:
        raise Mq9Error(errors.PREFIX_EMPTY)
    if not NAME_ALPHABET.issuperset(name):
        raise Mq9Error(errors.NAME_CHARACTERS)
    if name[0] not in NAME_EDGE or name[-1] not in NAME_EDGE:
        raise Mq9Error(errors.NAME_EDGES)
    if len(name) > MAX_ADDRESS_CHARS:
        raise Mq9Error(errors.NAME_TOO_LONG.format(max=MAX_ADDRESS_CHARS))


def generate_address() -> str:
    return os.urandom(GENERATED_NAME_BYTES).hex()


class StoredMessage:
    """One message of a mailbox (payload kept as the bytes that were sent)."""

    __slots__ = (
        "msg_id", "payload", "priority", "header", "create_time", "key", "tags",
        "expires_at", "legacy_priority", "reply",
    )  # fmt: skip

    def __init__(
        self,
        msg_id: int,
        payload: bytes,
        priority: str = "normal",
        header: bytes | None = None,
        create_time: int = 0,
        key: str | None = None,
        tags: tuple[str, ...] = (),
        expires_at: float | None = None,
        legacy_priority: str = "",
        reply: str | None = None,
    ) -> None:
        self.msg_id = msg_id
        self.payload = payload
        self.priority = priority
        self.header = header
        self.create_time = create_time
        self.key = key
        self.tags = tags
        self.expires_at = expires_at
        self.legacy_priority = legacy_priority
        self.reply = reply

    def as_record(self) -> dict:
        """The record shape of FETCH and QUERY replies."""
        return {
            "msg_id": self.msg_id,
            "payload": self.payload.decode("utf-8", "replace"),
            "priority": self.priority,
            "header": list(self.header) if self.header is not None else None,
            "create_time": self.create_time,
        }


@dataclass
class Mailbox:
    address: str
    ttl: int
    desc: str
    create_time: int
    legacy_public: bool = False
    next_offset: int = 0
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    # offsets per priority rank, ascending
    by_priority: list[list[int]] = field(default_factory=lambda: [[] for _ in PRIORITY_NAMES])
    latest_by_key: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    waiters: list[asyncio.Future] = field(default_factory=list)

    def is_expired(self, now: float) -> bool:
        return self.ttl > 0 and now - self.create_time >= self.ttl

    def visible(self, msg: StoredMessage, now: float) -> bool:
        if msg.expires_at is not None and now >= msg.expires_at:
            return False
        if msg.key is not None and self.latest_by_key.get(msg.key) != msg.msg_id:
            return False
        return True

    def first_offset(self) -> int:
        return min(self.messages) if self.messages else self.next_offset

    # -- writing ---------------------------------------------------------------------------------

    def append(self, msg: StoredMessage) -> None:
        """Add a message whose ``msg_id`` is ``next_offset`` (or larger, when replaying)."""
        self.messages[msg.msg_id] = msg
        self.next_offset = max(self.next_offset, msg.msg_id + 1)
        rank = PRIORITY_RANK.get(msg.priority, NORMAL)
        offsets = self.by_priority[rank]
        if not offsets or offsets[-1] < msg.msg_id:
            offsets.append(msg.msg_id)
        else:
            bisect.insort(offsets, msg.msg_id)
        if msg.key is not None:
            current = self.latest_by_key.get(msg.key)
            if current is None or current < msg.msg_id:
                self.latest_by_key[msg.key] = msg.msg_id
        if self.waiters:
            for waiter in self.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.waiters.clear()

    def delete(self, msg_id: int) -> bool:
        msg = self.messages.pop(msg_id, None)
        if msg is None:
            return False
        offsets = self.by_priority[PRIORITY_RANK.get(msg.priority, NORMAL)]
        i = bisect.bisect_left(offsets, msg_id)
        if i < len(offsets) and offsets[i] == msg_id:
            del offsets[i]
        if msg.key is not None and self.latest_by_key.get(msg.key) == msg_id:
            # the newest message under the key is gone: the key has no visible message now
            del self.latest_by_key[msg.key]
        return True

    def sweep_expired(self, now: float) -> list[int]:
        """Drop messages whose TTL has passed; returns their ids."""
        gone = [m.msg_id for m in self.messages.values() if m.expires_at is not None and now >= m.expires_at]
        for msg_id in gone:
            self.delete(msg_id)
        return gone

    # -- reading ---------------------------------------------------------------------------------

    def start_position(self, deliver: str, from_time: int, from_id: int) -> int:
        if deliver == "earliest":
            return self.first_offset()
        if deliver == "from_id":
            return min(max(from_id, self.first_offset()), self.next_offset)
        if deliver == "from_time":
            for msg_id in sorted(self.messages):
                if self.messages[msg_id].create_time >= from_time:
                    return msg_id
            return self.next_offset
        # latest: the last existing message, inclusive; on an empty mailbox the next one
        return max(self.next_offset - 1, 0) if self.messages else self.next_offset

    def collect(self, position: int, limit: int, now: float) -> list[StoredMessage]:
        """Up to ``limit`` visible messages at or after ``position``: priority first, then msg_id."""
        out: list[StoredMessage] = []
        if limit <= 0:
            return out
        messages = self.messages
        for offsets in self.by_priority:
            if not offsets:
                continue
            i = bisect.bisect_left(offsets, position)
            for j in range(i, len(offsets)):
                msg = messages[offsets[j]]
                if self.visible(msg, now):
                    out.append(msg)
                    if len(out) >= limit:
                        return out
        return out

    def in_order(self, now: float) -> Iterator[StoredMessage]:
        for msg_id in sorted(self.messages):
            msg = self.messages[msg_id]
            if self.visible(msg, now):
                yield msg


class MailboxBook:
    """Every mailbox by address, with the operations of the mq9 commands (no I/O, no awaits)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.mailboxes: dict[str, Mailbox] = {}
        self.clock = clock

    def __len__(self) -> int:
        return len(self.mailboxes)

    def get(self, address: str) -> Mailbox | None:
        """The live mailbox at ``address``; an expired one is treated as absent."""
        box = self.mailboxes.get(address)
        if box is not None and box.is_expired(self.clock()):
            return None
        return box

    def require(self, address: str) -> Mailbox:
        box = self.get(address)
        if box is None:
            raise Mq9Error(errors.MAILBOX_MISSING.format(addr=address))
        return box

    def create(self, name: str | None, ttl: int, desc: str, legacy_public: bool = False) -> Mailbox:
        if name is None:
            name = generate_address()
            while name in self.mailboxes:
                name = generate_address()
        else:
            check_address(name)
            if self.get(name) is not None:
                raise Mq9Error(errors.MAILBOX_EXISTS.format(addr=name))
        box = Mailbox(name, ttl, desc, now_s(), legacy_public)
        self.mailboxes[name] = box
        return box

    def restore(self, box: Mailbox) -> None:
        self.mailboxes[box.address] = box

    def expired(self) -> list[Mailbox]:
        now = self.clock()
        return [box for box in self.mailboxes.values() if box.is_expired(now)]

    def drop(self, address: str) -> Mailbox | None:
        box = self.mailboxes.pop(address, None)
        if box is not None:
            for waiter in box.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            box.waiters.clear()
        return box

    def fetch_position(
        self,
        box: Mailbox,
        group: str | None,
        deliver: str,
        from_time: int,
        from_id: int,
        force: bool,
    ) -> tuple[int, bool]:
        """Where a FETCH starts, and whether that position must be committed (force_deliver)."""
        if group is not None and group in box.groups and not force:
            return box.groups[group], False
        position = box.start_position(deliver, from_time, from_id)
        return position, group is not None and force

    def query(
        self, box: Mailbox, key: str | None, tags: list[str] | None, since: int | None, limit: int
    ) -> list[StoredMessage]:
        now = self.clock()
        if key is not None:
            msg_id = box.latest_by_key.get(key)
            msg = box.messages.get(msg_id) if msg_id is not None else None
            return [msg] if msg is not None and box.visible(msg, now) else []
        out: list[StoredMessage] = []
        if tags:
            wanted = set(tags)
            for msg in box.in_order(now):
                if msg.tags and wanted.intersection(msg.tags):
                    out.append(msg)
                    if len(out) >= limit:
                        break
            return out
        floor = since or 0
        for msg in box.in_order(now):
            if msg.create_time >= floor:
                out.append(msg)
                if len(out) >= limit:
                    break
        return out
