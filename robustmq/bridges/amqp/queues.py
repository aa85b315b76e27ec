"""AMQP queues in memory: ready messages in order (or by priority), consumers served in turn, TTL,
length limits with overflow, and the hand-off to dead-lettering.

A durable queue keeps its persistent messages in a stream too (``persistence.QueueLog``); this module
only calls it. Consumers are whatever the listener gives: objects with ``ready()`` and
``deliver(queue, message)``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pamqp import commands as C

from robustmq.bridges.amqp.limits import DISPATCH_BATCH_MESSAGES

_seq = itertools.count(1)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True, eq=False)
class Content:
    """One published message, shared by every queue it was routed to.

    ``wire`` caches what every delivery of it repeats: the exchange and routing key as short
    strings and the content frames for the last channel and frame size they were built for.
    """

    exchange: str
    routing_key: str
    properties: C.Basic.Properties
    raw_properties: bytes
    body: bytes
    wire: Any = None

    @property
    def persistent(self) -> bool:
        return self.properties.delivery_mode == 2

    @property
    def headers(self) -> dict[str, Any] | None:
        return self.properties.headers


class QueuedMessage:
    """A message's place in one queue: its order, stored offset, redelivery flag and expiry."""

    __slots__ = ("content", "seq", "offset", "redelivered", "expires_at_ms", "priority")

    def __init__(self, content: Content, expires_at_ms: int = 0, priority: int = 0) -> None:
        self.content = content
        self.seq = next(_seq)
        self.offset: int | None = None
        self.redelivered = False
        self.expires_at_ms = expires_at_ms
        self.priority = priority

    def __lt__(self, other: QueuedMessage) -> bool:  # heap order: higher priority, then older
        return (-self.priority, self.seq) < (-other.priority, other.seq)


class QueueConsumer(Protocol):
    tag: str

    def ready(self) -> bool: ...

    def deliver(self, queue: AmqpQueue, message: QueuedMessage) -> None: ...


class MessageLog(Protocol):
    """Where a durable queue keeps its persistent messages (see ``persistence.QueueLog``)."""

    def append(self, message: QueuedMessage) -> Any: ...

    def ack(self, offsets: list[int]) -> None: ...

    def note_delivered(self, offset: int) -> None: ...

    def drop(self) -> None: ...


DeadLetterFn = Callable[["AmqpQueue", QueuedMessage, str], None]


class ReadyGauge:
    """Body bytes ready in every queue of the vhost; calls ``on_high`` / ``on_low`` as it crosses
    its marks (the listener blocks and unblocks publishers)."""

    __slots__ = ("bytes", "high", "low", "above", "on_high", "on_low")

    def __init__(self, high: int, low: int) -> None:
        self.bytes = 0
        self.high = high
        self.low = low
        self.above = False
        self.on_high: Callable[[], None] | None = None
        self.on_low: Callable[[], None] | None = None

    def add(self, n: int) -> None:
        self.bytes += n
        if n > 0:
            if not self.above and self.bytes > self.high:
                self.above = True
                if self.on_high is not None:
                    self.on_high()
        elif self.above and self.bytes < self.low:
            self.above = False
            if self.on_low is not None:
                self.on_low()


_NO_GAUGE = ReadyGauge(2**62, 0)


class _Ready:
    """Ready messages: FIFO, or highest priority first (FIFO within) when the queue has priorities."""

    __slots__ = ("_fifo", "_heap", "_bytes", "gauge")

    def __init__(self, prioritised: bool, gauge: ReadyGauge) -> None:
        self._fifo: deque[QueuedMessage] | None = None if prioritised else deque()
        self._heap: list[QueuedMessage] = []
        self._bytes = 0
        self.gauge = gauge

    @property
    def bytes(self) -> int:
        return self._bytes

    def _count(self, n: int) -> None:
        self._bytes += n
        self.gauge.add(n)

    def __len__(self) -> int:
        return len(self._fifo) if self._fifo is not None else len(self._heap)

    def push(self, msg: QueuedMessage) -> None:
        self._count(len(msg.content.body))
        if self._fifo is not None:
            self._fifo.append(msg)
        else:
            heapq.heappush(self._heap, msg)

    def push_back(self, msgs: list[QueuedMessage]) -> None:
        """Requeued messages go back to their original place (by arrival order)."""
        self._count(sum(len(m.content.body) for m in msgs))
        if self._fifo is None:
            for m in msgs:
                heapq.heappush(self._heap, m)
            return
        msgs = sorted(msgs, key=lambda m: m.seq)
        fifo = self._fifo
        if not fifo or msgs[-1].seq < fifo[0].seq:
            fifo.extendleft(reversed(msgs))
        else:
            merged = sorted([*fifo, *msgs], key=lambda m: m.seq)
            fifo.clear()
            fifo.extend(merged)

    def peek(self) -> QueuedMessage | None:
        if self._fifo is not None:
            return self._fifo[0] if self._fifo else None
        return self._heap[0] if self._heap else None

    def pop(self) -> QueuedMessage:
        msg = self._fifo.popleft() if self._fifo is not None else heapq.heappop(self._heap)
        self._count(-len(msg.content.body))
        return msg

    def drain(self) -> list[QueuedMessage]:
        out = list(self._fifo) if self._fifo is not None else sorted(self._heap)
        if self._fifo is not None:
            self._fifo.clear()
        self._heap = []
        self._count(-self._bytes)
        return out


def int_arg(arguments: dict[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    if value < 0:
        raise ValueError("must be non-negative")
    return value


class AmqpQueue:
    """One queue: declared properties, ready messages, consumers, unacked count."""

    def __init__(
        self, name: str, *, durable: bool = False, exclusive_owner: Any = None, auto_delete: bool = False,
        arguments: dict[str, Any] | None = None, dead_letter: DeadLetterFn | None = None,
        gauge: ReadyGauge | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = dict(arguments or {})
        args = self.arguments
        self.message_ttl_ms = int_arg(args, "x-message-ttl")
        self.max_length = int_arg(args, "x-max-length")
        self.max_length_bytes = int_arg(args, "x-max-length-bytes")
        self.max_priority = int_arg(args, "x-max-priority")
        self.expires_ms = int_arg(args, "x-expires")
        overflow = args.get("x-overflow", "drop-head")
        if overflow not in ("drop-head", "reject-publish", "reject-publish-dlx"):
            raise ValueError(f"unknown x-overflow {overflow!r}")
        self.overflow = overflow
        self.single_active = bool(args.get("x-single-active-consumer", False))
        dlx = args.get("x-dead-letter-exchange")
        self.dead_letter_exchange: str | None = None if dlx is None else str(dlx)
        dlrk = args.get("x-dead-letter-routing-key")
        self.dead_letter_routing_key: str | None = None if dlrk is None else str(dlrk)
        self.ready = _Ready(bool(self.max_priority), gauge or _NO_GAUGE)
        self.consumers: list[QueueConsumer] = []
        self.unacked = 0
        self.had_consumer = False
        self.deleted = False
        self.log: MessageLog | None = None
        self._dead_letter = dead_letter
        self._turn = 0
        self._dispatching = False
        self._more_scheduled = False
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_at = 0
        self.on_idle: Callable[[AmqpQueue], None] | None = None  # x-expires: nobody used it for a while
        self._idle_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<AmqpQueue {self.name} ready={len(self.ready)} unacked={self.unacked}>"

    @property
    def message_count(self) -> int:
        return len(self.ready)

    # -- in ----------------------------------------------------------------------------------------

    def expiry_for(self, content: Content, now: int) -> int:
        """The absolute expiry of a message entering now (0 = never): the queue's TTL or the
        message's ``expiration``, whichever is shorter."""
        ttl = self.message_ttl_ms
        exp = content.properties.expiration
        if exp:
            try:
                own = int(exp)
            except ValueError:
                own = None
            if own is not None and own >= 0:
                ttl = own if ttl is None else min(ttl, own)
        return 0 if ttl is None else now + ttl

    def would_overflow(self, size: int) -> bool:
        if self.max_length is not None and len(self.ready) + 1 > self.max_length:
            return True
        return self.max_length_bytes is not None and self.ready.bytes + size > self.max_length_bytes

    def enqueue(self, content: Content, now: int | None = None) -> tuple[bool, Any]:
        """Add a routed message. Returns (accepted, the store's ack awaitable or None).

        ``accepted`` is False when the queue is full and refuses publishes (``reject-publish``).
        """
        if now is None:
            now = now_ms()
        size = len(content.body)
        if self.would_overflow(size):
            if self.overflow != "drop-head":
                if self.overflow == "reject-publish-dlx" and self._dead_letter is not None:
                    msg = QueuedMessage(content)
                    self._dead_letter(self, msg, "maxlen")
                return False, None
        priority = 0
        if self.max_priority:
            p = content.properties.priority or 0
            priority = min(int(p), self.max_priority)
        msg = QueuedMessage(content, self.expiry_for(content, now), priority)
        stored = None
        log = self.log
        if log is not None and content.persistent:
            stored = log.append(msg)
        if self.consumers and not len(self.ready) and not self._dispatching:
            # nothing waits ahead of it: straight to a consumer with room, if there is one
            consumer = self._next_consumer()
            if consumer is not None:
                self.unacked += 1
                consumer.deliver(self, msg)
                if msg.offset is not None and log is not None:
                    log.note_delivered(msg.offset)
                return True, stored
        self.ready.push(msg)
        if self.overflow == "drop-head":
            self._drop_over_limit()
        self.dispatch(now)
        if msg.expires_at_ms:
            self._expire(now)
        return True, stored

    def restore(self, msg: QueuedMessage) -> None:
        """A message recovered from the store at start-up."""
        self.ready.push(msg)

    def _drop_over_limit(self) -> None:
        while len(self.ready) and (
            (self.max_length is not None and len(self.ready) > self.max_length)
            or (self.max_length_bytes is not None and self.ready.bytes > self.max_length_bytes)
        ):
            self._discard(self.ready.pop(), "maxlen")

    def _discard(self, msg: QueuedMessage, reason: str) -> None:
        """A ready message leaves without being delivered (expired, dropped for length)."""
        if self._dead_letter is not None:
            self._dead_letter(self, msg, reason)
        self.forget(msg)

    def forget(self, msg: QueuedMessage) -> None:
        """The message is done in this queue (acked, rejected, expired): release its stored copy."""
        if msg.offset is not None and self.log is not None:
            self.log.ack([msg.offset])
            msg.offset = None

    # -- out ---------------------------------------------------------------------------------------

    def add_consumer(self, consumer: QueueConsumer) -> None:
        self.consumers.append(consumer)
        self.had_consumer = True
        self._cancel_idle()
        self.dispatch()

    def remove_consumer(self, consumer: QueueConsumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        if not self.consumers:
            self.arm_idle()

    def _next_consumer(self) -> QueueConsumer | None:
        consumers = self.consumers
        if self.single_active:
            return consumers[0] if consumers and consumers[0].ready() else None
        n = len(consumers)
        for i in range(n):
            c = consumers[(self._turn + i) % n]
            if c.ready():
                self._turn = (self._turn + i + 1) % n
                return c
        return None

    def dispatch(self, now: int | None = None) -> None:
        """Hand ready messages to consumers with room, in turn, until either runs out."""
        if self._dispatching or not self.consumers or not len(self.ready):
            return
        self._dispatching = True
        if now is None:
            now = now_ms()
        ready = self.ready
        last_offset = -1
        budget = DISPATCH_BATCH_MESSAGES
        try:
            while len(ready):
                budget -= 1
                if budget < 0:  # a long backlog goes out over several ticks
                    if not self._more_scheduled:
                        self._more_scheduled = True
                        asyncio.get_running_loop().call_soon(self._dispatch_more)
                    break
                head = ready.peek()
                if head is not None and head.expires_at_ms and head.expires_at_ms <= now:
                    self._discard(ready.pop(), "expired")
                    continue
                consumer = self._next_consumer()
                if consumer is None:
                    break
                msg = ready.pop()
                self.unacked += 1
                if msg.offset is not None and msg.offset > last_offset:
                    last_offset = msg.offset
                consumer.deliver(self, msg)
        finally:
            self._dispatching = False
        if last_offset >= 0 and self.log is not None:
            self.log.note_delivered(last_offset)

    def _dispatch_more(self) -> None:
        self._more_scheduled = False
        if not self.deleted:
            self.dispatch()

    def take(self, now: int | None = None) -> QueuedMessage | None:
        """Basic.Get: the next ready message, if any (counted unacked until settled)."""
        if now is None:
            now = now_ms()
        self._expire(now)
        if not len(self.ready):
            return None
        msg = self.ready.pop()
        self.unacked += 1
        if msg.offset is not None and self.log is not None:
            self.log.note_delivered(msg.offset)
        self._cancel_idle()
        self.arm_idle()
        return msg

    # -- settling ----------------------------------------------------------------------------------

    def acked(self, msgs: list[QueuedMessage]) -> None:
        self.unacked -= len(msgs)
        if self.log is not None:
            offsets = [m.offset for m in msgs if m.offset is not None]
            if offsets:
                self.log.ack(offsets)
        for m in msgs:
            m.offset = None

    def rejected(self, msgs: list[QueuedMessage], requeue: bool) -> None:
        """Nack/reject: put back with the redelivered flag, or dead-letter (then drop)."""
        self.unacked -= len(msgs)
        if requeue and not self.deleted:
            for m in msgs:
                m.redelivered = True
            self.ready.push_back(msgs)
            self.dispatch()
            return
        for m in msgs:
            if self._dead_letter is not None and not self.deleted:
                self._dead_letter(self, m, "rejected")
            self.forget(m)

    def purge(self) -> int:
        msgs = self.ready.drain()
        if self.log is not None:
            offsets = [m.offset for m in msgs if m.offset is not None]
            if offsets:
                self.log.ack(offsets)
        return len(msgs)

    # -- expiry ------------------------------------------------------------------------------------

    def _expire(self, now: int) -> None:
        """Drop (and dead-letter) expired messages at the head; arm a timer for the next one."""
        ready = self.ready
        while len(ready):
            head = ready.peek()
            assert head is not None
            if not head.expires_at_ms:
                return
            if head.expires_at_ms > now:
                self._arm_expiry(head.expires_at_ms)
                return
            self._discard(ready.pop(), "expired")

    def _arm_expiry(self, at_ms: int) -> None:
        if self._expiry_timer is not None and self._expiry_at <= at_ms:
            return
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        loop = asyncio.get_running_loop()
        self._expiry_at = at_ms
        self._expiry_timer = loop.call_later(max(0.0, (at_ms - now_ms()) / 1000.0), self._on_expiry_timer)

    def _on_expiry_timer(self) -> None:
        self._expiry_timer = None
        if not self.deleted:
            self._expire(now_ms())

    def arm_idle(self) -> None:
        """x-expires: the queue goes away after this long with no consumer and no Basic.Get."""
        if self.expires_ms is None or self.on_idle is None or self.consumers or self.deleted:
            return
        self._cancel_idle()
        self._idle_timer = asyncio.get_running_loop().call_later(self.expires_ms / 1000.0, self._idle)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle(self) -> None:
        self._idle_timer = None
        if not self.consumers and not self.deleted and self.on_idle is not None:
            self.on_idle(self)

    def close(self) -> None:
        """The queue is deleted: stop its timers; its messages are gone."""
        self.deleted = True
        for timer in (self._expiry_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._expiry_timer = self._idle_timer = None
        self.ready.drain()
        self.consumers = []
