"""How mailboxes become durable: the interface the mq9 service writes through.

``MemoryPersistence`` keeps nothing (unit tests, brokers without a store); the store-backed
implementation lives next to it once the store offers streams (``store_persistence``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from robustmq.agents.mq9.mailboxes import Mailbox, StoredMessage


@dataclass
class DelayedMessage:
    """A SEND with ``mq9-delay``: held until ``release_at`` (seconds), then appended."""

    address: str
    release_at: float
    payload: bytes
    priority: str
    header: bytes | None
    key: str | None
    tags: tuple[str, ...]
    ttl_s: int | None
    reply: str | None = None
    token: Any = None  # the persistence's handle, to forget it after release


@dataclass
class Restored:
    mailboxes: list[Mailbox] = field(default_factory=list)
    delayed: list[DelayedMessage] = field(default_factory=list)


class MailboxPersistence(Protocol):
    async def open(self) -> Restored: ...

    async def close(self) -> None: ...

    def create(self, box: Mailbox) -> Awaitable[Any] | None: ...

    def drop(self, box: Mailbox) -> None: ...

    def append(self, box: Mailbox, msg: StoredMessage) -> Awaitable[Any] | None:
        """Make ``msg`` durable; the awaitable completes when it is (``None``: already is)."""
        ...

    def delete(self, box: Mailbox, msg_id: int) -> None: ...

    def commit_group(self, box: Mailbox, group: str, position: int) -> None: ...

    def hold(self, delayed: DelayedMessage) -> Awaitable[Any] | None: ...

    def release(self, delayed: DelayedMessage) -> None: ...


class MemoryPersistence:
    """Nothing survives a restart."""

    async def open(self) -> Restored:
        return Restored()

    async def close(self) -> None:
        pass

    def create(self, box: Mailbox) -> None:
        return None

    def drop(self, box: Mailbox) -> None:
        pass

    def append(self, box: Mailbox, msg: StoredMessage) -> None:
        return None

    def delete(self, box: Mailbox, msg_id: int) -> None:
        pass

    def commit_group(self, box: Mailbox, group: str, position: int) -> None:
        pass

    def hold(self, delayed: DelayedMessage) -> None:
        return None

    def release(self, delayed: DelayedMessage) -> None:
        pass
