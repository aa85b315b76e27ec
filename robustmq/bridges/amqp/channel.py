"""One AMQP channel: its consumers, unacknowledged deliveries, prefetch, confirms and transaction.

The connection hands each decoded method to ``Channel.handle``; everything that touches exchanges
and queues goes to the vhost. Errors are raised (``ChannelError`` closes this channel only).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from robustmq.bridges.amqp import errors as E
from robustmq.bridges.amqp.codec import (
    DeliveryWire,
    Message,
    basic_ack_frame,
    declare_ok_frame,
    deliver_cached,
    get_ok_frames,
    return_frames,
    short_string,
)
from robustmq.bridges.amqp.errors import AmqpConnectionError, ChannelError
from robustmq.bridges.amqp.queues import AmqpQueue, Content, QueuedMessage
from robustmq.bridges.amqp.subject_bridge import (
    TOPIC_EXCHANGE,
    covering_patterns,
    publish_subject,
    reply_subject,
    table_to_headers,
)

if TYPE_CHECKING:
    from robustmq.bridges.amqp.listener import AmqpConnection


class ChannelConsumer:
    """A Basic.Consume: feeds one queue's messages to one channel within its prefetch."""

    __slots__ = ("channel", "queue", "tag", "tag_short", "no_ack", "exclusive", "unacked")

    def __init__(self, channel: Channel, queue: AmqpQueue, tag: str, no_ack: bool, exclusive: bool) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.tag_short = short_string(tag)
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.unacked = 0

    def ready(self) -> bool:
        ch = self.channel
        if not ch.active or ch.conn.paused:
            return False
        if self.no_ack:
            return True
        if ch.prefetch_count and self.unacked >= ch.prefetch_count:
            return False
        return not (ch.global_prefetch and len(ch.unacked) >= ch.global_prefetch)

    def deliver(self, queue: AmqpQueue, msg: QueuedMessage) -> None:
        ch = self.channel
        ch.delivery_tag += 1
        tag = ch.delivery_tag
        c = msg.content
        conn = ch.conn
        wire = c.wire
        if wire is None:
            wire = c.wire = DeliveryWire(c.exchange, c.routing_key)
        conn.write(deliver_cached(
            wire, ch.number, self.tag_short, tag, msg.redelivered, c.raw_properties, c.body, conn.frame_max,
        ))  # fmt: skip
        conn.out_msgs += 1
        conn.out_bytes += len(c.body)
        if self.no_ack:
            if msg.offset is None:
                queue.unacked -= 1  # nothing stored to release
            else:
                queue.acked([msg])
        else:
            self.unacked += 1
            ch.unacked[tag] = (queue, msg, self)


_Handler = Callable[["Channel", Any], None]


class Channel:
    def __init__(self, conn: AmqpConnection, number: int) -> None:
        self.conn = conn
        self.vhost = conn.server.vhost
        self.number = number
        self.active = True  # Channel.Flow from the client
        self.closing = False  # we sent Channel.Close and wait for CloseOk
        self.consumers: dict[str, ChannelConsumer] = {}
        self.unacked: dict[int, tuple[AmqpQueue, QueuedMessage, ChannelConsumer | None]] = {}
        self.delivery_tag = 0
        self.prefetch_count = 0
        self.global_prefetch = 0
        self.last_queue = ""
        self.confirming = False
        self.publish_seq = 0
        self._confirms: deque[list[Any]] = deque()  # [seq, writes outstanding, failed]
        self._release_scheduled = False
        self._waiting: dict[asyncio.Future, list[list[Any]]] = {}  # commit future -> confirm entries
        self.transactional = False
        self._tx_publishes: list[tuple[Message, Content]] = []
        self._tx_settles: list[tuple[str, int, bool, bool]] = []

    def write_method(self, method: Any) -> None:
        self.conn.write_method(self.number, method)

    # -- dispatch ----------------------------------------------------------------------------------

    def handle(self, method: Any) -> None:
        handler = _HANDLERS.get(type(method))
        if handler is None:
            raise AmqpConnectionError(
                E.COMMAND_INVALID, E.UNEXPECTED_METHOD.format(method=method.name),
                method.index >> 16, method.index & 0xFFFF,
            )  # fmt: skip
        handler(self, method)

    # -- channel -----------------------------------------------------------------------------------

    def _flow(self, m: C.Channel.Flow) -> None:
        self.active = bool(m.active)
        self.write_method(C.Channel.FlowOk(active=self.active))
        if self.active:
            self.kick()

    def kick(self) -> None:
        """Room for more deliveries: let this channel's queues dispatch again."""
        for q in {c.queue for c in self.consumers.values()}:
            q.dispatch()

    def release(self) -> None:
        """The channel is gone: its consumers stop, its unacked messages go back (redelivered)."""
        for c in list(self.consumers.values()):
            self._drop_consumer(c)
        self._requeue_all()
        self._tx_publishes.clear()
        self._tx_settles.clear()
        self._confirms.clear()
        self._waiting.clear()

    def _requeue_all(self) -> None:
        by_queue: dict[AmqpQueue, list[QueuedMessage]] = {}
        for q, msg, consumer in self.unacked.values():
            by_queue.setdefault(q, []).append(msg)
            if consumer is not None:
                consumer.unacked -= 1
        self.unacked.clear()
        for q, msgs in by_queue.items():
            q.rejected(msgs, requeue=True)

    # -- exchanges ---------------------------------------------------------------------------------

    def _exchange_declare(self, m: C.Exchange.Declare) -> None:
        self.vhost.declare_exchange(m)
        if not m.nowait:
            self.write_method(C.Exchange.DeclareOk())

    def _exchange_delete(self, m: C.Exchange.Delete) -> None:
        self.vhost.delete_exchange(m.exchange, bool(m.if_unused))
        if not m.nowait:
            self.write_method(C.Exchange.DeleteOk())

    def _exchange_bind(self, m: C.Exchange.Bind) -> None:
        self._check_subscribe(m.source, m.routing_key, 40, 30)
        self.vhost.bind(m.source, ("e", m.destination), m.routing_key, m.arguments or {}, 40, 30)
        if not m.nowait:
            self.write_method(C.Exchange.BindOk())

    def _exchange_unbind(self, m: C.Exchange.Unbind) -> None:
        self.vhost.unbind(m.source, ("e", m.destination), m.routing_key, m.arguments or {}, 40, 40)
        if not m.nowait:
            self.write_method(C.Exchange.UnbindOk())

    def _check_subscribe(self, exchange: str, key: str, cid: int, mid: int) -> None:
        """A binding on ``amq.topic`` subscribes to subjects: the user's subscribe permissions apply."""
        perms = self.conn.permissions
        if exchange != TOPIC_EXCHANGE or perms is None:
            return
        for pattern in covering_patterns(key) or [key]:
            if not perms.may_subscribe(pattern):
                raise ChannelError(E.ACCESS_REFUSED, E.ACCESS_DENIED_SUBSCRIBE.format(
                    subject=pattern, user=self.conn.user), cid, mid)  # fmt: skip

    # -- queues ------------------------------------------------------------------------------------

    def _queue_name(self, name: str, cid: int, mid: int) -> str:
        if name:
            return name
        if not self.last_queue:
            raise ChannelError(E.NOT_FOUND, E.NO_QUEUE.format(name=""), cid, mid)
        return self.last_queue

    def _queue_declare(self, m: C.Queue.Declare) -> None:
        q = self.vhost.declare_queue(m, self.conn)
        self.last_queue = q.name
        if q.exclusive_owner is self.conn:
            self.conn.exclusive_queues.add(q)
        if not m.nowait:
            self.conn.write(declare_ok_frame(self.number, q.name, q.message_count, len(q.consumers)))

    def _queue_bind(self, m: C.Queue.Bind) -> None:
        name = self._queue_name(m.queue, 50, 20)
        q = self.vhost.queue_or_404(name, 50, 20)
        self.vhost.check_owner(q, self.conn, 50, 20)
        self._check_subscribe(m.exchange, m.routing_key, 50, 20)
        self.vhost.bind(m.exchange, ("q", name), m.routing_key, m.arguments or {}, 50, 20)
        if not m.nowait:
            self.write_method(C.Queue.BindOk())

    def _queue_unbind(self, m: C.Queue.Unbind) -> None:
        name = self._queue_name(m.queue, 50, 50)
        q = self.vhost.queue_or_404(name, 50, 50)
        self.vhost.check_owner(q, self.conn, 50, 50)
        self.vhost.unbind(m.exchange, ("q", name), m.routing_key, m.arguments or {}, 50, 50)
        self.write_method(C.Queue.UnbindOk())

    def _queue_purge(self, m: C.Queue.Purge) -> None:
        q = self.vhost.queue_or_404(self._queue_name(m.queue, 50, 30), 50, 30)
        self.vhost.check_owner(q, self.conn, 50, 30)
        count = q.purge()
        if not m.nowait:
            self.write_method(C.Queue.PurgeOk(message_count=count))

    def _queue_delete(self, m: C.Queue.Delete) -> None:
        q = self.vhost.queues.get(self._queue_name(m.queue, 50, 40))
        count = 0
        if q is not None:
            self.vhost.check_owner(q, self.conn, 50, 40)
            if m.if_unused and q.consumers:
                raise ChannelError(E.PRECONDITION_FAILED, E.QUEUE_IN_USE.format(name=q.name), 50, 40)
            if m.if_empty and q.message_count:
                raise ChannelError(E.PRECONDITION_FAILED, E.QUEUE_NOT_EMPTY.format(name=q.name), 50, 40)
            count = self.vhost.delete_queue(q)
            self.conn.exclusive_queues.discard(q)
        if not m.nowait:
            self.write_method(C.Queue.DeleteOk(message_count=count))

    # -- basic: consuming --------------------------------------------------------------------------

    def _basic_qos(self, m: C.Basic.Qos) -> None:
        if m.global_:
            self.global_prefetch = m.prefetch_count
        else:
            self.prefetch_count = m.prefetch_count
        self.write_method(C.Basic.QosOk())
        self.kick()

    def _basic_consume(self, m: C.Basic.Consume) -> None:
        q = self.vhost.queue_or_404(self._queue_name(m.queue, 60, 20), 60, 20)
        self.vhost.check_owner(q, self.conn, 60, 20)
        tag = m.consumer_tag or "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if tag in self.consumers:
            raise AmqpConnectionError(E.NOT_ALLOWED, E.CONSUMER_TAG_IN_USE.format(tag=tag), 60, 20)
        if q.consumers and (m.exclusive or any(getattr(c, "exclusive", False) for c in q.consumers)):
            raise ChannelError(E.ACCESS_REFUSED, E.EXCLUSIVE_CONSUMER.format(name=q.name), 60, 20)
        consumer = ChannelConsumer(self, q, tag, bool(m.no_ack), bool(m.exclusive))
        self.consumers[tag] = consumer
        if not m.nowait:
            self.write_method(C.Basic.ConsumeOk(consumer_tag=tag))
        q.add_consumer(consumer)

    def _basic_cancel(self, m: C.Basic.Cancel) -> None:
        consumer = self.consumers.get(m.consumer_tag)
        if not m.nowait:
            self.write_method(C.Basic.CancelOk(consumer_tag=m.consumer_tag))
        if consumer is not None:
            self._drop_consumer(consumer)

    def _drop_consumer(self, consumer: ChannelConsumer) -> None:
        self.consumers.pop(consumer.tag, None)
        q = consumer.queue
        q.remove_consumer(consumer)
        if q.auto_delete and not q.consumers and q.had_consumer and not q.deleted:
            self.vhost.delete_queue(q)

    def queue_deleted(self, q: AmqpQueue) -> None:
        """Server-sent Basic.Cancel for this channel's consumers of a deleted queue."""
        for c in [c for c in self.consumers.values() if c.queue is q]:
            self.consumers.pop(c.tag, None)
            if self.conn.cancel_notify and not self.closing:
                self.write_method(C.Basic.Cancel(consumer_tag=c.tag, nowait=True))

    def _basic_get(self, m: C.Basic.Get) -> None:
        q = self.vhost.queue_or_404(self._queue_name(m.queue, 60, 70), 60, 70)
        self.vhost.check_owner(q, self.conn, 60, 70)
        msg = q.take()
        if msg is None:
            self.write_method(C.Basic.GetEmpty())
            return
        self.delivery_tag += 1
        tag = self.delivery_tag
        c = msg.content
        conn = self.conn
        conn.write(get_ok_frames(
            self.number, tag, msg.redelivered, c.exchange, c.routing_key, q.message_count,
            c.raw_properties, c.body, conn.frame_max,
        ))  # fmt: skip
        conn.out_msgs += 1
        conn.out_bytes += len(c.body)
        if m.no_ack:
            q.acked([msg])
        else:
            self.unacked[tag] = (q, msg, None)

    # -- basic: settling ---------------------------------------------------------------------------

    def _take_tags(self, tag: int, multiple: bool, mid: int) -> list[tuple[AmqpQueue, QueuedMessage, Any]]:
        unacked = self.unacked
        if multiple:
            tags = [t for t in unacked if tag == 0 or t <= tag]
            if tag and not tags and tag not in unacked:
                if tag > self.delivery_tag:
                    raise ChannelError(E.PRECONDITION_FAILED, E.UNKNOWN_DELIVERY_TAG.format(tag=tag), 60, mid)
        else:
            if tag not in unacked:
                raise ChannelError(E.PRECONDITION_FAILED, E.UNKNOWN_DELIVERY_TAG.format(tag=tag), 60, mid)
            tags = [tag]
        out = []
        for t in tags:
            entry = unacked.pop(t)
            if entry[2] is not None:
                entry[2].unacked -= 1
            out.append(entry)
        return out

    def _settle(self, kind: str, tag: int, multiple: bool, requeue: bool) -> None:
        mid = {"ack": 80, "nack": 120, "reject": 90}[kind]
        if self.transactional:
            if not multiple and tag not in self.unacked:
                raise ChannelError(E.PRECONDITION_FAILED, E.UNKNOWN_DELIVERY_TAG.format(tag=tag), 60, mid)
            self._tx_settles.append((kind, tag, multiple, requeue))
            return
        entries = self._take_tags(tag, multiple, mid)
        by_queue: dict[AmqpQueue, list[QueuedMessage]] = {}
        for q, msg, _c in entries:
            by_queue.setdefault(q, []).append(msg)
        for q, msgs in by_queue.items():
            if kind == "ack":
                q.acked(msgs)
            else:
                q.rejected(msgs, requeue)
        self.kick()

    def _basic_ack(self, m: C.Basic.Ack) -> None:
        self._settle("ack", m.delivery_tag, bool(m.multiple), False)

    def _basic_nack(self, m: C.Basic.Nack) -> None:
        self._settle("nack", m.delivery_tag, bool(m.multiple), bool(m.requeue))

    def _basic_reject(self, m: C.Basic.Reject) -> None:
        self._settle("reject", m.delivery_tag, False, bool(m.requeue))

    def _basic_recover(self, m: C.Basic.Recover) -> None:
        self._requeue_all()
        self.write_method(C.Basic.RecoverOk())

    def _basic_recover_async(self, m: C.Basic.RecoverAsync) -> None:
        self._requeue_all()

    # -- basic: publishing -------------------------------------------------------------------------

    def publish(self, msg: Message) -> None:
        """A whole message arrived on this channel."""
        conn = self.conn
        conn.in_msgs += 1
        conn.in_bytes += len(msg.body)
        if msg.immediate:
            raise AmqpConnectionError(E.NOT_IMPLEMENTED, E.IMMEDIATE, 60, 40)  # as RabbitMQ 3.x
        if msg.refused_size:
            raise ChannelError(E.PRECONDITION_FAILED, E.MESSAGE_TOO_LARGE.format(
                size=msg.refused_size, max=conn.server.settings.max_message_bytes), 60, 40)  # fmt: skip
        ex = self.vhost.exchange_or_404(msg.exchange, 60, 40)
        if ex.internal:
            raise ChannelError(E.ACCESS_REFUSED, E.INTERNAL_EXCHANGE.format(name=ex.name), 60, 40)
        content = Content(msg.exchange, msg.routing_key, msg.properties, msg.raw_properties, msg.body)
        subject = publish_subject(msg.routing_key) if msg.exchange == TOPIC_EXCHANGE else None
        perms = conn.permissions
        if subject is not None and perms is not None and not perms.may_publish(subject):
            raise ChannelError(
                E.ACCESS_REFUSED, E.ACCESS_DENIED_PUBLISH.format(subject=subject, user=conn.user), 60, 40
            )
        if self.transactional:
            self._tx_publishes.append((msg, content))
            return
        self._route(msg, content, subject)

    def _route(self, msg: Message, content: Content, subject: str | None) -> None:
        conn = self.conn
        if subject is not None:
            conn.cur_content = content
            conn.cur_routed = 0
            conn.cur_bridge_hits = 0
            conn.cur_refused = False
            pending = conn.cur_pending = []
            try:
                _count, more = conn.server.router.publish_durable(
                    subject, content.body, reply_subject(content.properties),
                    table_to_headers(content.properties.headers), origin=conn,
                )  # fmt: skip
            finally:
                conn.cur_content = None
            pending.extend(more)
            # queues that took it, plus subscribers of other protocols and streams
            routed = conn.cur_routed + _count - conn.cur_bridge_hits
            refused = conn.cur_refused
        else:
            names = self.vhost.route(msg.exchange, content)
            routed, pending, refused = self.vhost.enqueue(names, content)
        if not routed and msg.mandatory:
            conn.write(return_frames(
                self.number, E.NO_ROUTE, E.NO_ROUTE_TEXT, msg.exchange, msg.routing_key,
                content.raw_properties, content.body, conn.frame_max,
            ))  # fmt: skip
        if self.confirming:
            self.publish_seq += 1
            self._confirm_after(self.publish_seq, pending, refused)

    # -- confirms ----------------------------------------------------------------------------------

    def _confirm_select(self, m: C.Confirm.Select) -> None:
        if self.transactional:
            raise ChannelError(E.PRECONDITION_FAILED, E.CONFIRM_AFTER_TX, 85, 10)
        self.confirming = True
        if not m.nowait:
            self.write_method(C.Confirm.SelectOk())

    def _confirm_after(self, seq: int, pending: list[Any], refused: bool) -> None:
        """Ack (or nack) publish ``seq`` once its writes are committed, keeping acks in order."""
        entry = [seq, len(pending), refused]
        self._confirms.append(entry)
        for done in pending:
            if done.done():
                self._write_done(entry, done)
                continue
            fut = getattr(done, "future", None)
            if fut is not None:  # a store append: one callback per commit, however many appends
                waiting = self._waiting.get(fut)
                if waiting is None:
                    self._waiting[fut] = [entry]
                    fut.add_done_callback(self._commit_done)
                else:
                    waiting.append(entry)
                continue
            add = getattr(done, "add_done_callback", None)
            if add is None:
                done = asyncio.ensure_future(done)
                add = done.add_done_callback
            add(functools.partial(self._write_done, entry))
        if not pending:
            self._release_confirms()

    def _commit_done(self, fut: asyncio.Future) -> None:
        failed = fut.cancelled() or fut.exception() is not None
        for entry in self._waiting.pop(fut, ()):
            if failed:
                entry[2] = True
            entry[1] -= 1
        if not self._release_scheduled:
            self._release_scheduled = True
            self.conn.loop.call_soon(self._release_confirms)

    def _write_done(self, entry: list[Any], done: Any) -> None:
        try:
            if done.exception() is not None:
                entry[2] = True
        except asyncio.CancelledError:
            entry[2] = True
        entry[1] -= 1
        if entry[1] == 0 and not self._release_scheduled:
            # one commit completes many writes at once: their acks go out together, as one
            # multiple-ack, after every callback of that commit has run
            self._release_scheduled = True
            self.conn.loop.call_soon(self._release_confirms)

    def _release_confirms(self) -> None:
        self._release_scheduled = False
        q = self._confirms
        run_end = first_of_run = 0
        while q and q[0][1] <= 0:
            seq, _n, failed = q.popleft()
            if failed:
                if run_end:
                    self._send_ack(run_end, first_of_run)
                    run_end = 0
                self.write_method(C.Basic.Nack(delivery_tag=seq, multiple=False, requeue=False))
                continue
            if not run_end:
                first_of_run = seq
            run_end = seq
        if run_end:
            self._send_ack(run_end, first_of_run)

    def _send_ack(self, last: int, first: int) -> None:
        if self.conn.closing or self.closing:
            return
        self.conn.write(basic_ack_frame(self.number, last, last != first))

    # -- transactions ------------------------------------------------------------------------------

    def _tx_select(self, m: C.Tx.Select) -> None:
        if self.confirming:
            raise ChannelError(E.PRECONDITION_FAILED, E.TX_AFTER_CONFIRM, 90, 10)
        self.transactional = True
        self.write_method(C.Tx.SelectOk())

    def _tx_commit(self, m: C.Tx.Commit) -> None:
        if not self.transactional:
            raise ChannelError(E.PRECONDITION_FAILED, E.TX_NOT_SELECTED, 90, 20)
        publishes, self._tx_publishes = self._tx_publishes, []
        settles, self._tx_settles = self._tx_settles, []
        self.transactional = False
        try:
            for msg, content in publishes:
                subject = publish_subject(msg.routing_key) if msg.exchange == TOPIC_EXCHANGE else None
                self._route(msg, content, subject)
            for kind, tag, multiple, requeue in settles:
                self._settle(kind, tag, multiple, requeue)
        finally:
            self.transactional = True
        store = self.conn.server.store
        if store is None or not publishes:
            self.write_method(C.Tx.CommitOk())
            return
        store.commit_now()
        task = asyncio.ensure_future(store.flush())
        task.add_done_callback(self._committed)

    def _committed(self, task: asyncio.Future) -> None:
        if not (self.closing or self.conn.closing):
            self.write_method(C.Tx.CommitOk())

    def _tx_rollback(self, m: C.Tx.Rollback) -> None:
        if not self.transactional:
            raise ChannelError(E.PRECONDITION_FAILED, E.TX_NOT_SELECTED, 90, 30)
        self._tx_publishes.clear()
        self._tx_settles.clear()
        self.write_method(C.Tx.RollbackOk())


_HANDLERS: dict[type, _Handler] = {
    C.Channel.Flow: Channel._flow,
    C.Exchange.Declare: Channel._exchange_declare,
    C.Exchange.Delete: Channel._exchange_delete,
    C.Exchange.Bind: Channel._exchange_bind,
    C.Exchange.Unbind: Channel._exchange_unbind,
    C.Queue.Declare: Channel._queue_declare,
    C.Queue.Bind: Channel._queue_bind,
    C.Queue.Unbind: Channel._queue_unbind,
    C.Queue.Purge: Channel._queue_purge,
    C.Queue.Delete: Channel._queue_delete,
    C.Basic.Qos: Channel._basic_qos,
    C.Basic.Consume: Channel._basic_consume,
    C.Basic.Cancel: Channel._basic_cancel,
    C.Basic.Get: Channel._basic_get,
    C.Basic.Ack: Channel._basic_ack,
    C.Basic.Nack: Channel._basic_nack,
    C.Basic.Reject: Channel._basic_reject,
    C.Basic.Recover: Channel._basic_recover,
    C.Basic.RecoverAsync: Channel._basic_recover_async,
    C.Confirm.Select: Channel._confirm_select,
    C.Tx.Select: Channel._tx_select,
    C.Tx.Commit: Channel._tx_commit,
    C.Tx.Rollback: Channel._tx_rollback,
}
