"""``amq.topic`` is the shared subject space: its bindings subscribe on the router, its publishes go through it.

A binding key becomes the NATS patterns that cover it (``a.*.c`` stays, ``a.#`` is ``a`` plus
``a.>``, a ``#`` in the middle is its prefix plus ``>`` and is filtered by AMQP's own rule), one
router subscription per distinct pattern. A publish reaches several overlapping patterns, so each
subject is handled by the first pattern that covers it only, and the exchange's bindings pick
each queue once. AMQP headers tables and NATS headers convert here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from robustmq.bridges.amqp.codec import encode_properties
from robustmq.bridges.amqp.queues import Content
from robustmq.headers import decode_headers, encode_headers
from robustmq.subjects import is_valid_publish_subject, is_valid_subject, subject_matches

if TYPE_CHECKING:
    from robustmq.bridges.amqp.vhost import VirtualHost
    from robustmq.router import Router, Subscription

TOPIC_EXCHANGE = "amq.topic"
OWNER_CACHE_MAX_SUBJECTS = 4096


def covering_patterns(binding_key: str) -> list[str]:
    """NATS subjects whose union covers every routing key the AMQP binding key matches."""
    words = binding_key.split(".")
    if "#" not in words:
        return [binding_key] if is_valid_subject(binding_key) else []
    prefix = words[: words.index("#")]
    if not prefix:
        return [">"]
    head = ".".join(prefix)
    if not is_valid_subject(head):
        return []
    rest = words[words.index("#") + 1 :]
    out = [head + ".>"]
    if all(w == "#" for w in rest):
        out.append(head)  # '#' may be zero words: 'a.#' matches 'a'
    return out


def headers_to_table(block: bytes | None) -> dict[str, Any] | None:
    items = decode_headers(block)
    if not items:
        return None
    table: dict[str, Any] = {}
    for k, v in items:
        table.setdefault(k, v)
    return table


def _header_text(value: Any) -> str | None:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        text = str(value)
        return None if "\r" in text or "\n" in text else text
    return None  # tables, arrays, timestamps have no plain-text form


def table_to_headers(table: dict[str, Any] | None) -> bytes | None:
    if not table:
        return None
    items = []
    for k, v in table.items():
        text = _header_text(v)
        if text is not None and ":" not in k and "\r" not in k and "\n" not in k:
            items.append((k, text))
    return encode_headers(items)


class SubjectBridge:
    """Keeps the router subscriptions of ``amq.topic``'s bindings and routes what arrives on them.

    Its subscriptions count as a network client's without a user (``protocol``, ``user``): AMQP
    queues are shared objects with no owner, so a subject isolated to some users (their replies,
    their mailboxes, requests to the broker's services; robustmq/isolation.py) never enters them.
    """

    protocol = "amqp"
    user: str | None = None

    def __init__(self, vhost: VirtualHost, router: Router) -> None:
        self.vhost = vhost
        self.router = router
        self._subs: dict[str, Subscription] = {}
        self._owner: dict[str, str | None] = {}

    def bindings_changed(self) -> None:
        ex = self.vhost.exchanges.get(TOPIC_EXCHANGE)
        wanted: set[str] = set()
        if ex is not None:
            for b in ex.bindings.values():
                wanted.update(covering_patterns(b.key))
        for pattern in list(self._subs):
            if pattern not in wanted:
                self.router.unsubscribe(self._subs.pop(pattern))
        for pattern in sorted(wanted - set(self._subs)):
            self._subs[pattern] = self.router.subscribe(pattern, self._deliverer(pattern), owner=self)
        self._owner.clear()

    def close(self) -> None:
        for sub in self._subs.values():
            self.router.unsubscribe(sub)
        self._subs.clear()

    def _owner_of(self, subject: str) -> str | None:
        owner = self._owner.get(subject, "")
        if owner == "":
            owner = next((p for p in sorted(self._subs) if subject_matches(p, subject)), None)
            if len(self._owner) >= OWNER_CACHE_MAX_SUBJECTS:
                self._owner.clear()
            self._owner[subject] = owner
        return owner

    def _deliverer(self, pattern: str) -> Any:
        def deliver(subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> Any:
            origin = self.router.current_origin
            if getattr(origin, "cur_content", None) is not None:
                origin.cur_bridge_hits += 1  # not a receiver of its own: only the queues count
            if self._owner_of(subject) != pattern:
                return None
            return self.route(subject, reply, headers, payload)

        return deliver

    def route(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> Any:
        """A router publish on ``subject`` into the queues bound to ``amq.topic``."""
        origin = self.router.current_origin
        content: Content | None = getattr(origin, "cur_content", None)
        if content is None or content.routing_key != subject:
            table = headers_to_table(headers)
            props = C.Basic.Properties(headers=table, delivery_mode=2, reply_to=reply)
            content = Content(TOPIC_EXCHANGE, subject, props, encode_properties(props), payload)
            origin = None
        names = self.vhost.exchanges.route(
            TOPIC_EXCHANGE, subject, content.properties.headers, skip_first=True
        )
        taken, pending, refused = self.vhost.enqueue(names, content)
        if origin is not None:  # an AMQP publisher: it waits for these writes itself
            origin.cur_routed += taken
            origin.cur_refused = origin.cur_refused or refused
            origin.cur_pending.extend(pending)
            return None
        if not pending:
            return None
        return pending[0] if len(pending) == 1 else _AllDone(pending)


class _AllDone:
    """One awaitable for several store acks (the router collects one per subscription)."""

    __slots__ = ("_parts",)

    def __init__(self, parts: list[Any]) -> None:
        self._parts = parts

    def __await__(self) -> Any:
        for part in self._parts:
            yield from part.__await__()


def publish_subject(routing_key: str) -> str | None:
    """The router subject of a publish to ``amq.topic``, or None when the key is no valid subject."""
    return routing_key if is_valid_publish_subject(routing_key) else None


def reply_subject(props: C.Basic.Properties) -> str | None:
    reply = props.reply_to
    return reply if reply and is_valid_publish_subject(reply) else None
