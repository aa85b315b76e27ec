"""The legacy mailbox layout of the published ``robustmq==1.0.0`` SDK (MQ9.md section 2).

SEND is a plain publish on ``$mq9.AI.MAILBOX.MSG.{id}.{high|normal|low}``; a subscription on
``$mq9.AI.MAILBOX.MSG.{id}.*`` receives the stored messages first, then new ones, pushed here.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.agents.mq9 import errors
from robustmq.agents.mq9.mailboxes import CURRENT_TO_LEGACY, Mailbox, StoredMessage
from robustmq.agents.mq9.subjects import LEGACY_PRIORITIES, legacy_delivery_subject

if TYPE_CHECKING:
    from robustmq.agents.mq9.service import Mq9Service

SUBSCRIPTION_PREFIX = "$mq9.AI.MAILBOX.MSG."
LEGACY_ORDER = {"high": 0, "normal": 1, "low": 2}


def legacy_priority(msg: StoredMessage) -> str:
    return msg.legacy_priority or CURRENT_TO_LEGACY.get(msg.priority, "normal")


def envelope(msg: StoredMessage) -> bytes:
    """The push body the SDK decodes into (msg_id, payload)."""
    return orjson.dumps({"msg_id": msg.msg_id, "payload": base64.b64encode(msg.payload).decode()})


class MailboxWatch:
    """One client subscription on a legacy mailbox subject."""

    __slots__ = ("sub", "address", "priority")

    def __init__(self, sub: Any, address: str, priority: str) -> None:
        self.sub = sub
        self.address = address
        self.priority = priority  # "*" or one of high|normal|low


def parse_watch(subject: str) -> tuple[str, str] | None:
    """``$mq9.AI.MAILBOX.MSG.{address}.{*|high|normal|low}`` -> (address, priority)."""
    if not subject.startswith(SUBSCRIPTION_PREFIX):
        return None
    address, _, last = subject[len(SUBSCRIPTION_PREFIX) :].rpartition(".")
    if not address or (last != "*" and last not in LEGACY_PRIORITIES):
        return None
    return address, last


class LegacyMailboxes:
    """Legacy SEND, LIST and push delivery on top of the service's mailboxes."""

    def __init__(self, service: Mq9Service) -> None:
        self.service = service
        self.watches: dict[str, list[MailboxWatch]] = {}
        self._original_add: Any = None
        self._original_unsubscribe: Any = None

    @property
    def watching(self) -> bool:
        return bool(self.watches)

    # -- observing subscriptions -----------------------------------------------------------------

    def start(self) -> None:
        """Observe subscriptions made on the router, to spot legacy mailbox subscriptions."""
        router = self.service.router
        self._original_add = router.add
        self._original_unsubscribe = router.unsubscribe

        def add(sub: Any) -> None:
            self._original_add(sub)
            self.on_subscribe(sub)

        def unsubscribe(sub: Any) -> bool:
            self.on_unsubscribe(sub)
            return self._original_unsubscribe(sub)

        router.add = add
        router.unsubscribe = unsubscribe

    def stop(self) -> None:
        router = self.service.router
        if self._original_add is not None:
            router.add = self._original_add
            router.unsubscribe = self._original_unsubscribe
            self._original_add = None

    def on_subscribe(self, sub: Any) -> None:
        target = parse_watch(sub.subject)
        if target is None:
            return
        address, priority = target
        watch = MailboxWatch(sub, address, priority)
        watches = self.watches.setdefault(address, [])
        first_of_group = sub.queue is None or not any(w.sub.queue == sub.queue for w in watches)
        watches.append(watch)
        box = self.service.book.get(address)
        if box is not None and first_of_group:
            # the mailbox promise: what was stored before the subscription is delivered too
            loop = self.service._loop
            if loop is not None:
                loop.call_soon(self._replay, watch, box)

    def on_unsubscribe(self, sub: Any) -> None:
        target = parse_watch(getattr(sub, "subject", ""))
        if target is None:
            return
        watches = self.watches.get(target[0])
        if not watches:
            return
        watches[:] = [w for w in watches if w.sub is not sub]
        if not watches:
            del self.watches[target[0]]

    def _replay(self, watch: MailboxWatch, box: Mailbox) -> None:
        if watch not in self.watches.get(watch.address, ()):
            return
        now = self.service.book.clock()
        stored = [m for m in box.in_order(now) if watch.priority in ("*", legacy_priority(m))]
        stored.sort(key=lambda m: (LEGACY_ORDER.get(legacy_priority(m), 1), m.msg_id))
        for msg in stored:
            self._deliver(watch, msg)

    @staticmethod
    def _deliver(watch: MailboxWatch, msg: StoredMessage) -> None:
        priority = legacy_priority(msg)
        watch.sub.deliver(legacy_delivery_subject(watch.address, priority), None, None, envelope(msg))

    def on_stored(self, box: Mailbox, msg: StoredMessage) -> None:
        """Push a newly stored message to the mailbox's subscribers (one per queue group)."""
        watches = self.watches.get(box.address)
        if not watches:
            return
        priority = legacy_priority(msg)
        groups_served: set[str] = set()
        for watch in list(watches):
            if watch.priority not in ("*", priority):
                continue
            queue = watch.sub.queue
            if queue is not None:
                if queue in groups_served:
                    continue
                groups_served.add(queue)
            self._deliver(watch, msg)

    # -- commands --------------------------------------------------------------------------------

    def send(self, address: str, priority: str, headers: bytes | None, payload: bytes) -> None:
        """A legacy publish: stored when the mailbox exists, silently dropped otherwise."""
        box = self.service.book.get(address)
        if box is not None:
            self.service.store_legacy(box, priority, headers, payload)

    def list(self, address: str) -> bytes:
        box = self.service.book.get(address)
        if box is None:
            return orjson.dumps({"error": errors.MAILBOX_MISSING.format(addr=address)})
        now = self.service.book.clock()
        items = [
            {"msg_id": m.msg_id, "priority": legacy_priority(m), "ts": m.create_time} for m in box.in_order(now)
        ]
        return orjson.dumps({"messages": items})
