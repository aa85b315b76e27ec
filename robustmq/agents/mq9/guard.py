"""Live deliveries of mailbox messages with authentication on: who may receive them, and the sender.

The router asks ``MailboxGuards.guard_for`` once per cached subject; a mailbox's subjects get a
``MailboxGuard`` that stamps ``mq9-sender`` and, for an agent's mailbox, admits its owner only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robustmq.agents.mq9.sender import stamp_sender
from robustmq.agents.mq9.subjects import mailbox_of_subject, mailbox_subjects
from robustmq.isolation import client_user


class MailboxGuard:
    """The subjects of one mailbox: ``owner`` is the user of the agent that claims it, or None."""

    __slots__ = ("address", "owner")
    stamps = True

    def __init__(self, address: str, owner: str | None) -> None:
        self.address = address
        self.owner = owner

    def admits(self, sub: Any) -> bool:
        """Only the owner's connections and in-process subscribers receive an agent's mail live."""
        if self.owner is None:
            return True
        is_client, user = client_user(sub)
        return not is_client or user == self.owner

    @staticmethod
    def stamp(headers: bytes | None, origin: Any) -> bytes | None:
        """The header block the mailbox stores: the publisher's user as the only ``mq9-sender``."""
        return stamp_sender(headers, getattr(origin, "user", None))


class MailboxGuards:
    """Answers the trie's ``guard_of``: a guard for every subject of a mailbox or an owned address.

    ``owner_of(address)`` is the agent API's mailbox owner; ``exists(address)`` mq9's mailboxes.
    """

    def __init__(self, owner_of: Callable[[str], str | None], exists: Callable[[str], bool]) -> None:
        self.owner_of = owner_of
        self.exists = exists

    def guard_for(self, subject: str) -> MailboxGuard | None:
        address = mailbox_of_subject(subject)
        if address is None:
            return None
        owner = self.owner_of(address)
        if owner is None and not self.exists(address):
            return None
        return MailboxGuard(address, owner)

    @staticmethod
    def changed(trie: Any, address: str) -> None:
        """The mailbox or its owner changed: its subjects are matched (and guarded) afresh."""
        trie.forget(mailbox_subjects(address))
