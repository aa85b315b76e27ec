"""The legacy mailbox layout of the published ``robustmq==1.0.0`` SDK (MQ9.md section 2).

SEND is a plain publish on ``$mq9.AI.MAILBOX.MSG.{id}.{high|normal|low}``: the router delivers
it live to the mailbox's subscribers and the service stores it. A new subscription on
``$mq9.AI.MAILBOX.MSG.{id}.*`` first receives what the mailbox holds (pushed from here), and
messages sent with the current layout are pushed too.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.agents.mq9 import errors
from robustmq.agents.mq9.guard import MailboxGuard
from robustmq.agents.mq9.mailboxes import legacy_priority
from robustmq.agents.mq9.subjects import LEGACY_PRIORITIES, legacy_delivery_subject
from robustmq.store import Record

if TYPE_CHECKING:
    from robustmq.agents.mq9.service import Mq9Service

SUBSCRIPTION_PREFIX = "$mq9.AI.MAILBOX.MSG."
LEGACY_ORDER = {"high": 0, "normal": 1, "low": 2}


def envelope(rec: Record) -> bytes:
    """The push body the SDK decodes into (msg_id, payload)."""
    return orjson.dumps({"msg_id": rec.offset, "payload": base64.b64encode(rec.payload).decode()})


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
        if first_of_group and self.service.mailboxes.get(address) is not None:
            # the mailbox promise: what was stored before the subscription is delivered too
            loop = self.service._loop
            if loop is not None:
                loop.call_soon(self._replay, watch)

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

    def _admitted(self, address: str) -> Callable[[Any], bool]:
        """Which subscriptions may receive ``address``'s messages (with authentication on, an agent's
        mailbox goes to its owner's subscriptions only, even one made before the agent claimed it)."""
        if not self.service.auth_enabled:
            return lambda sub: True
        return MailboxGuard(address, self.service.mailbox_owner(address)).admits

    def _replay(self, watch: MailboxWatch) -> None:
        if (
            watch not in self.watches.get(watch.address, ())
            or self.service.mailboxes.get(watch.address) is None
        ):
            return
        if not self._admitted(watch.address)(watch.sub):
            return
        stored = [
            r
            for r in self.service.mailboxes.in_order(watch.address)
            if watch.priority in ("*", legacy_priority(r))
        ]
        stored.sort(key=lambda r: (LEGACY_ORDER[legacy_priority(r)], r.offset))
        for rec in stored:
            self._deliver(watch, rec)

    @staticmethod
    def _deliver(watch: MailboxWatch, rec: Record) -> None:
        watch.sub.deliver(
            legacy_delivery_subject(watch.address, legacy_priority(rec)), None, None, envelope(rec)
        )

    def on_stored(self, address: str, ack: Any) -> None:
        """Push a message stored through the current layout, once committed, to the mailbox's
        legacy subscribers (one member per queue group). Legacy sends need no push: the router
        already delivered them on their own subject."""
        if address not in self.watches:
            return
        store = self.service.store

        def committed(a: Any) -> None:
            if a.exception() is not None:
                return
            rec = store.get(address, a.offset)
            if rec is None or rec.subject.startswith(SUBSCRIPTION_PREFIX):
                return
            self._push(address, rec)

        ack.add_done_callback(committed)

    def _push(self, address: str, rec: Record) -> None:
        watches = self.watches.get(address)
        if not watches:
            return
        priority = legacy_priority(rec)
        admitted = self._admitted(address)
        groups_served: set[str] = set()
        for watch in list(watches):
            if watch.priority not in ("*", priority) or not admitted(watch.sub):
                continue
            queue = watch.sub.queue
            if queue is not None:
                if queue in groups_served:
                    continue
                groups_served.add(queue)
            self._deliver(watch, rec)

    # -- commands --------------------------------------------------------------------------------

    def list(self, address: str) -> bytes:
        if self.service.mailboxes.get(address) is None:
            return orjson.dumps({"error": errors.MAILBOX_MISSING.format(addr=address)})
        items = [
            {"msg_id": r.offset, "priority": legacy_priority(r), "ts": r.timestamp_ms // 1000}
            for r in self.service.mailboxes.in_order(address)
        ]
        return orjson.dumps({"messages": items})
