"""The MQTT listener: the server that accepts TCP and WebSocket clients and holds what they share.

Sessions by client id, retained messages, wills and the store journal live here; each client is an
``MqttConnection`` (bytes, deadlines) around a ``ConnectionState`` (the protocol decisions).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from robustmq.admission import HandshakeGate
from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.codec import encode_publish, encode_string
from robustmq.bridges.mqtt.connection import MqttConnection
from robustmq.bridges.mqtt.limits import LISTEN_BACKLOG
from robustmq.bridges.mqtt.message import expiry_of, forwarded_properties, properties_to_headers
from robustmq.bridges.mqtt.retained import RetainedMessage, RetainedMessages
from robustmq.bridges.mqtt.session import Session
from robustmq.bridges.mqtt.state import ConnectionState
from robustmq.bridges.mqtt.topics import topic_to_subject
from robustmq.clients import ClientCounters

if TYPE_CHECKING:
    from robustmq.broker import Broker

__all__ = ["MqttConnection", "MqttServer"]

log = logging.getLogger("robustmq.mqtt")


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
            conn.state.shutdown()
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
            self.count_closed(conn.state)

    def open_clients(self) -> Iterable[ConnectionState]:
        return [conn.state for conn in self.open_connections]

    def connections(self) -> list[dict[str, Any]]:
        """Per-connection figures in the shape of the NATS listener's (nats-server's connz)."""
        return [conn.info() for conn in self.open_connections if conn.state.connected]

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription of a connected session, in the shape of the NATS listener's."""
        out = []
        for conn in self.open_connections:
            state = conn.state
            session = state.session
            if session is None or session.connection is not state:
                continue
            for topic_filter, subs in session.subscriptions.items():
                first = subs[0] if subs else None
                entry = {
                    "cid": state.client_id,
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

    def open_session(self, client_id: str, clean_start: bool, conn: ConnectionState) -> tuple[Session, bool]:
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

    def schedule_will(self, session: Session, will: P.Will, conn: ConnectionState) -> None:
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

    def publish_will(self, will: P.Will, conn: ConnectionState, session: Session) -> None:
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

    def qos0_frame(self, topic: str, payload: bytes, retain: bool, conn: ConnectionState) -> bytes:
        """A QoS 0 PUBLISH without properties, encoded once per fan-out of one message."""
        v5 = conn.v5
        if payload is self._qos0_payload and topic == self._qos0_topic and self._qos0_kind == (v5, retain):
            frame = self._qos0_frame
        else:
            frame = encode_publish(
                self.topic_bytes(topic), payload, 0, retain, False, 0, b"\x00" if v5 else None
            )
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
