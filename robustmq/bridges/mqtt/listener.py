"""The MQTT listener: one thin asyncio Protocol per connection around the codec, and the server.

The connection turns packets into router publishes and session calls and writes at most once per
loop tick; the server owns the sessions, the retained messages and the TCP/WebSocket listeners.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from robustmq.admission import HandshakeGate, HandshakeTicket, peer_address
from robustmq.bridges.mqtt import errors as E
from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt import reason_codes as rc
from robustmq.bridges.mqtt.codec import (
    PINGRESP,
    MqttDecoder,
    encode,
    encode_ack,
    encode_properties,
    encode_publish,
    encode_string,
)
from robustmq.bridges.mqtt.errors import MqttError, UnsupportedProtocolVersion
from robustmq.bridges.mqtt.limits import (
    ASSIGNED_CLIENT_ID_PREFIX,
    BACKPRESSURE_MAX_HOLD_S,
    CLOSE_LINGER_S,
    KEEPALIVE_GRACE_FACTOR,
    LISTEN_BACKLOG,
    SESSION_EXPIRY_NEVER,
    V3_MAX_INFLIGHT_MESSAGES,
    WORK_BUDGET_S,
    WRITE_BUFFER_HIGH_BYTES,
    WRITE_BUFFER_LOW_BYTES,
)
from robustmq.bridges.mqtt.message import OutMessage, expiry_of, forwarded_properties, properties_to_headers
from robustmq.bridges.mqtt.retained import RetainedMessage, RetainedMessages
from robustmq.bridges.mqtt.session import MqttSubscription, Session
from robustmq.bridges.mqtt.topics import (
    filter_to_subjects,
    is_valid_topic_filter,
    split_shared,
    starts_with_wildcard,
    topic_to_subject,
)
from robustmq.clients import ClientCounters

if TYPE_CHECKING:
    from robustmq.broker import Broker

log = logging.getLogger("robustmq.mqtt")

_client_ids = itertools.count(1)
_VERSION_NAMES = {P.MQTT_3_1: "3.1", P.MQTT_3_1_1: "3.1.1", P.MQTT_5: "5.0"}


class MqttConnection(asyncio.Protocol):
    """One client connection. ``cur_*`` describe the PUBLISH being routed right now, so MQTT
    subscribers (via ``router.current_origin``) get its QoS, retain flag and properties as sent."""

    protocol = "mqtt"
    __slots__ = (
        "_ack_queue",
        "_acks_waiting",
        "_clean_disconnect",
        "_close_callbacks",
        "_flush_scheduled",
        "_hold_timer",
        "_holds",
        "_out",
        "_timer",
        "_yielded",
        "alias_in",
        "alias_out",
        "alias_out_max",
        "client_id",
        "closing",
        "connected",
        "cur_expiry_at",
        "cur_payload",
        "cur_props",
        "cur_qos",
        "cur_retain",
        "cur_topic",
        "decoder",
        "gate",
        "handshake",
        "in_bytes",
        "in_msgs",
        "keepalive_s",
        "last_rx",
        "loop",
        "max_out_packet",
        "name",
        "out_bytes",
        "out_msgs",
        "paused",
        "busy_s",
        "permissions",
        "remote",
        "router",
        "send_quota",
        "server",
        "session",
        "start_time",
        "transport",
        "user",
        "v5",
        "version",
        "will",
        "__weakref__",
    )

    def __init__(self, server: MqttServer, gate: HandshakeGate | None = None) -> None:
        self.server = server
        # sockets still before CONNECT, per listener: this one's, or the WebSocket listener's
        self.gate = gate or server.handshakes
        self.handshake: HandshakeTicket | None = None
        self.busy_s = 0.0  # loop time spent on this connection's input since it last yielded
        self._yielded = False
        self.router = server.router
        self.loop = server.loop
        self.transport: Any = None
        self.decoder = MqttDecoder(server.settings.max_packet_bytes)
        self.session: Session | None = None
        self.version = P.MQTT_3_1_1
        self.v5 = False
        self.connected = False
        self.closing = False
        self.paused = False
        self.client_id = next(_client_ids)  # unique per broker, for the router's origin
        self.name = ""  # the MQTT client identifier
        self.user: str | None = None
        self.remote = ""
        self.permissions: Any = None
        self.will: P.Will | None = None
        self.keepalive_s = 0
        self.last_rx = 0.0
        self.send_quota = V3_MAX_INFLIGHT_MESSAGES
        self.max_out_packet = 0  # the client's maximum packet size, 0 = no limit
        self.alias_in: dict[int, str] = {}
        self.alias_out: dict[str, int] = {}
        self.alias_out_max = 0
        self.cur_payload: bytes | None = None
        self.cur_topic = ""
        self.cur_qos = 0
        self.cur_retain = False
        self.cur_props: P.Properties | None = None
        self.cur_expiry_at: float | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._ack_queue: deque[list] = deque()
        self._acks_waiting = 0
        self._close_callbacks: list[Callable[[], Any]] = []
        self._clean_disconnect = False
        self._holds = 0
        self._hold_timer: asyncio.TimerHandle | None = None
        # PUBLISH packets and their payload bytes, each way (folded into the server's totals on close)
        self.in_msgs = 0
        self.in_bytes = 0
        self.out_msgs = 0
        self.out_bytes = 0
        self.start_time = time.time()

    # -- origin interface (router.current_origin) --------------------------------------------------

    def add_close_callback(self, fn: Callable[[], Any]) -> None:
        self._close_callbacks.append(fn)

    # -- introspection -------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Per-connection figures in the shape of a NATS connection's (nats-server's connz entry)."""
        ip, _, port = self.remote.rpartition(":")
        session = self.session
        transport = self.transport
        buffered = transport.get_write_buffer_size() if transport is not None and not self.closing else 0
        return {
            "cid": self.client_id,
            "ip": ip.strip("[]") or None,
            "port": int(port) if port.isdigit() else None,
            "name": self.name,
            "lang": "mqtt",
            "version": _VERSION_NAMES.get(self.version, str(self.version)),
            "user": self.user,
            "subscriptions": len(session.subscriptions) if session is not None else 0,
            "in_msgs": self.in_msgs,
            "in_bytes": self.in_bytes,
            "out_msgs": self.out_msgs,
            "out_bytes": self.out_bytes,
            "pending_bytes": sum(map(len, self._out)) + buffered,
            "start": self.start_time,
            "rtt_s": None,
            "client_id": self.name,
            "keepalive_s": self.keepalive_s,
            "clean_session": not (session is not None and session.persistent),
            "queued_messages": len(session.queue) if session is not None else 0,
        }

    # -- back-pressure from slow subscribers ------------------------------------------------------------

    def hold_reading(self) -> None:
        """A subscriber is far behind: stop reading this publisher for a while."""
        self._holds += 1
        if self._holds == 1 and not self.closing:
            self.transport.pause_reading()
            self._hold_timer = self.loop.call_later(BACKPRESSURE_MAX_HOLD_S, self._release_all)

    def release_reading(self) -> None:
        if self._holds:
            self._holds -= 1
            if not self._holds:
                self._release_all()

    def _release_all(self) -> None:
        self._holds = 0
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if not self.closing and not self._yielded:
            self.transport.resume_reading()

    def _end_yield(self) -> None:
        self._yielded = False
        if not self.closing and not self._holds:
            self.transport.resume_reading()

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote = f"{peer[0]}:{peer[1]}"
        server = self.server
        if self.handshake is None:  # over WebSocket the upgrade took the ticket already
            self.handshake = self.gate.admit(peer_address(transport))
        if self.handshake is None or len(server.open_connections) >= server.settings.max_connections:
            transport.abort()  # too many sockets before CONNECT, or at max_connections
            self.closing = True
            return
        server.connection_opened(self)
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH_BYTES, WRITE_BUFFER_LOW_BYTES)
        self.last_rx = self.loop.time()
        self._timer = self.loop.call_later(server.settings.connect_timeout_s, self._connect_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        started = perf_counter()
        self.last_rx = self.loop.time()
        if not self.connected and not self.decoder.buffered_bytes and data[:1] != b"\x10":
            self.fail(rc.PROTOCOL_ERROR, E.FIRST_NOT_CONNECT)  # known from the first byte
            return
        try:
            packets = self.decoder.receive(data)
        except UnsupportedProtocolVersion as exc:
            if not self.connected:
                code = rc.UNSUPPORTED_PROTOCOL_VERSION if exc.level == P.MQTT_5 else rc.V3_UNACCEPTABLE_PROTOCOL_VERSION
                self._refuse(code, v5=exc.level == P.MQTT_5)
            else:
                self.fail(rc.PROTOCOL_ERROR, E.SECOND_CONNECT)
            return
        except MqttError as exc:
            self.fail(exc.reason_code, str(exc))
            return
        handlers = _HANDLERS
        for packet in packets:
            if not self.connected:
                if type(packet) is not P.Connect:
                    self.fail(rc.PROTOCOL_ERROR, E.FIRST_NOT_CONNECT)
                    return
                self._on_connect(packet)
            else:
                handler = handlers.get(type(packet))
                if handler is None:
                    self.fail(rc.PROTOCOL_ERROR, E.UNEXPECTED_PACKET)
                    return
                try:
                    handler(self, packet)
                except MqttError as exc:
                    self.fail(exc.reason_code, str(exc))
            if self.closing:
                return
        self.busy_s += perf_counter() - started
        if self.busy_s >= WORK_BUDGET_S and not self._yielded:
            self.busy_s = 0.0
            self._yielded = True
            if not self._holds:
                self.transport.pause_reading()
            self.loop.call_soon(self._end_yield)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.session is not None and self.session.connection is self:
            self.session.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.handshake is not None:
            self.handshake.release()
            self.handshake = None
        self.server.connection_closed(self)
        for timer in (self._timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._hold_timer = None
        session = self.session
        if session is not None and session.connection is self:
            will = None if self._clean_disconnect else self.will
            self.will = None
            session.detach()
            if will is not None:
                self.server.schedule_will(session, will, self)
        for fn in self._close_callbacks:
            try:
                fn()
            except Exception:
                log.exception("close callback failed")
        self._close_callbacks.clear()

    # -- writing -----------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop tick goes out in one ``transport.write``."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        if not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self, linger: bool = False) -> None:
        """Flush what is queued and close the socket.

        ``linger``: the last packet is a DISCONNECT or a refusing CONNACK; shut down our side and
        keep discarding input for a moment, so the peer reads it instead of a connection reset.
        """
        if self.closing:
            return
        self.closing = True
        self._flush()
        transport = self.transport
        if linger and not transport.is_closing() and getattr(transport, "can_write_eof", lambda: False)():
            transport.write_eof()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(CLOSE_LINGER_S, transport.close)
            return
        transport.close()

    def fail(self, reason_code: int, text: str) -> None:
        """The client broke the protocol: 5.0 gets a DISCONNECT with the reason first; then close."""
        if self.closing:
            return
        if self.connected and self.v5:
            props = {P.REASON_STRING: text} if text else None
            self.write(encode(P.Disconnect(reason_code, props), P.MQTT_5))
            self.close(linger=True)
            return
        self.close()

    def _refuse(self, code: int, v5: bool) -> None:
        """CONNACK with a refusal code, then close."""
        if not v5:
            code = rc.V5_TO_V3_CONNACK.get(code, code)
        self.write(encode(P.Connack(False, code), P.MQTT_5 if v5 else P.MQTT_3_1_1))
        self.close(linger=True)

    def ack_frame(self, first: int, pid: int, code: int = 0) -> bytes:
        if code and self.v5:
            return bytes((first, 3, pid >> 8, pid & 0xFF, code))
        return encode_ack(first, pid)

    def publish_frame(self, msg: OutMessage, pid: int, dup: bool) -> bytes:
        """The PUBLISH of ``msg`` as this connection needs it (version, topic alias, size limit)."""
        if not self.v5:
            self.out_msgs += 1
            self.out_bytes += len(msg.payload)
            return encode_publish(self.server.topic_bytes(msg.topic), msg.payload, msg.qos, msg.retain, dup, pid)
        props = msg.outgoing_properties()
        topic = msg.topic
        if self.alias_out_max:
            alias = self.alias_out.get(topic)
            if alias is not None:
                props = dict(props) if props else {}
                props[P.TOPIC_ALIAS] = alias
                topic = ""
            elif len(self.alias_out) < self.alias_out_max:
                alias = self.alias_out[topic] = len(self.alias_out) + 1
                props = dict(props) if props else {}
                props[P.TOPIC_ALIAS] = alias
        frame = encode_publish(
            self.server.topic_bytes(topic), msg.payload, msg.qos, msg.retain, dup, pid, encode_properties(props)
        )
        if self.max_out_packet and len(frame) > self.max_out_packet:
            return b""  # the client cannot take it: dropped, as MQTT 5 says
        self.out_msgs += 1
        self.out_bytes += len(msg.payload)
        return frame

    # -- timers ------------------------------------------------------------------------------------

    def _connect_timeout(self) -> None:
        self._timer = None
        if not self.connected:
            self.close()

    def _keepalive_check(self) -> None:
        self._timer = None
        if self.closing:
            return
        deadline = self.last_rx + self.keepalive_s * KEEPALIVE_GRACE_FACTOR
        now = self.loop.time()
        if now >= deadline:
            self.fail(rc.KEEP_ALIVE_TIMEOUT, E.KEEPALIVE_EXPIRED)
        else:
            self._timer = self.loop.call_at(deadline, self._keepalive_check)

    # -- CONNECT -----------------------------------------------------------------------------------

    def _on_connect(self, pk: P.Connect) -> None:
        server = self.server
        settings = server.settings
        self.version = pk.protocol_level
        v5 = self.v5 = pk.protocol_level == P.MQTT_5
        props = pk.properties or {}
        if v5 and P.AUTHENTICATION_METHOD in props:
            self._refuse(rc.BAD_AUTHENTICATION_METHOD, v5)
            return
        password = pk.password.decode("utf-8", "replace") if pk.password is not None else None
        principal = server.authenticator.authenticate(pk.username, password, token=password)
        if principal is None:
            self._refuse(rc.BAD_USER_NAME_OR_PASSWORD, v5)
            return
        self.user = principal.user
        self.permissions = principal.permissions
        connack_props: P.Properties = {}
        client_id = pk.client_id
        if not client_id:
            if not v5 and not pk.clean_start:
                self._refuse(rc.CLIENT_IDENTIFIER_NOT_VALID, v5)
                return
            client_id = ASSIGNED_CLIENT_ID_PREFIX + os.urandom(8).hex()
            if v5:
                connack_props[P.ASSIGNED_CLIENT_IDENTIFIER] = client_id
        if pk.will is not None:
            if not pk.will.topic or "+" in pk.will.topic or "#" in pk.will.topic:
                if v5:
                    self._refuse(rc.TOPIC_NAME_INVALID, v5)
                else:
                    self.close()  # 3.1.1 has no return code for it
                return
            if self.permissions is not None and not self.permissions.may_publish(topic_to_subject(pk.will.topic)):
                self._refuse(rc.NOT_AUTHORIZED, v5)
                return
        self.name = client_id
        self.keepalive_s = pk.keepalive
        if settings.max_keepalive_s and (pk.keepalive > settings.max_keepalive_s or (v5 and pk.keepalive == 0)):
            self.keepalive_s = settings.max_keepalive_s
            if v5:
                connack_props[P.SERVER_KEEP_ALIVE] = self.keepalive_s
        if v5:
            expiry = props.get(P.SESSION_EXPIRY_INTERVAL, 0)
            self.send_quota = props.get(P.RECEIVE_MAXIMUM, 65535)
            if self.send_quota == 0:
                self.fail(rc.PROTOCOL_ERROR, E.BAD_PROPERTY_VALUE)
                return
            self.max_out_packet = props.get(P.MAXIMUM_PACKET_SIZE, 0)
            self.alias_out_max = props.get(P.TOPIC_ALIAS_MAXIMUM, 0)
            connack_props[P.RECEIVE_MAXIMUM] = settings.receive_maximum
            connack_props[P.TOPIC_ALIAS_MAXIMUM] = settings.topic_alias_maximum
            connack_props[P.MAXIMUM_PACKET_SIZE] = settings.max_packet_bytes
        else:
            expiry = 0 if pk.clean_start else SESSION_EXPIRY_NEVER
        self.will = pk.will
        session, present = server.open_session(client_id, pk.clean_start, self)
        session.expiry_interval_s = expiry
        self.session = session
        self.connected = True
        if self.handshake is not None:
            self.handshake.release()
            self.handshake = None
        self.write(encode(P.Connack(present, 0, connack_props or None), self.version))
        session.attach(self)
        if session.persistent:
            server.subscriptions_changed(session)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.keepalive_s:
            self._timer = self.loop.call_later(self.keepalive_s * KEEPALIVE_GRACE_FACTOR, self._keepalive_check)

    def _on_second_connect(self, pk: P.Connect) -> None:
        self.fail(rc.PROTOCOL_ERROR, E.SECOND_CONNECT)

    def taken_over(self) -> None:
        """Another connection took this client id: hand the session over, publish the will, close."""
        session = self.session
        self.session = None
        will = self.will
        self.will = None
        if self.v5:
            self.write(encode(P.Disconnect(rc.SESSION_TAKEN_OVER), P.MQTT_5))
        self.close(linger=self.v5)
        if will is not None and session is not None:
            self.server.publish_will(will, self, session)

    # -- PUBLISH -----------------------------------------------------------------------------------

    def _on_publish(self, pk: P.Publish) -> None:
        self.in_msgs += 1
        self.in_bytes += len(pk.payload)
        props = pk.properties
        topic = pk.topic
        if props is not None:
            if P.TOPIC_ALIAS in props:
                topic = self._resolve_alias(topic, props[P.TOPIC_ALIAS])
            elif not topic:
                raise MqttError(E.EMPTY_TOPIC, rc.PROTOCOL_ERROR)
            fwd = forwarded_properties(props)
            expiry_at = expiry_of(props)
            headers = properties_to_headers(props)
            reply = topic_to_subject(fwd[P.RESPONSE_TOPIC]) if fwd is not None and P.RESPONSE_TOPIC in fwd else None
        else:
            if not topic:
                raise MqttError(E.EMPTY_TOPIC, rc.PROTOCOL_ERROR if self.v5 else rc.MALFORMED_PACKET)
            fwd = expiry_at = headers = reply = None
        if "+" in topic or "#" in topic:
            raise MqttError(E.WILDCARD_IN_TOPIC, rc.TOPIC_NAME_INVALID)
        qos = pk.qos
        pid = pk.packet_id
        session = self.session
        if qos:
            if qos == 2 and pid in session.incoming_qos2:
                self.write(encode_ack(0x50, pid))  # a resent PUBLISH: delivered once already
                return
            if self.v5 and len(session.incoming_qos2) + self._acks_waiting >= self.server.settings.receive_maximum:
                raise MqttError(E.RECEIVE_MAXIMUM, rc.RECEIVE_MAXIMUM_EXCEEDED)
        subject = topic_to_subject(topic)
        if self.permissions is not None and not self.permissions.may_publish(subject):
            if qos == 1:
                self.write(self.ack_frame(0x40, pid, rc.NOT_AUTHORIZED))
            elif qos == 2:
                self.write(self.ack_frame(0x50, pid, rc.NOT_AUTHORIZED))
            return
        if pk.retain:
            self.server.set_retained(RetainedMessage(topic, pk.payload, qos, fwd, expiry_at))
        router = self.router
        self.cur_payload = pk.payload
        self.cur_topic = topic
        self.cur_qos = qos
        self.cur_retain = pk.retain
        self.cur_props = fwd
        self.cur_expiry_at = expiry_at
        try:
            if qos == 0:
                router.publish(subject, pk.payload, reply, headers, origin=self)
                return
            count, pending = router.publish_durable(subject, pk.payload, reply, headers, origin=self)
        finally:
            self.cur_payload = None
        code = rc.NO_MATCHING_SUBSCRIBERS if count == 0 and self.v5 else 0
        if qos == 2:
            session.incoming_qos2.add(pid)
            first = 0x50
        else:
            first = 0x40
        if pending or self._ack_queue:
            self._ack_after(pending, first, pid, code)
        else:
            self.write(self.ack_frame(first, pid, code))

    def _resolve_alias(self, topic: str, alias: int) -> str:
        """The topic of an inbound PUBLISH with a Topic Alias (set it, or look it up)."""
        if not alias or alias > self.server.settings.topic_alias_maximum:
            raise MqttError(E.BAD_TOPIC_ALIAS, rc.TOPIC_ALIAS_INVALID)
        if topic:
            self.alias_in[alias] = topic
            return topic
        topic = self.alias_in.get(alias, "")
        if not topic:
            raise MqttError(E.BAD_TOPIC_ALIAS, rc.PROTOCOL_ERROR)
        return topic

    def _ack_after(self, pending: list, first: int, pid: int, code: int) -> None:
        """Acknowledge once the writes are durable, keeping acks in PUBLISH order.

        No task per message: each durable write calls back when its commit is done, and the acks
        at the head of the queue whose writes are all done go out.
        """
        entry = [first, pid, code, len(pending), False]  # ..., writes outstanding, a write failed
        self._ack_queue.append(entry)
        self._acks_waiting += 1
        for done in pending:
            if getattr(done, "done", None) is not None and done.done():
                self._ack_part_done(entry, done)
                continue
            add = getattr(done, "add_done_callback", None)
            if add is None:
                done = asyncio.ensure_future(done)
                add = done.add_done_callback
            add(functools.partial(self._ack_part_done, entry))
        if not pending:
            self._release_acks()

    def _ack_part_done(self, entry: list, done: Any) -> None:
        try:
            failed = done.exception() is not None
        except asyncio.CancelledError:
            failed = True
        if failed:
            entry[4] = True
        entry[3] -= 1
        if entry[3] == 0:
            self._release_acks()

    def _release_acks(self) -> None:
        queue = self._ack_queue
        while queue and queue[0][3] <= 0:
            first, pid, code, _, failed = queue.popleft()
            self._acks_waiting -= 1
            if self.closing:
                continue
            if not failed:
                self.write(self.ack_frame(first, pid, code))
            elif self.v5:
                self.write(self.ack_frame(first, pid, rc.IMPLEMENTATION_SPECIFIC_ERROR))
            else:
                self.close()  # 3.1.1 has no negative ack: the client resends on reconnect

    def _on_puback(self, pk: P.Puback) -> None:
        if self.session is not None:
            self.session.on_puback(pk.packet_id)

    def _on_pubrec(self, pk: P.Pubrec) -> None:
        session = self.session
        if session is None:
            return
        if pk.reason_code >= 0x80:  # the receiver refused: the exchange ends here
            session.inflight.pop(pk.packet_id, None)
            session.drain()
            return
        if session.on_pubrec(pk.packet_id):
            self.write(encode_ack(0x62, pk.packet_id))
        else:
            self.write(self.ack_frame(0x62, pk.packet_id, rc.PACKET_IDENTIFIER_NOT_FOUND))

    def _on_pubrel(self, pk: P.Pubrel) -> None:
        session = self.session
        if session is None:
            return
        if pk.packet_id in session.incoming_qos2:
            session.incoming_qos2.discard(pk.packet_id)
            self.write(encode_ack(0x70, pk.packet_id))
        else:
            self.write(self.ack_frame(0x70, pk.packet_id, rc.PACKET_IDENTIFIER_NOT_FOUND))

    def _on_pubcomp(self, pk: P.Pubcomp) -> None:
        if self.session is not None:
            self.session.on_pubcomp(pk.packet_id)

    # -- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------------

    def _on_subscribe(self, pk: P.Subscribe) -> None:
        session = self.session
        assert session is not None
        sub_ids = (pk.properties or {}).get(P.SUBSCRIPTION_IDENTIFIER)
        sub_id = sub_ids[0] if sub_ids else None
        if sub_id == 0:
            raise MqttError(E.BAD_PROPERTY_VALUE, rc.PROTOCOL_ERROR)
        codes = []
        retained_out: list[tuple[MqttSubscription, list[RetainedMessage]]] = []
        failure = rc.V3_SUBACK_FAILURE
        for request in pk.subscriptions:
            try:
                group, topic_filter = split_shared(request.topic_filter)
            except ValueError:
                codes.append(rc.TOPIC_FILTER_INVALID if self.v5 else failure)
                continue
            if not is_valid_topic_filter(topic_filter):
                codes.append(rc.TOPIC_FILTER_INVALID if self.v5 else failure)
                continue
            if group is not None and request.no_local:
                raise MqttError(E.BAD_TOPIC_FILTER, rc.PROTOCOL_ERROR)
            subjects = filter_to_subjects(topic_filter)
            perms = self.permissions
            rule = None
            if perms is not None:
                if not perms.may_subscribe(subjects[0]):
                    codes.append(rc.NOT_AUTHORIZED if self.v5 else failure)
                    continue
                # 'a/#' also matches 'a'; that extra subject only when the user may read it
                subjects = [subjects[0], *(x for x in subjects[1:] if perms.may_subscribe(x))]
                rule = perms.delivery_filter(subjects[0])
            if not self.server.may_subscribe_agent_subject(
                self.user, subjects[0]
            ):  # an agent's serve and mailbox subjects are its owner's alone (as on NATS)
                codes.append(rc.NOT_AUTHORIZED if self.v5 else failure)
                continue
            queue = f"$mqtt.share.{group}.{request.topic_filter}" if group is not None else None
            guard = starts_with_wildcard(topic_filter)
            subs = [
                MqttSubscription(s, session, request.topic_filter, request, queue, sub_id, rule, guard)
                for s in subjects
            ]
            existed = session.add_subscription(request.topic_filter, subs)
            self.server.subscriptions_changed(session)
            codes.append(request.qos)
            if group is None and (request.retain_handling == 0 or (request.retain_handling == 1 and not existed)):
                retained = self.server.retained.matching(topic_filter)
                if retained:
                    retained_out.append((subs[0], retained))
        self.write(encode(P.Suback(pk.packet_id, codes), self.version))
        for sub, messages in retained_out:
            for m in messages:
                props = m.properties if self.v5 else None
                msg = OutMessage(m.topic, m.payload, min(m.qos, sub.qos), True, props, m.expiry_at,
                                 [sub.sub_id] if sub.sub_id else None)  # fmt: skip
                session.enqueue(msg)

    def _on_unsubscribe(self, pk: P.Unsubscribe) -> None:
        session = self.session
        assert session is not None
        codes = []
        for topic_filter in pk.topic_filters:
            existed = session.remove_subscription(topic_filter)
            codes.append(rc.SUCCESS if existed else rc.NO_SUBSCRIPTION_EXISTED)
        self.server.subscriptions_changed(session)
        self.write(encode(P.Unsuback(pk.packet_id, codes if self.v5 else []), self.version))

    # -- the rest ----------------------------------------------------------------------------------

    def _on_pingreq(self, pk: P.Pingreq) -> None:
        self.write(PINGRESP)

    def _on_disconnect(self, pk: P.Disconnect) -> None:
        session = self.session
        if self.v5 and pk.properties and P.SESSION_EXPIRY_INTERVAL in pk.properties and session is not None:
            new = pk.properties[P.SESSION_EXPIRY_INTERVAL]
            if session.expiry_interval_s == 0 and new != 0:
                self.fail(rc.PROTOCOL_ERROR, E.SESSION_EXPIRY_RAISED)
                return
            session.expiry_interval_s = new
        self._clean_disconnect = pk.reason_code != rc.DISCONNECT_WITH_WILL
        self.close()


_HANDLERS: dict[type, Callable[[MqttConnection, Any], None]] = {
    P.Publish: MqttConnection._on_publish,
    P.Puback: MqttConnection._on_puback,
    P.Pubrec: MqttConnection._on_pubrec,
    P.Pubrel: MqttConnection._on_pubrel,
    P.Pubcomp: MqttConnection._on_pubcomp,
    P.Subscribe: MqttConnection._on_subscribe,
    P.Unsubscribe: MqttConnection._on_unsubscribe,
    P.Pingreq: MqttConnection._on_pingreq,
    P.Disconnect: MqttConnection._on_disconnect,
    P.Connect: MqttConnection._on_second_connect,
}


class _WebSocketListener:
    """The MQTT-over-WebSocket listener, a component of its own so it reports as ``mqtt-ws``."""

    name = "mqtt-ws"

    def __init__(self, server: MqttServer) -> None:
        self.server = server
        self._server: asyncio.AbstractServer | None = None
        settings = server.settings
        self.handshakes = HandshakeGate(
            settings.max_unauthenticated_connections, settings.max_unauthenticated_per_address
        )

    async def start(self) -> None:
        from robustmq.bridges.mqtt.websocket import WebSocketTransportProtocol

        s = self.server
        loop = asyncio.get_running_loop()
        gate = self.handshakes
        self._server = await loop.create_server(
            lambda: WebSocketTransportProtocol(
                MqttConnection(s, gate), s.settings.max_packet_bytes + 16, gate, s.settings.connect_timeout_s
            ),
            s.host, s.settings.ws_port, reuse_address=True, backlog=LISTEN_BACKLOG,
        )  # fmt: skip

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self._server.sockets] if self._server else []


class MqttServer(ClientCounters):
    """The MQTT front-end: listeners, sessions by client id, retained messages."""

    name = "mqtt"

    def __init__(self, broker: Broker) -> None:
        from robustmq.auth import Authenticator

        super().__init__()
        self.broker = broker
        self.settings = broker.settings.mqtt
        self.host = broker.settings.host
        self.router = broker.router
        self.authenticator = Authenticator(broker.settings.auth)
        self.open_connections: set[MqttConnection] = set()
        self.handshakes = HandshakeGate(
            self.settings.max_unauthenticated_connections, self.settings.max_unauthenticated_per_address
        )
        self.sessions: dict[str, Session] = {}
        self.retained = RetainedMessages()
        self.persistence: Any = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: asyncio.AbstractServer | None = None
        self._topic_bytes: dict[str, bytes] = {}
        self._qos0_topic = ""
        self._qos0_payload: bytes | None = None
        self._qos0_kind = (False, False)
        self._qos0_frame = b""
        self.websocket = _WebSocketListener(self) if self.settings.ws_port is not None else None

    def may_subscribe_agent_subject(self, user: str | None, subject: str) -> bool:
        """An agent's serve and mailbox subjects are its owner's alone; True without the agent API."""
        agent_api = getattr(self.broker, "agent_api", None)
        return agent_api is None or agent_api.may_subscribe(user, subject)

    # -- component -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        store = getattr(self.broker, "store", None)
        if store is not None:
            from robustmq.bridges.mqtt.persistence import MqttPersistence

            self.persistence = MqttPersistence(self, store)
            await self.persistence.load()
        if self.settings.port is not None:
            self._server = await self.loop.create_server(
                lambda: MqttConnection(self), self.host, self.settings.port,
                reuse_address=True, backlog=LISTEN_BACKLOG,
            )  # fmt: skip

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.open_connections):
            if conn.v5 and conn.connected:
                conn.write(encode(P.Disconnect(rc.SERVER_SHUTTING_DOWN), P.MQTT_5))
            conn._clean_disconnect = True  # a broker shutdown is not the client's failure
            conn.close()
        if self.persistence is not None:
            await self.persistence.close()

    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self._server.sockets] if self._server else []

    # -- connections and their traffic (connz / subsz views, server-wide counters) ------------------

    def connection_opened(self, conn: MqttConnection) -> None:
        self.open_connections.add(conn)
        self.count_opened()

    def connection_closed(self, conn: MqttConnection) -> None:
        if conn in self.open_connections:
            self.open_connections.discard(conn)
            self.count_closed(conn)

    def open_clients(self) -> Iterable[MqttConnection]:
        return self.open_connections

    def connections(self) -> list[dict[str, Any]]:
        """Per-connection figures in the shape of the NATS listener's (nats-server's connz)."""
        return [conn.info() for conn in self.open_connections if conn.connected]

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription of a connected session, in the shape of the NATS listener's."""
        out = []
        for conn in self.open_connections:
            session = conn.session
            if session is None or session.connection is not conn:
                continue
            for topic_filter, subs in session.subscriptions.items():
                first = subs[0] if subs else None
                entry = {
                    "cid": conn.client_id,
                    "subject": topic_filter,
                    "queue": topic_filter.split("/", 2)[1] if topic_filter.startswith("$share/") else None,
                    "sid": topic_filter,
                    "msgs": None,
                    "max": None,
                    "qos": first.qos if first is not None else 0,
                    "subjects": [sub.subject for sub in subs],
                }
                out.append(entry)
        return out

    # -- sessions --------------------------------------------------------------------------------

    def open_session(self, client_id: str, clean_start: bool, conn: MqttConnection) -> tuple[Session, bool]:
        """The session for a CONNECT, after closing any connection that holds the client id."""
        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None and session.connection is not conn:
            old = session.connection
            session.connection = None
            old.taken_over()
        if session is not None and (clean_start or session.destroyed):
            self.end_session(session)
            session = None
        if session is None:
            session = self.sessions[client_id] = Session(self, client_id)
            return session, False
        return session, True

    def end_session(self, session: Session) -> None:
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        pending_will = session.pending_will
        session.destroy()
        if pending_will is not None:
            session.pending_will = None
            self.publish_will(pending_will[0], pending_will[1], session)
        if self.persistence is not None:
            self.persistence.session_ended(session)

    def subscriptions_changed(self, session: Session) -> None:
        if self.persistence is not None:
            self.persistence.subscriptions_changed(session)

    # -- will --------------------------------------------------------------------------------------

    def schedule_will(self, session: Session, will: P.Will, conn: MqttConnection) -> None:
        """Publish the will now, or after its delay if the session outlives the connection."""
        delay = (will.properties or {}).get(P.WILL_DELAY_INTERVAL, 0) if conn.v5 else 0
        if delay and not session.destroyed:
            session.pending_will = (will, conn)
            session.will_timer = self.loop.call_later(delay, self._delayed_will, session)
        else:
            self.publish_will(will, conn, session)

    def _delayed_will(self, session: Session) -> None:
        session.will_timer = None
        pending = session.pending_will
        if pending is not None:
            session.pending_will = None
            self.publish_will(pending[0], pending[1], session)

    def publish_will(self, will: P.Will, conn: MqttConnection, session: Session) -> None:
        props = will.properties
        fwd = forwarded_properties(props)
        expiry_at = expiry_of(props)
        if will.retain:
            self.set_retained(RetainedMessage(will.topic, will.payload, will.qos, fwd, expiry_at))
        subject = topic_to_subject(will.topic)
        reply = topic_to_subject(fwd[P.RESPONSE_TOPIC]) if fwd and P.RESPONSE_TOPIC in fwd else None
        conn.cur_payload = will.payload
        conn.cur_topic = will.topic
        conn.cur_qos = will.qos
        conn.cur_retain = will.retain
        conn.cur_props = fwd
        conn.cur_expiry_at = expiry_at
        try:
            self.router.publish(subject, will.payload, reply, properties_to_headers(props), origin=conn)
        finally:
            conn.cur_payload = None

    # -- retained ----------------------------------------------------------------------------------

    def set_retained(self, message: RetainedMessage) -> None:
        self.retained.set(message)
        if self.persistence is not None:
            self.persistence.retained_changed(message)

    # -- frames ------------------------------------------------------------------------------------

    def topic_bytes(self, topic: str) -> bytes:
        """The length-prefixed UTF-8 of a topic, cached."""
        b = self._topic_bytes.get(topic)
        if b is None:
            if len(self._topic_bytes) >= 8192:
                self._topic_bytes.clear()
            b = self._topic_bytes[topic] = encode_string(topic)
        return b

    def qos0_frame(self, topic: str, payload: bytes, retain: bool, conn: MqttConnection) -> bytes:
        """A QoS 0 PUBLISH without properties, encoded once per fan-out of one message."""
        v5 = conn.v5
        if payload is self._qos0_payload and topic == self._qos0_topic and self._qos0_kind == (v5, retain):
            frame = self._qos0_frame
        else:
            frame = encode_publish(self.topic_bytes(topic), payload, 0, retain, False, 0, b"\x00" if v5 else None)
            self._qos0_payload = payload
            self._qos0_topic = topic
            self._qos0_kind = (v5, retain)
            self._qos0_frame = frame
        if v5 and conn.max_out_packet and len(frame) > conn.max_out_packet:
            return b""
        conn.out_msgs += 1
        conn.out_bytes += len(payload)
        return frame

    def websocket_listener(self) -> _WebSocketListener | None:
        return self.websocket
