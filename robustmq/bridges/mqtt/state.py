"""The per-connection MQTT state machine: decoded packets in, encoded packets and decisions out.

It never touches a socket or the event loop, so CONNECT negotiation, topic aliases, QoS 1/2
acknowledgement order and permissions are tested with a recording ``ConnectionIO``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from robustmq.bridges.mqtt import errors as E
from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt import reason_codes as rc
from robustmq.bridges.mqtt.acks import PublishAcks
from robustmq.bridges.mqtt.codec import PINGRESP, encode, encode_ack, encode_properties, encode_publish
from robustmq.bridges.mqtt.errors import MqttError
from robustmq.bridges.mqtt.limits import (
    ASSIGNED_CLIENT_ID_PREFIX,
    SESSION_EXPIRY_NEVER,
    V3_MAX_INFLIGHT_MESSAGES,
)
from robustmq.bridges.mqtt.message import OutMessage, expiry_of, forwarded_properties, properties_to_headers
from robustmq.bridges.mqtt.retained import RetainedMessage
from robustmq.bridges.mqtt.session import MqttSubscription, Session
from robustmq.bridges.mqtt.topics import (
    filter_to_subjects,
    is_valid_topic_filter,
    split_shared,
    starts_with_wildcard,
    topic_to_subject,
)

if TYPE_CHECKING:
    from robustmq.bridges.mqtt.listener import MqttServer

log = logging.getLogger("robustmq.mqtt")


class ConnectionIO(Protocol):
    """What the state machine asks of the transport around it (an asyncio Protocol, or a test)."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer."""

    def close_transport(self, linger: bool) -> None:
        """Flush and close; ``linger``: the last packet is a DISCONNECT or refusing CONNACK."""

    def hold_reading(self) -> None:
        """A subscriber is far behind: stop reading this publisher for a while."""

    def release_reading(self) -> None:
        """One hold fewer; reading resumes when none is left."""

    def connect_accepted(self, keepalive_s: int) -> None:
        """CONNECT succeeded: the CONNECT deadline ends, the keep-alive deadline starts."""


class ConnectionState:
    """One client's protocol state, from CONNECT to close.

    It is also the origin the router sees while it routes this client's PUBLISH: ``cur_*``
    describe that PUBLISH, so MQTT subscribers get its QoS, retain flag and properties as sent.
    """

    protocol = "mqtt"
    __slots__ = (
        "_acks",
        "_clean_disconnect",
        "_close_callbacks",
        "_io",
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
        "in_bytes",
        "in_msgs",
        "keepalive_s",
        "max_out_packet",
        "name",
        "out_bytes",
        "out_msgs",
        "paused",
        "permissions",
        "remote",
        "router",
        "send_quota",
        "server",
        "session",
        "start_time",
        "user",
        "v5",
        "version",
        "will",
        "write",
        "__weakref__",
    )

    def __init__(self, server: MqttServer, io: ConnectionIO) -> None:
        self.server = server
        self.router = server.router
        self._io = io
        # bound once: every delivery calls it, without a hop through the state
        self.write: Callable[[bytes], None] = io.write
        self.session: Session | None = None
        self.version = P.MQTT_3_1_1
        self.v5 = False
        self.connected = False
        self.closing = False
        self.paused = False  # the transport's write buffer is full: no QoS 0, no new inflight
        self.client_id = server.router.new_client_id()  # one counter for every protocol
        self.name = ""  # the MQTT client identifier
        self.user: str | None = None
        self.remote = ""
        self.permissions: Any = None
        self.will: P.Will | None = None
        self.keepalive_s = 0
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
        self._acks = PublishAcks(self)
        self._close_callbacks: list[Callable[[], Any]] = []
        self._clean_disconnect = False
        # PUBLISH packets and their payload bytes, each way (folded into the server's totals on close)
        self.in_msgs = 0
        self.in_bytes = 0
        self.out_msgs = 0
        self.out_bytes = 0
        self.start_time = time.time()

    # -- origin interface (router.current_origin) --------------------------------------------------

    def add_close_callback(self, fn: Callable[[], Any]) -> None:
        self._close_callbacks.append(fn)

    def hold_reading(self) -> None:
        """A session this client publishes to is far behind (see ``Session.enqueue``)."""
        self._io.hold_reading()

    def release_reading(self) -> None:
        self._io.release_reading()

    # -- packets in ----------------------------------------------------------------------------------

    def receive(self, packets: list[P.Packet]) -> None:
        """Act on decoded packets in order; stops at the first one that closes the connection."""
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

    def unsupported_version(self, level: int) -> None:
        """The decoder met a CONNECT of a protocol level we do not speak."""
        if not self.connected:
            v5 = level == P.MQTT_5
            self._refuse(rc.UNSUPPORTED_PROTOCOL_VERSION if v5 else rc.V3_UNACCEPTABLE_PROTOCOL_VERSION, v5)
        else:
            self.fail(rc.PROTOCOL_ERROR, E.SECOND_CONNECT)

    # -- transport events ------------------------------------------------------------------------------

    def resume_writing(self) -> None:
        self.paused = False
        if self.session is not None and self.session.connection is self:
            self.session.drain()

    def connection_lost(self) -> None:
        """The socket is gone: detach the session, publish the will unless the client said goodbye."""
        self.closing = True
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

    def shutdown(self) -> None:
        """The broker stops: 5.0 hears why; a shutdown is not the client's failure (no will)."""
        if self.v5 and self.connected:
            self.write(encode(P.Disconnect(rc.SERVER_SHUTTING_DOWN), P.MQTT_5))
        self._clean_disconnect = True
        self.close()

    # -- closing -------------------------------------------------------------------------------------

    def close(self, linger: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self._io.close_transport(linger)

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

    # -- frames --------------------------------------------------------------------------------------

    def ack_frame(self, first: int, pid: int, code: int = 0) -> bytes:
        if code and self.v5:
            return bytes((first, 3, pid >> 8, pid & 0xFF, code))
        return encode_ack(first, pid)

    def publish_frame(self, msg: OutMessage, pid: int, dup: bool) -> bytes:
        """The PUBLISH of ``msg`` as this connection needs it (version, topic alias, size limit)."""
        if not self.v5:
            self.out_msgs += 1
            self.out_bytes += len(msg.payload)
            return encode_publish(
                self.server.topic_bytes(msg.topic), msg.payload, msg.qos, msg.retain, dup, pid
            )
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
            self.server.topic_bytes(topic),
            msg.payload,
            msg.qos,
            msg.retain,
            dup,
            pid,
            encode_properties(props),
        )
        if self.max_out_packet and len(frame) > self.max_out_packet:
            return b""  # the client cannot take it: dropped, as MQTT 5 says
        self.out_msgs += 1
        self.out_bytes += len(msg.payload)
        return frame

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
            if self.permissions is not None and not self.permissions.may_publish(
                topic_to_subject(pk.will.topic)
            ):
                self._refuse(rc.NOT_AUTHORIZED, v5)
                return
        self.name = client_id
        self.keepalive_s = pk.keepalive
        if settings.max_keepalive_s and (
            pk.keepalive > settings.max_keepalive_s or (v5 and pk.keepalive == 0)
        ):
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
        self.write(encode(P.Connack(present, 0, connack_props or None), self.version))
        session.attach(self)
        if session.persistent:
            server.subscriptions_changed(session)
        self._io.connect_accepted(self.keepalive_s)

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
            reply = (
                topic_to_subject(fwd[P.RESPONSE_TOPIC])
                if fwd is not None and P.RESPONSE_TOPIC in fwd
                else None
            )
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
            if (
                self.v5
                and len(session.incoming_qos2) + self._acks.waiting >= self.server.settings.receive_maximum
            ):
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
        if pending or self._acks.waiting:
            self._acks.add(pending, first, pid, code)
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
            if group is None and (
                request.retain_handling == 0 or (request.retain_handling == 1 and not existed)
            ):
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


_HANDLERS: dict[type, Callable[[ConnectionState, Any], None]] = {
    P.Publish: ConnectionState._on_publish,
    P.Puback: ConnectionState._on_puback,
    P.Pubrec: ConnectionState._on_pubrec,
    P.Pubrel: ConnectionState._on_pubrel,
    P.Pubcomp: ConnectionState._on_pubcomp,
    P.Subscribe: ConnectionState._on_subscribe,
    P.Unsubscribe: ConnectionState._on_unsubscribe,
    P.Pingreq: ConnectionState._on_pingreq,
    P.Disconnect: ConnectionState._on_disconnect,
    P.Connect: ConnectionState._on_second_connect,
}
