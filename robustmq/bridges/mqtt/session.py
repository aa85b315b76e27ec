"""The per-client session: subscriptions, packet ids, messages in flight and queued, QoS 2 state.

A session outlives its connection when the client asked for it (3.1.1 CleanSession=0, 5.0 Session
Expiry Interval); its subscriptions stay on the router and queue QoS 1/2 messages while offline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.limits import (
    BACKPRESSURE_QUEUE_MSGS,
    BACKPRESSURE_RESUME_MSGS,
    MAX_QUEUED_MESSAGES,
    SESSION_EXPIRY_NEVER,
)
from robustmq.bridges.mqtt.message import OutMessage, expiry_from_headers, headers_to_properties
from robustmq.bridges.mqtt.topics import subject_to_topic
from robustmq.router import Subscription

if TYPE_CHECKING:
    from robustmq.bridges.mqtt.listener import MqttServer
    from robustmq.bridges.mqtt.state import ConnectionState


class MqttSubscription(Subscription):
    """One router subscription of an MQTT session (a filter like ``a/#`` holds two of them)."""

    __slots__ = (
        "session", "topic_filter", "qos", "no_local", "retain_as_published", "sub_id", "dollar_guard",
        "delivery_rule",
    )  # fmt: skip

    def __init__(
        self, subject: str, session: Session, topic_filter: str, request: P.SubscriptionRequest,
        queue: str | None, sub_id: int | None, delivery_rule: Any, dollar_guard: bool,
    ) -> None:  # fmt: skip
        super().__init__(subject, None, queue, session)
        self.session = session
        self.topic_filter = topic_filter
        self.qos = request.qos
        self.no_local = request.no_local
        self.retain_as_published = request.retain_as_published
        self.sub_id = sub_id
        self.dollar_guard = dollar_guard
        self.delivery_rule = delivery_rule

    def deliver(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> Any:
        """Returns the store's ack when a persistent session stored the message, else None."""
        if self.dollar_guard and subject[0] == "$":
            return None
        if self.delivery_rule is not None and not self.delivery_rule.permits_literal(subject):
            return None
        return self.session.on_message(self, subject, reply, headers, payload)


class Session:
    """State that lives as long as the MQTT session, across connections."""

    protocol = "mqtt"  # the owner of its router subscriptions, for the control plane's listing

    def __init__(self, server: MqttServer, client_id: str) -> None:
        self.server = server
        self.router = server.router
        self.client_id = client_id
        self.connection: ConnectionState | None = None
        self.subscriptions: dict[str, list[MqttSubscription]] = {}
        self.inflight: dict[int, OutMessage] = {}
        self.queue: deque[OutMessage] = deque()
        self.incoming_qos2: set[int] = set()
        self.expiry_interval_s = 0
        self.send_quota = 65535  # the client's receive maximum
        self.v5 = False  # the protocol of the last connection
        self.user: str | None = None  # who owns it (permissions apply to restored subscriptions)
        self.dropped_messages = 0
        self._next_pid = 0
        self._expiry_timer: asyncio.TimerHandle | None = None
        self.will_timer: asyncio.TimerHandle | None = None
        self.pending_will: tuple[P.Will, ConnectionState] | None = None  # waiting for its delay
        self.held_publishers: set[Any] = set()  # connections paused because this session is behind
        self.destroyed = False

    @property
    def persistent(self) -> bool:
        return self.expiry_interval_s != 0

    # -- connection life cycle -------------------------------------------------------------------

    def attach(self, conn: ConnectionState) -> None:
        """A connection takes the session: resend what is unacknowledged (DUP), then the queue."""
        self.connection = conn
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if self.will_timer is not None:  # reconnected within the will delay: no will
            self.will_timer.cancel()
            self.will_timer = None
        self.pending_will = None
        self.send_quota = conn.send_quota
        self.v5 = conn.v5
        self.user = conn.user
        now = time.time()
        for pid, msg in list(self.inflight.items()):
            if msg.released:
                conn.write(conn.ack_frame(0x62, pid))
            elif msg.expired(now):
                del self.inflight[pid]
                self._done(msg)
            else:
                conn.write(conn.publish_frame(msg, pid, dup=True))
        self.drain()

    def detach(self) -> None:
        """The connection closed: end the session now, or when its expiry interval runs out."""
        self.connection = None
        self.release_publishers()
        if self.expiry_interval_s == 0:
            self.server.end_session(self)
            return
        if self.server.persistence is not None:
            self.server.persistence.session_detached(self)
        self.start_expiry_timer(self.expiry_interval_s)

    def start_expiry_timer(self, seconds: float) -> None:
        """End the session after ``seconds`` unless a client takes it (never for 0xFFFFFFFF)."""
        if self.expiry_interval_s != SESSION_EXPIRY_NEVER:
            loop = asyncio.get_running_loop()
            self._expiry_timer = loop.call_later(seconds, self.server.end_session, self)

    def destroy(self) -> None:
        """Drop every subscription; called once when the session ends."""
        if self.destroyed:
            return
        self.destroyed = True
        for timer in (self._expiry_timer, self.will_timer):
            if timer is not None:
                timer.cancel()
        for subs in self.subscriptions.values():
            for sub in subs:
                self.server.router.unsubscribe(sub)
        self.subscriptions.clear()
        self.release_publishers()
        self.inflight.clear()
        self.queue.clear()

    # -- subscriptions ---------------------------------------------------------------------------

    def add_subscription(self, topic_filter: str, subs: list[MqttSubscription]) -> bool:
        """Add or replace the subscription of ``topic_filter``; True when one existed."""
        old = self.subscriptions.pop(topic_filter, None)
        if old:
            for sub in old:
                self.server.router.unsubscribe(sub)
        for sub in subs:
            self.server.router.add(sub)
        self.subscriptions[topic_filter] = subs
        return old is not None

    def remove_subscription(self, topic_filter: str) -> bool:
        old = self.subscriptions.pop(topic_filter, None)
        if not old:
            return False
        for sub in old:
            self.server.router.unsubscribe(sub)
        return True

    # -- outgoing messages -----------------------------------------------------------------------

    def on_message(
        self, sub: MqttSubscription, subject: str, reply: str | None, headers: bytes | None, payload: bytes
    ) -> Any:
        """A router delivery for one of this session's subscriptions."""
        conn = self.connection
        origin = self.router.current_origin
        if getattr(origin, "cur_payload", None) is payload:  # from an MQTT client: as it was sent
            if sub.no_local and origin.session is self:
                return None
            qos = origin.cur_qos
            if sub.qos < qos:
                qos = sub.qos
            retain = origin.cur_retain and sub.retain_as_published
            props = origin.cur_props if self.v5 else None
            expiry_at = origin.cur_expiry_at
            topic = origin.cur_topic
            if qos == 0 and props is None and expiry_at is None and sub.sub_id is None:
                if conn is None or conn.paused:
                    self.dropped_messages += 1
                    return None
                if not conn.alias_out_max:
                    conn.write(self.server.qos0_frame(topic, payload, retain, conn))
                    return None
        else:
            qos = sub.qos
            retain = False
            if self.v5:
                props, expiry_at = headers_to_properties(headers)
                if reply is not None:
                    props = dict(props) if props else {}
                    props[P.RESPONSE_TOPIC] = subject_to_topic(reply)
            else:
                props = None
                expiry_at = expiry_from_headers(headers)
            topic = subject_to_topic(subject)
        if expiry_at is not None and expiry_at <= time.time():
            return None
        if qos == 0:
            if conn is None or conn.paused:
                self.dropped_messages += 1
                return None
            if props is None and expiry_at is None and sub.sub_id is None and not conn.alias_out_max:
                conn.write(self.server.qos0_frame(topic, payload, retain, conn))
                return None
        msg = OutMessage(topic, payload, qos, retain, props, expiry_at, [sub.sub_id] if sub.sub_id else None)
        return self.enqueue(msg)

    def enqueue(self, msg: OutMessage) -> Any:
        """Send or queue one message; a persistent session stores QoS 1/2 first (returns the ack)."""
        conn = self.connection
        if msg.qos == 0:
            if conn is not None and not conn.paused:
                conn.write(conn.publish_frame(msg, 0, dup=False))
            return None
        stored = None
        if conn is None or self.queue or conn.paused or len(self.inflight) >= self.send_quota:
            if len(self.queue) >= MAX_QUEUED_MESSAGES:
                self.dropped_messages += 1
                return None
            if self.persistent and self.server.persistence is not None:
                stored = self.server.persistence.message_queued(self, msg)
            self.queue.append(msg)
            if conn is not None and len(self.queue) >= BACKPRESSURE_QUEUE_MSGS:
                self._hold_publisher()
            return stored
        if self.persistent and self.server.persistence is not None:
            stored = self.server.persistence.message_queued(self, msg)
        self._send(conn, msg)
        return stored

    def _hold_publisher(self) -> None:
        """Pause reading from the client whose publish is being delivered, until this session catches up."""
        origin = self.router.current_origin
        hold = getattr(origin, "hold_reading", None)
        if hold is not None and origin.session is not self and origin not in self.held_publishers:
            self.held_publishers.add(origin)
            hold()

    def release_publishers(self) -> None:
        held = self.held_publishers
        if held:
            self.held_publishers = set()
            for conn in held:
                conn.release_reading()

    def _done(self, msg: OutMessage) -> None:
        if msg.store_offset is not None and self.server.persistence is not None:
            self.server.persistence.message_done(msg)

    def stored_offsets(self) -> list[int]:
        return [m.store_offset for m in (*self.inflight.values(), *self.queue) if m.store_offset is not None]

    def _send(self, conn: ConnectionState, msg: OutMessage) -> None:
        pid = self._new_packet_id()
        frame = conn.publish_frame(msg, pid, dup=False)
        if not frame:  # larger than the client's maximum packet size: dropped as delivered
            self._done(msg)
            return
        msg.packet_id = pid
        self.inflight[pid] = msg
        conn.write(frame)

    def _new_packet_id(self) -> int:
        pid = self._next_pid
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid not in self.inflight:
                self._next_pid = pid
                return pid

    def drain(self) -> None:
        """Move queued messages into flight while the window and the socket allow."""
        conn = self.connection
        if conn is None:
            return
        queue = self.queue
        now = time.time()
        while queue and not conn.paused and len(self.inflight) < self.send_quota:
            msg = queue.popleft()
            if msg.expired(now):
                self._done(msg)
                continue
            self._send(conn, msg)
        if self.held_publishers and len(queue) <= BACKPRESSURE_RESUME_MSGS:
            self.release_publishers()

    def on_puback(self, pid: int) -> bool:
        msg = self.inflight.pop(pid, None)
        if msg is None or msg.qos != 1:
            if msg is not None:
                self.inflight[pid] = msg
            return False
        if msg.store_offset is not None:
            self._done(msg)
        if self.queue:
            self.drain()
        return True

    def on_pubrec(self, pid: int) -> bool:
        msg = self.inflight.get(pid)
        if msg is None or msg.qos != 2:
            return False
        msg.released = True
        return True

    def on_pubcomp(self, pid: int) -> bool:
        msg = self.inflight.get(pid)
        if msg is None or not msg.released:
            return False
        del self.inflight[pid]
        if msg.store_offset is not None:
            self._done(msg)
        if self.queue:
            self.drain()
        return True
