"""Mailboxes as streams of the store: msg_id = offset, priorities, keys, TTL, tags, groups.

A mailbox is a compacted stream named by its address, whose subject filter is the address too,
so a publish on that subject from any protocol lands in it. Its TTL, description and creation
time ride in the stream's metadata; consumer groups are store consumers ``mq9.<group>``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from robustmq.agents.mq9 import errors
from robustmq.store import ConsumerNotFound, Record, Store, StreamNotFound
from robustmq.subjects import is_valid_publish_subject

MAILBOX_KIND = "mailbox"
GROUP_PREFIX = "mq9."

NAME_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.")
NAME_EDGE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
MAX_ADDRESS_CHARS = 128
GENERATED_NAME_BYTES = 8

FETCH_DEFAULT_NUM_MSGS = 100
FETCH_DEFAULT_MAX_WAIT_MS = 500
FETCH_MAX_WAIT_MS = 60_000
QUERY_DEFAULT_LIMIT = 100
QUERY_MAX_LIMIT = 100
READ_CHUNK = 256

# legacy priorities (robustmq==1.0.0 SDK) and how they map onto the store's classes
LEGACY_TO_CURRENT = {"high": "urgent", "normal": "normal", "low": "normal"}
CURRENT_TO_LEGACY = {"critical": "high", "urgent": "high", "normal": "normal"}
LEGACY_SUBJECT_PREFIX = "$mq9.AI.MAILBOX.MSG."


def check_address(name: str) -> None:
    """The CREATE name rules of MQ9.md, in their order."""
    if not name:
        raise errors.PREFIX_EMPTY.error()
    if not NAME_ALPHABET.issuperset(name):
        raise errors.NAME_CHARACTERS.error()
    if name[0] not in NAME_EDGE or name[-1] not in NAME_EDGE:
        raise errors.NAME_EDGES.error()
    if len(name) > MAX_ADDRESS_CHARS:
        raise errors.NAME_TOO_LONG.error(max=MAX_ADDRESS_CHARS)


def generate_address() -> str:
    return os.urandom(GENERATED_NAME_BYTES).hex()


def record_json(rec: Record) -> dict[str, Any]:
    """The message shape of FETCH and QUERY replies."""
    return {
        "msg_id": rec.offset,
        "payload": rec.payload.decode("utf-8", "replace"),
        "priority": rec.priority,
        "header": list(rec.headers) if rec.headers is not None else None,
        "create_time": rec.timestamp_ms // 1000,
    }


def legacy_priority(rec: Record) -> str:
    """high | normal | low: the token a legacy send used, else the current priority mapped."""
    if rec.subject.startswith(LEGACY_SUBJECT_PREFIX):
        token = rec.subject.rpartition(".")[2]
        if token in LEGACY_TO_CURRENT:
            return token
    return CURRENT_TO_LEGACY.get(rec.priority, "normal")


@dataclass
class Mailbox:
    address: str
    ttl: int  # seconds from create_time; 0 = never expires
    desc: str
    create_time: int  # seconds
    legacy_public: bool = False

    def is_expired(self, now: float) -> bool:
        return self.ttl > 0 and now - self.create_time >= self.ttl

    def metadata(self) -> dict[str, str]:
        return {
            "mq9_ttl_s": str(self.ttl),
            "mq9_create_time_s": str(self.create_time),
            "mq9_public": "1" if self.legacy_public else "0",
        }

    @classmethod
    def from_stream(cls, name: str, description: str, metadata: dict[str, str]) -> Mailbox:
        return cls(
            name,
            int(metadata.get("mq9_ttl_s", "0")),
            description,
            int(metadata.get("mq9_create_time_s", "0")),
            metadata.get("mq9_public") == "1",
        )


class MailboxStore:
    """Every mailbox of the broker, on ``store``. Synchronous and cheap: no awaits inside."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.mailboxes: dict[str, Mailbox] = {}

    def __len__(self) -> int:
        return len(self.mailboxes)

    def open(self) -> list[Mailbox]:
        """Find the mailboxes the store kept across a restart."""
        for cfg in self.store.list_streams():
            if cfg.kind == MAILBOX_KIND:
                box = Mailbox.from_stream(cfg.name, cfg.description, cfg.metadata)
                self.mailboxes[box.address] = box
        return list(self.mailboxes.values())

    # -- mailboxes -------------------------------------------------------------------------------

    def get(self, address: str) -> Mailbox | None:
        """The live mailbox at ``address``; one past its TTL counts as gone."""
        box = self.mailboxes.get(address)
        if box is not None and box.is_expired(time.time()):
            return None
        return box

    def require(self, address: str) -> Mailbox:
        box = self.get(address)
        if box is None:
            raise errors.MAILBOX_MISSING.error(addr=address)
        return box

    def create(self, name: str | None, ttl: int, desc: str, legacy_public: bool = False) -> Mailbox:
        if name is None:
            name = generate_address()
            while self.store.has_stream(name):
                name = generate_address()
        else:
            check_address(name)
            if name in self.mailboxes and self.get(name) is None:
                self.drop(name)  # expired, not swept yet
            if self.store.has_stream(name):
                raise errors.MAILBOX_EXISTS.error(addr=name)
        box = Mailbox(name, ttl, desc, int(time.time()), legacy_public)
        self.store.create_stream(
            {
                "name": name,
                "subjects": [name] if is_valid_publish_subject(name) else [],
                "kind": MAILBOX_KIND,
                "compact": True,
                "description": desc,
                "metadata": box.metadata(),
            }
        )
        self.mailboxes[name] = box
        return box

    def drop(self, address: str) -> Mailbox | None:
        box = self.mailboxes.pop(address, None)
        if box is not None:
            try:
                self.store.delete_stream(address)
            except StreamNotFound:
                pass
        return box

    def expired(self) -> list[Mailbox]:
        now = time.time()
        return [box for box in self.mailboxes.values() if box.is_expired(now)]

    # -- messages --------------------------------------------------------------------------------

    def append(
        self,
        address: str,
        payload: bytes,
        *,
        headers: bytes | None = None,
        subject: str | None = None,
        priority: str = "normal",
        key: str | None = None,
        tags: tuple[str, ...] = (),
        ttl_s: int | None = None,
    ) -> Any:
        """Store one message; returns the store's ack (``.offset`` is the msg_id)."""
        return self.store.append(
            address,
            payload,
            subject=subject,
            headers=headers,
            key=key,
            priority=priority,
            tags=tags,
            ttl_ms=ttl_s * 1000 if ttl_s else None,
        )

    def delete(self, address: str, msg_id: int) -> Any:
        """Tombstone one message; returns the journal write's future, or None when absent."""
        if address in self.mailboxes:
            return self.store.delete(address, msg_id)
        return None

    def start_position(self, address: str, deliver: str, from_time: int, from_id: int) -> int:
        store = self.store
        first = store.first_offset(address)
        end = store.end_offset(address)
        if deliver == "earliest":
            return first
        if deliver == "from_id":
            return min(max(from_id, first), end)
        if deliver == "from_time":
            found = store.first_offset_at_or_after(address, from_time * 1000)
            return end if found is None else found
        # latest: the last existing message, inclusive; on an empty mailbox the next one
        return end - 1 if end > first else end

    def group_position(self, address: str, group: str) -> int | None:
        try:
            return self.store.consumer(address, GROUP_PREFIX + group, create=False).committed()
        except ConsumerNotFound:
            return None

    def commit_group(self, address: str, group: str, position: int) -> Any:
        """Set a group's committed position; returns the journal write's future."""
        return self.store.consumer(address, GROUP_PREFIX + group, config={"start": position}).commit(position)

    def fetch_position(
        self, address: str, group: str | None, deliver: str, from_time: int, from_id: int, force: bool
    ) -> int:
        """Where a FETCH starts; a forced position of a group is committed."""
        if group is not None and not force:
            position = self.group_position(address, group)
            if position is not None:
                return position
        position = self.start_position(address, deliver, from_time, from_id)
        if group is not None and force:
            self.commit_group(address, group, position)
        return position

    def collect(self, address: str, position: int, limit: int) -> list[Record]:
        """Up to ``limit`` visible messages from ``position``: critical, urgent, normal; FIFO within."""
        if limit <= 0:
            return []
        records, _ = self.store.read_by_priority(address, [position, position, position], limit)
        return records

    def in_order(self, address: str, start: int | None = None) -> Iterator[Record]:
        """Every visible message from ``start`` (default: the first kept), in msg_id order."""
        store = self.store
        offset = store.first_offset(address) if start is None else start
        end = store.end_offset(address)
        while offset < end:
            chunk = store.read(address, offset, READ_CHUNK)
            if not chunk:
                return
            yield from chunk
            offset = chunk[-1].offset + 1

    def query(
        self, address: str, key: str | None, tags: list[str] | None, since: int | None, limit: int
    ) -> list[Record]:
        if key is not None:
            rec = self.store.latest_by_key(address, key)
            return [rec] if rec is not None else []
        out: list[Record] = []
        if limit <= 0:
            return out
        if tags:
            wanted = set(tags)
            for rec in self.in_order(address):
                if rec.tags and not wanted.isdisjoint(rec.tags):
                    out.append(rec)
                    if len(out) >= limit:
                        break
            return out
        start = None
        if since:
            start = self.store.first_offset_at_or_after(address, since * 1000)
            if start is None:
                return out
        for rec in self.in_order(address, start):
            if since and rec.timestamp_ms // 1000 < since:
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out
