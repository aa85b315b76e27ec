"""The vhost ``/``: every exchange and queue, the rules for declaring, binding and deleting them, and
putting a published message into the queues it routes to (with dead-lettering).

Channel handlers call this with decoded arguments; errors are raised as ``ChannelError`` or
``AmqpConnectionError`` with RabbitMQ's codes and texts. Durable definitions go through
``AmqpPersistence``; ``amq.topic`` is bridged to the router by ``subject_bridge``.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from robustmq.bridges.amqp import errors as E
from robustmq.bridges.amqp.codec import encode_properties
from robustmq.bridges.amqp.errors import AmqpConnectionError, ChannelError
from robustmq.bridges.amqp.limits import SERVER_NAMED_QUEUE_PREFIX
from robustmq.bridges.amqp.queues import AmqpQueue, Content, QueuedMessage, ReadyGauge, now_ms
from robustmq.bridges.amqp.routing import DEFAULT_EXCHANGE, EXCHANGE_TYPES, Binding, Exchange, Exchanges

if TYPE_CHECKING:
    from robustmq.bridges.amqp.persistence import AmqpPersistence
    from robustmq.bridges.amqp.subject_bridge import SubjectBridge

log = logging.getLogger("robustmq.amqp")

_QUEUE_CHECKED = ("x-message-ttl", "x-max-length", "x-max-length-bytes", "x-max-priority", "x-expires")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same_args(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first argument that differs between two declarations, or None."""
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return key
    return None


class VirtualHost:
    """Exchanges and queues of ``/``. ``persistence`` is None when the broker runs without a store."""

    def __init__(self, persistence: AmqpPersistence | None = None, gauge: ReadyGauge | None = None) -> None:
        self.gauge = gauge
        self.queues: dict[str, AmqpQueue] = {}
        self.exchanges = Exchanges(self.queues.__contains__)
        self.persistence = persistence
        self.bridge: SubjectBridge | None = None
        # a queue was deleted: the listener tells its consumers (server-sent Basic.Cancel)
        self.on_queue_deleted: Callable[[AmqpQueue], None] | None = None

    # -- exchanges ---------------------------------------------------------------------------------

    def declare_exchange(self, m: C.Exchange.Declare) -> Exchange:
        cid, mid = 40, 10
        name = m.exchange
        if name == DEFAULT_EXCHANGE:
            raise ChannelError(E.ACCESS_REFUSED, E.DEFAULT_EXCHANGE_ACCESS, cid, mid)
        existing = self.exchanges.get(name)
        if m.passive:
            if existing is None:
                raise ChannelError(E.NOT_FOUND, E.NO_EXCHANGE.format(name=name), cid, mid)
            return existing
        if m.exchange_type not in EXCHANGE_TYPES:
            raise AmqpConnectionError(
                E.COMMAND_INVALID, E.EXCHANGE_TYPE_INVALID.format(type=m.exchange_type), cid, mid
            )
        args = dict(m.arguments or {})
        if existing is not None:
            for arg, got, have in (
                ("type", m.exchange_type, existing.type),
                ("durable", bool(m.durable), existing.durable),
                ("auto_delete", bool(m.auto_delete), existing.auto_delete),
                ("internal", bool(m.internal), existing.internal),
            ):
                if got != have:
                    raise ChannelError(E.PRECONDITION_FAILED, E.EXCHANGE_INEQUIVALENT.format(
                        arg=arg, name=name, got=_text(got), have=_text(have)), cid, mid)  # fmt: skip
            diff = _same_args(args, existing.arguments)
            if diff is not None:
                raise ChannelError(E.PRECONDITION_FAILED, E.EXCHANGE_INEQUIVALENT.format(
                    arg=diff, name=name, got=_text(args.get(diff, "none")),
                    have=_text(existing.arguments.get(diff, "none"))), cid, mid)  # fmt: skip
            return existing
        if name.startswith("amq."):
            raise ChannelError(E.ACCESS_REFUSED, E.RESERVED_NAME.format(kind="exchange", name=name), cid, mid)
        ex = Exchange(name, m.exchange_type, bool(m.durable), bool(m.auto_delete), bool(m.internal), args)
        self.exchanges.declare(ex)
        if ex.durable and self.persistence is not None:
            self.persistence.exchange_saved(ex)
        return ex

    def delete_exchange(self, name: str, if_unused: bool) -> None:
        cid, mid = 40, 20
        ex = self.exchanges.get(name)
        if ex is None:
            return
        if ex.predeclared:
            raise ChannelError(E.ACCESS_REFUSED, E.DEFAULT_EXCHANGE_ACCESS if not name else
                               E.RESERVED_NAME.format(kind="exchange", name=name), cid, mid)  # fmt: skip
        if if_unused and ex.bindings:
            raise ChannelError(E.PRECONDITION_FAILED, E.EXCHANGE_IN_USE.format(name=name), cid, mid)
        self._drop_exchange(ex)

    def _drop_exchange(self, ex: Exchange) -> None:
        removed = [*ex.bindings.values(), *self.exchanges.bindings_to(("e", ex.name))]
        self.exchanges.delete(ex.name)
        if self.persistence is not None:
            for b in removed:
                if self._binding_durable(b):
                    self.persistence.binding_deleted(b)
            if ex.durable:
                self.persistence.exchange_deleted(ex.name)
        if self.bridge is not None:
            self.bridge.bindings_changed()

    def exchange_or_404(self, name: str, cid: int, mid: int) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise ChannelError(E.NOT_FOUND, E.NO_EXCHANGE.format(name=name), cid, mid)
        return ex

    # -- queues ------------------------------------------------------------------------------------

    def queue_or_404(self, name: str, cid: int, mid: int) -> AmqpQueue:
        q = self.queues.get(name)
        if q is None:
            raise ChannelError(E.NOT_FOUND, E.NO_QUEUE.format(name=name), cid, mid)
        return q

    @staticmethod
    def check_owner(q: AmqpQueue, conn: Any, cid: int, mid: int) -> None:
        if q.exclusive_owner is not None and q.exclusive_owner is not conn:
            raise ChannelError(E.RESOURCE_LOCKED, E.EXCLUSIVE_LOCKED.format(name=q.name), cid, mid)

    def declare_queue(self, m: C.Queue.Declare, conn: Any) -> AmqpQueue:
        cid, mid = 50, 10
        name = m.queue
        if m.passive:
            q = self.queue_or_404(name, cid, mid)
            self.check_owner(q, conn, cid, mid)
            return q
        server_named = not name
        if server_named:
            name = SERVER_NAMED_QUEUE_PREFIX + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        args = dict(m.arguments or {})
        existing = self.queues.get(name)
        if existing is not None:
            self.check_owner(existing, conn, cid, mid)
            for arg, got, have in (
                ("durable", bool(m.durable), existing.durable),
                ("exclusive", bool(m.exclusive), existing.exclusive_owner is not None),
                ("auto_delete", bool(m.auto_delete), existing.auto_delete),
            ):
                if got != have:
                    raise ChannelError(E.PRECONDITION_FAILED, E.QUEUE_INEQUIVALENT.format(
                        arg=arg, name=name, got=_text(got), have=_text(have)), cid, mid)  # fmt: skip
            diff = _same_args(args, existing.arguments)
            if diff is not None:
                have = existing.arguments.get(diff)
                raise ChannelError(E.PRECONDITION_FAILED, E.QUEUE_ARG_INEQUIVALENT.format(
                    arg=diff, name=name, got=_text(args.get(diff, "none")),
                    have="none" if have is None else f"'{_text(have)}'"), cid, mid)  # fmt: skip
            return existing
        if name.startswith("amq.") and not server_named:
            raise ChannelError(E.ACCESS_REFUSED, E.RESERVED_NAME.format(kind="queue", name=name), cid, mid)
        for arg in _QUEUE_CHECKED:
            value = args.get(arg)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ChannelError(E.PRECONDITION_FAILED, E.BAD_ARGUMENT.format(
                    arg=arg, name=name, reason=f"{{value_negative_or_not_integer,{value!r}}}"), cid, mid)  # fmt: skip
        if args.get("x-expires") == 0:
            raise ChannelError(E.PRECONDITION_FAILED, E.BAD_ARGUMENT.format(
                arg="x-expires", name=name, reason="{value_zero,0}"), cid, mid)  # fmt: skip
        try:
            q = AmqpQueue(
                name, durable=bool(m.durable), exclusive_owner=conn if m.exclusive else None,
                auto_delete=bool(m.auto_delete), arguments=args, dead_letter=self.dead_letter,
                gauge=self.gauge,
            )  # fmt: skip
        except ValueError as exc:
            raise ChannelError(E.PRECONDITION_FAILED, E.BAD_ARGUMENT.format(
                arg="x-overflow", name=name, reason=exc), cid, mid) from None  # fmt: skip
        q.on_idle = self.queue_expired
        self.queues[name] = q
        if q.durable and self.persistence is not None and q.exclusive_owner is None:
            self.persistence.open_queue(q)
            self.persistence.queue_saved(q)
        q.arm_idle()
        return q

    def restore_queue(self, data: dict[str, Any]) -> AmqpQueue | None:
        """A durable queue from the saved definitions, with its stored messages."""
        assert self.persistence is not None
        try:
            q = AmqpQueue(
                data["name"], durable=True, auto_delete=bool(data.get("auto_delete")),
                arguments=data.get("arguments") or {}, dead_letter=self.dead_letter, gauge=self.gauge,
            )  # fmt: skip
        except (KeyError, ValueError) as exc:
            log.warning("cannot restore AMQP queue %r: %s", data.get("name"), exc)
            return None
        q.on_idle = self.queue_expired
        self.queues[q.name] = q
        self.persistence.open_queue(q)
        self.persistence.recover_messages(q)
        q.arm_idle()
        return q

    def delete_queue(self, q: AmqpQueue) -> int:
        """Remove the queue, its bindings and its stored messages; returns how many were ready."""
        if self.queues.get(q.name) is not q:
            return 0
        count = q.message_count
        del self.queues[q.name]
        consumers = list(q.consumers)
        removed = self.exchanges.unbind_all(("q", q.name))
        if q.log is not None:
            q.log.drop()
            q.log = None
        if self.persistence is not None and q.durable and q.exclusive_owner is None:
            self.persistence.queue_deleted(q.name)
            for b in removed:
                if self._binding_durable(b, q):
                    self.persistence.binding_deleted(b)
        q.consumers = consumers
        if self.on_queue_deleted is not None:
            self.on_queue_deleted(q)
        q.close()
        self._auto_delete_sources(removed)
        if self.bridge is not None and removed:
            self.bridge.bindings_changed()
        return count

    def queue_expired(self, q: AmqpQueue) -> None:
        self.delete_queue(q)

    # -- bindings ----------------------------------------------------------------------------------

    def _binding_durable(self, b: Binding, q: AmqpQueue | None = None) -> bool:
        src = self.exchanges.get(b.source)
        if src is None or not src.durable or src.predeclared and b.source == DEFAULT_EXCHANGE:
            return False
        kind, dest = b.destination
        if kind == "q":
            q = q or self.queues.get(dest)
            return q is not None and q.durable and q.exclusive_owner is None
        d = self.exchanges.get(dest)
        return d is not None and d.durable

    def bind(self, source: str, destination: tuple[str, str], key: str, args: dict[str, Any],
             cid: int, mid: int, restoring: bool = False) -> None:  # fmt: skip
        if source == DEFAULT_EXCHANGE:
            raise ChannelError(E.ACCESS_REFUSED, E.DEFAULT_EXCHANGE_ACCESS, cid, mid)
        src = self.exchange_or_404(source, cid, mid)
        if destination[0] == "e":
            if destination[1] == DEFAULT_EXCHANGE:
                raise ChannelError(E.ACCESS_REFUSED, E.DEFAULT_EXCHANGE_ACCESS, cid, mid)
            self.exchange_or_404(destination[1], cid, mid)
        binding = Binding(source, destination, key, dict(args))
        if (
            src.add(binding)
            and not restoring
            and self.persistence is not None
            and self._binding_durable(binding)
        ):
            self.persistence.binding_saved(binding)
        if source == "amq.topic" and self.bridge is not None:
            self.bridge.bindings_changed()

    def unbind(self, source: str, destination: tuple[str, str], key: str, args: dict[str, Any],
               cid: int, mid: int) -> None:  # fmt: skip
        if source == DEFAULT_EXCHANGE:
            raise ChannelError(E.ACCESS_REFUSED, E.DEFAULT_EXCHANGE_ACCESS, cid, mid)
        src = self.exchange_or_404(source, cid, mid)
        gone = src.remove(Binding(source, destination, key, dict(args)))
        if gone is None:
            return
        if self.persistence is not None and self._binding_durable(gone):
            self.persistence.binding_deleted(gone)
        self._auto_delete_sources([gone])
        if source == "amq.topic" and self.bridge is not None:
            self.bridge.bindings_changed()

    def _auto_delete_sources(self, removed: list[Binding]) -> None:
        for b in removed:
            ex = self.exchanges.get(b.source)
            if ex is not None and ex.auto_delete and not ex.bindings and not ex.predeclared:
                self._drop_exchange(ex)

    # -- publishing --------------------------------------------------------------------------------

    def enqueue(
        self, names: set[str], content: Content, now: int | None = None
    ) -> tuple[int, list[Any], bool]:
        """Put ``content`` into each named queue: (queues that took it, store acks, any refused)."""
        if now is None:
            now = now_ms()
        taken = 0
        pending: list[Any] = []
        refused = False
        queues = self.queues
        for name in names:
            q = queues.get(name)
            if q is None:
                continue
            ok, stored = q.enqueue(content, now)
            if ok:
                taken += 1
                if stored is not None:
                    pending.append(stored)
            else:
                refused = True
        return taken, pending, refused

    def route(self, exchange: str, content: Content) -> set[str]:
        return self.exchanges.route(exchange, content.routing_key, content.properties.headers)

    def dead_letter(self, q: AmqpQueue, msg: QueuedMessage, reason: str) -> None:
        """Republish a message that left ``q`` as rejected, expired or over length (x-death kept)."""
        dlx = q.dead_letter_exchange
        if dlx is None or self.exchanges.get(dlx) is None:
            return
        old = msg.content
        props = C.Basic.Properties(**{k: getattr(old.properties, k) for k in old.properties.__slots__})
        headers = dict(props.headers or {})
        deaths = list(headers.get("x-death") or [])
        routing_keys = [old.routing_key]
        for i, d in enumerate(deaths):
            if isinstance(d, dict) and d.get("queue") == q.name and d.get("reason") == reason:
                d = dict(d)
                d["count"] = int(d.get("count", 1)) + 1
                deaths.pop(i)
                deaths.insert(0, d)
                break
        else:
            death: dict[str, Any] = {
                "count": 1, "reason": reason, "queue": q.name, "time": datetime.now(UTC).replace(microsecond=0),
                "exchange": old.exchange, "routing-keys": routing_keys,
            }  # fmt: skip
            if old.properties.expiration and reason == "expired":
                death["original-expiration"] = old.properties.expiration
            deaths.insert(0, death)
        headers["x-death"] = deaths
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", q.name)
        headers.setdefault("x-first-death-exchange", old.exchange)
        props.headers = headers
        props.expiration = None
        key = q.dead_letter_routing_key if q.dead_letter_routing_key is not None else old.routing_key
        new = Content(dlx, key, props, encode_properties(props), old.body)
        names = self.exchanges.route(dlx, key, headers)
        if reason != "rejected":
            names.discard(q.name)  # an expired or dropped message must not cycle back forever
        self.enqueue(names, new)
