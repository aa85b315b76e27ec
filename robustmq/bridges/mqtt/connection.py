"""One MQTT client connection: the asyncio Protocol that moves bytes between socket and state machine.

It owns the read buffer (the decoder), write coalescing, the read budget and pauses, the CONNECT
and keep-alive deadlines and closing; every protocol decision is ``ConnectionState``'s.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING, Any

from robustmq.admission import HandshakeGate, HandshakeTicket, peer_address
from robustmq.bridges.mqtt import errors as E
from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt import reason_codes as rc
from robustmq.bridges.mqtt.codec import MqttDecoder
from robustmq.bridges.mqtt.errors import MqttError, UnsupportedProtocolVersion
from robustmq.bridges.mqtt.limits import (
    BACKPRESSURE_MAX_HOLD_S,
    CLOSE_LINGER_S,
    KEEPALIVE_GRACE_FACTOR,
    WORK_BUDGET_S,
    WRITE_BUFFER_HIGH_BYTES,
    WRITE_BUFFER_LOW_BYTES,
)
from robustmq.bridges.mqtt.state import ConnectionState

if TYPE_CHECKING:
    from robustmq.bridges.mqtt.listener import MqttServer

_VERSION_NAMES = {P.MQTT_3_1: "3.1", P.MQTT_3_1_1: "3.1.1", P.MQTT_5: "5.0"}


class MqttConnection(asyncio.Protocol):
    """The transport side of one client; ``state`` is the client as the protocol sees it."""

    __slots__ = (
        "_flush_scheduled",
        "_hold_timer",
        "_holds",
        "_out",
        "_timer",
        "_yielded",
        "busy_s",
        "decoder",
        "gate",
        "handshake",
        "last_rx",
        "loop",
        "server",
        "state",
        "transport",
        "__weakref__",
    )

    def __init__(self, server: MqttServer, gate: HandshakeGate | None = None) -> None:
        self.server = server
        # sockets still before CONNECT, per listener: this one's, or the WebSocket listener's
        self.gate = gate or server.handshakes
        self.handshake: HandshakeTicket | None = None
        self.busy_s = 0.0  # loop time spent on this connection's input since it last yielded
        self._yielded = False
        self.loop = server.loop
        self.transport: Any = None
        self.decoder = MqttDecoder(server.settings.max_packet_bytes)
        self.last_rx = 0.0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._holds = 0
        self._hold_timer: asyncio.TimerHandle | None = None
        self.state = ConnectionState(server, self)

    # -- introspection -------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Per-connection figures in the shape of a NATS connection's (nats-server's connz entry)."""
        state = self.state
        ip, _, port = state.remote.rpartition(":")
        session = state.session
        transport = self.transport
        buffered = transport.get_write_buffer_size() if transport is not None and not state.closing else 0
        return {
            "cid": state.client_id,
            "ip": ip.strip("[]") or None,
            "port": int(port) if port.isdigit() else None,
            "name": state.name,
            "lang": "mqtt",
            "version": _VERSION_NAMES.get(state.version, str(state.version)),
            "user": state.user,
            "subscriptions": len(session.subscriptions) if session is not None else 0,
            "in_msgs": state.in_msgs,
            "in_bytes": state.in_bytes,
            "out_msgs": state.out_msgs,
            "out_bytes": state.out_bytes,
            "pending_bytes": sum(map(len, self._out)) + buffered,
            "start": state.start_time,
            "rtt_s": None,
            "client_id": state.name,
            "keepalive_s": state.keepalive_s,
            "clean_session": not (session is not None and session.persistent),
            "queued_messages": len(session.queue) if session is not None else 0,
        }

    # -- back-pressure from slow subscribers ------------------------------------------------------------

    def hold_reading(self) -> None:
        """A subscriber is far behind: stop reading this publisher for a while."""
        self._holds += 1
        if self._holds == 1 and not self.state.closing:
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
        if not self.state.closing and not self._yielded:
            self.transport.resume_reading()

    def _end_yield(self) -> None:
        self._yielded = False
        if not self.state.closing and not self._holds:
            self.transport.resume_reading()

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        state = self.state
        peer = transport.get_extra_info("peername")
        if peer:
            state.remote = f"{peer[0]}:{peer[1]}"
        server = self.server
        if self.handshake is None:  # over WebSocket the upgrade took the ticket already
            self.handshake = self.gate.admit(peer_address(transport))
        if self.handshake is None or len(server.open_connections) >= server.settings.max_connections:
            transport.abort()  # too many sockets before CONNECT, or at max_connections
            state.closing = True
            return
        server.connection_opened(self)
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH_BYTES, WRITE_BUFFER_LOW_BYTES)
        self.last_rx = self.loop.time()
        self._timer = self.loop.call_later(server.settings.connect_timeout_s, self._connect_timeout)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state.closing:
            return
        started = perf_counter()
        self.last_rx = self.loop.time()
        if not state.connected and not self.decoder.buffered_bytes and data[:1] != b"\x10":
            state.fail(rc.PROTOCOL_ERROR, E.FIRST_NOT_CONNECT)  # known from the first byte
            return
        try:
            packets = self.decoder.receive(data)
        except UnsupportedProtocolVersion as exc:
            state.unsupported_version(exc.level)
            return
        except MqttError as exc:
            state.fail(exc.reason_code, str(exc))
            return
        state.receive(packets)
        if state.closing:
            return
        self.busy_s += perf_counter() - started
        if self.busy_s >= WORK_BUDGET_S and not self._yielded:
            self.busy_s = 0.0
            self._yielded = True
            if not self._holds:
                self.transport.pause_reading()
            self.loop.call_soon(self._end_yield)

    def pause_writing(self) -> None:
        self.state.paused = True

    def resume_writing(self) -> None:
        self.state.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.closing = True
        if self.handshake is not None:
            self.handshake.release()
            self.handshake = None
        self.server.connection_closed(self)
        for timer in (self._timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._hold_timer = None
        self.state.connection_lost()

    # -- ConnectionIO: what the state machine asks for --------------------------------------------------

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

    def close_transport(self, linger: bool) -> None:
        """Flush what is queued and close the socket.

        ``linger``: the last packet is a DISCONNECT or a refusing CONNACK; shut down our side and
        keep discarding input for a moment, so the peer reads it instead of a connection reset.
        """
        self._flush()
        transport = self.transport
        if linger and not transport.is_closing() and getattr(transport, "can_write_eof", lambda: False)():
            transport.write_eof()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(CLOSE_LINGER_S, transport.close)
            return
        transport.close()

    def connect_accepted(self, keepalive_s: int) -> None:
        if self.handshake is not None:
            self.handshake.release()
            self.handshake = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if keepalive_s:
            self._timer = self.loop.call_later(keepalive_s * KEEPALIVE_GRACE_FACTOR, self._keepalive_check)

    # -- deadlines -----------------------------------------------------------------------------------

    def _connect_timeout(self) -> None:
        self._timer = None
        if not self.state.connected:
            self.state.close()

    def _keepalive_check(self) -> None:
        self._timer = None
        state = self.state
        if state.closing:
            return
        deadline = self.last_rx + state.keepalive_s * KEEPALIVE_GRACE_FACTOR
        now = self.loop.time()
        if now >= deadline:
            state.fail(rc.KEEP_ALIVE_TIMEOUT, E.KEEPALIVE_EXPIRED)
        else:
            self._timer = self.loop.call_at(deadline, self._keepalive_check)
