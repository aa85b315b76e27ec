"""The AMQP listener: one thin asyncio Protocol per connection around the codec, and the server component.

The connection negotiates (protocol header, Start/StartOk, Tune/TuneOk, Open), keeps heartbeats,
owns the channels and turns codec events into channel calls; it writes at most once per loop tick.
The server owns the vhost, loads durable state from the store and listens.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import platform
import time
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from pamqp import commands as C
from pamqp import decode as pamqp_decode

from robustmq import __version__
from robustmq.admission import HandshakeGate, HandshakeTicket, peer_address
from robustmq.bridges.amqp import errors as E
from robustmq.bridges.amqp.channel import Channel
from robustmq.bridges.amqp.codec import (
    HEARTBEAT_FRAME,
    FrameDecoder,
    Heartbeat,
    Message,
    Method,
    encode_method,
)
from robustmq.bridges.amqp.errors import AmqpConnectionError, AmqpError, BadProtocolHeader, ChannelError
from robustmq.bridges.amqp.limits import (
    BLOCKED_REASON,
    CLOSE_OK_WAIT_S,
    DEFAULT_VHOST,
    HEARTBEAT_MISSES,
    LISTEN_BACKLOG,
    MIN_FRAME_MAX_BYTES,
    PRODUCT,
    PROTOCOL_HEADER,
    TICK_OUT_MAX_BYTES,
    UNBLOCK_FRACTION,
    WORK_BUDGET_S,
    WRITE_BUFFER_HIGH_BYTES,
    WRITE_BUFFER_LOW_BYTES,
)
from robustmq.bridges.amqp.queues import AmqpQueue, ReadyGauge
from robustmq.bridges.amqp.vhost import VirtualHost
from robustmq.clients import ClientCounters

if TYPE_CHECKING:
    from robustmq.auth import Permissions
    from robustmq.bridges.amqp.queues import Content
    from robustmq.broker import Broker

log = logging.getLogger("robustmq.amqp")

CAPABILITIES = {
    "publisher_confirms": True, "exchange_exchange_bindings": True, "basic.nack": True,
    "consumer_cancel_notify": True, "connection.blocked": True, "consumer_priorities": False,
    "authentication_failure_close": True, "per_consumer_qos": True, "direct_reply_to": False,
}  # fmt: skip


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class AmqpConnection(asyncio.Protocol):
    """One client connection. ``cur_*`` describe the publish being routed right now, so the
    ``amq.topic`` bridge (via ``router.current_origin``) keeps its AMQP properties as sent."""

    protocol = "amqp"

    def __init__(self, server: AmqpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: Any = None
        s = server.settings
        self.decoder = FrameDecoder(s.frame_max_bytes, s.max_message_bytes)
        self.frame_max = s.frame_max_bytes
        self.channel_max = s.channel_max
        self.heartbeat_s = 0
        self.state = "header"  # header -> start -> tune -> open -> closing
        self.closing = False
        self.paused = False
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set[AmqpQueue] = set()
        self.cancel_notify = False
        self.blocked_notify = False
        self.blocked = False  # reading paused because the vhost is over max_ready_bytes
        self.client_id = server.router.new_client_id()
        self.user: str | None = None
        self.permissions: Permissions | None = None
        self.name: str | None = None
        self.remote = ""
        self.in_msgs = self.in_bytes = self.out_msgs = self.out_bytes = 0
        self.start_time = time.time()
        self.handshake: HandshakeTicket | None = None
        self.cur_content: Content | None = None
        self.cur_routed = 0
        self.cur_bridge_hits = 0
        self.cur_refused = False
        self.cur_pending: list[Any] = []
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._tick_paused = False  # paused by this tick's own queued bytes, not by the transport
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._close_callbacks: list[Callable[[], Any]] = []
        self._last_rx = 0.0
        self._last_tx = 0.0
        self._busy_s = 0.0  # loop time spent on this connection's input since it last yielded
        self._yielded = False

    def add_close_callback(self, fn: Callable[[], Any]) -> None:
        self._close_callbacks.append(fn)

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote = f"{peer[0]}:{peer[1]}"
        server = self.server
        self.handshake = server.handshakes.admit(peer_address(transport))
        if self.handshake is None or len(server.open_connections) >= server.settings.max_connections:
            transport.abort()
            self.closing = True
            return
        server.connection_opened(self)
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH_BYTES, WRITE_BUFFER_LOW_BYTES)
        self._last_rx = self._last_tx = self.loop.time()
        self._timer = self.loop.call_later(server.settings.handshake_timeout_s, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing and self.state != "closing":
            return
        started = perf_counter()
        self._last_rx = self.loop.time()
        try:
            events = self.decoder.receive(data)
        except BadProtocolHeader:
            self.transport.write(PROTOCOL_HEADER)
            self._shut()
            return
        except AmqpConnectionError as exc:
            self.fail(exc)
            return
        finally:
            if self.state == "header" and self.decoder.header_seen and not self.closing:
                self._start()
        for event in events:
            try:
                self._on_event(event)
            except ChannelError as exc:
                self._close_channel(exc)
            except AmqpConnectionError as exc:
                self.fail(exc)
            except Exception as exc:  # a bug of ours: this connection ends, the others carry on
                log.exception("AMQP connection %s failed", self.remote)
                self.fail(AmqpConnectionError(E.INTERNAL_ERROR, E.INTERNAL.format(reason=type(exc).__name__)))
            if self.closing and self.state != "closing":
                return
        self._busy_s += perf_counter() - started
        if self._busy_s >= WORK_BUDGET_S and not self._yielded and not self.closing:
            self._busy_s = 0.0
            self._yielded = True
            self.transport.pause_reading()
            self.loop.call_soon(self._end_yield)

    def _end_yield(self) -> None:
        self._yielded = False
        if not self.closing and not self.blocked:
            self.transport.resume_reading()

    def block(self) -> None:
        """Stop reading a connection that publishes; a consuming-only one is left alone, as its
        acks are what drains the queues."""
        if self.blocked or self.closing or self.state != "open" or not self.in_msgs:
            return
        self.blocked = True
        if self.blocked_notify:
            self.write_method(0, C.Connection.Blocked(reason=BLOCKED_REASON))
        self.transport.pause_reading()

    def unblock(self) -> None:
        if not self.blocked:
            return
        self.blocked = False
        if self.closing:
            return
        if self.blocked_notify:
            self.write_method(0, C.Connection.Unblocked())
        if not self._yielded:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for ch in list(self.channels.values()):
            ch.kick()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state = "closed"
        if self.handshake is not None:
            self.handshake.release()
            self.handshake = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for ch in list(self.channels.values()):
            ch.release()
        self.channels.clear()
        for q in list(self.exclusive_queues):
            self.server.vhost.delete_queue(q)
        self.exclusive_queues.clear()
        self.server.connection_closed(self)
        for fn in self._close_callbacks:
            try:
                fn()
            except Exception:
                log.exception("close callback failed")
        self._close_callbacks.clear()

    # -- writing -----------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop tick goes out in one ``transport.write``.

        Past ``TICK_OUT_MAX_BYTES`` queued in the tick the connection counts as paused, so its
        consumers stop being fed until the flush (a backlog is never encoded all at once).
        """
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > TICK_OUT_MAX_BYTES and not self.paused:
            self.paused = True
            self._tick_paused = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def write_method(self, channel: int, method: Any) -> None:
        self.write(encode_method(channel, method))

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        self._out_bytes = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            self._last_tx = self.loop.time()
        if self._tick_paused:
            self._tick_paused = False
            if transport is not None and transport.get_write_buffer_size() <= WRITE_BUFFER_HIGH_BYTES:
                self.resume_writing()  # else the transport's own resume_writing follows

    def _shut(self) -> None:
        self.closing = True
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def fail(self, exc: AmqpError) -> None:
        """A connection error: send Connection.Close, wait briefly for CloseOk, then close."""
        if self.closing:
            return
        self.write_method(0, C.Connection.Close(
            reply_code=exc.code, reply_text=exc.text[:255], class_id=exc.class_id, method_id=exc.method_id
        ))  # fmt: skip
        self._flush()
        self.closing = True
        self.state = "closing"
        for ch in list(self.channels.values()):
            ch.release()
        self.channels.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(CLOSE_OK_WAIT_S, self._shut)

    def _close_channel(self, exc: ChannelError) -> None:
        ch = self.channels.get(getattr(exc, "channel", 0))
        if ch is None:
            return
        ch.release()
        ch.closing = True
        self.decoder.forget_channel(ch.number)
        self.write_method(ch.number, C.Channel.Close(
            reply_code=exc.code, reply_text=exc.text[:255], class_id=exc.class_id, method_id=exc.method_id
        ))  # fmt: skip

    # -- negotiation -------------------------------------------------------------------------------

    def _start(self) -> None:
        self.state = "start"
        props = {
            "product": PRODUCT, "version": __version__, "platform": f"Python {platform.python_version()}",
            "capabilities": CAPABILITIES, "information": "robustmq AMQP 0-9-1",
        }  # fmt: skip
        self.write_method(
            0, C.Connection.Start(server_properties=props, mechanisms="PLAIN AMQPLAIN", locales="en_US")
        )

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self.state != "open" and not self.closing:
            self._shut()

    def _credentials(self, m: C.Connection.StartOk) -> tuple[str, str]:
        response = m.response
        raw = response.encode("latin-1") if isinstance(response, str) else bytes(response)
        mechanism = m.mechanism
        if mechanism == "PLAIN":
            parts = raw.split(b"\x00")
            if len(parts) != 3:
                raise AmqpConnectionError(
                    E.ACCESS_REFUSED, E.LOGIN_REFUSED.format(mechanism=mechanism), 10, 11
                )
            return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
        if mechanism == "AMQPLAIN":
            try:
                _n, table = pamqp_decode.field_table(len(raw).to_bytes(4, "big") + raw)
            except Exception:
                raise AmqpConnectionError(
                    E.ACCESS_REFUSED, E.LOGIN_REFUSED.format(mechanism=mechanism), 10, 11
                ) from None
            user, password = table.get("LOGIN", b""), table.get("PASSWORD", b"")
            if isinstance(user, bytes):
                user = user.decode("utf-8", "replace")
            if isinstance(password, bytes):
                password = password.decode("utf-8", "replace")
            return str(user), str(password)
        raise AmqpConnectionError(E.ACCESS_REFUSED, E.UNKNOWN_MECHANISM.format(mechanism=mechanism), 10, 11)

    def _on_start_ok(self, m: C.Connection.StartOk) -> None:
        user, password = self._credentials(m)
        auth = self.server.authenticator
        refused = AmqpConnectionError(E.ACCESS_REFUSED, E.LOGIN_REFUSED.format(mechanism=m.mechanism), 10, 11)
        if not auth.required:
            # RabbitMQ's default: guest/guest, from loopback only
            if user != "guest" or password != "guest" or not _is_loopback(peer_address(self.transport)):
                raise refused
            self.user = "guest"
        else:
            principal = auth.authenticate(user=user, password=password)
            if principal is None:
                principal = auth.authenticate(token=password)
            if principal is None:
                raise refused
            self.user = principal.user or user
            self.permissions = principal.permissions
        props = m.client_properties or {}
        caps = props.get("capabilities") or {}
        self.cancel_notify = bool(caps.get("consumer_cancel_notify"))
        self.blocked_notify = bool(caps.get("connection.blocked"))
        name = props.get("connection_name")
        self.name = name.decode() if isinstance(name, bytes) else (str(name) if name else None)
        self.state = "tune"
        s = self.server.settings
        self.write_method(
            0,
            C.Connection.Tune(
                channel_max=s.channel_max, frame_max=s.frame_max_bytes, heartbeat=s.heartbeat_s
            ),
        )

    def _on_tune_ok(self, m: C.Connection.TuneOk) -> None:
        s = self.server.settings
        self.channel_max = min(m.channel_max or s.channel_max, s.channel_max)
        self.frame_max = max(MIN_FRAME_MAX_BYTES, min(m.frame_max or s.frame_max_bytes, s.frame_max_bytes))
        self.decoder.frame_max = self.frame_max
        self.heartbeat_s = m.heartbeat

    def _on_open(self, m: C.Connection.Open) -> None:
        if m.virtual_host != DEFAULT_VHOST:
            raise AmqpConnectionError(E.NOT_ALLOWED, E.VHOST_NOT_FOUND.format(vhost=m.virtual_host), 10, 40)
        self.state = "open"
        if self.handshake is not None:
            self.handshake.release()
            self.handshake = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.write_method(0, C.Connection.OpenOk())
        if self.heartbeat_s:
            self._timer = self.loop.call_later(self.heartbeat_s / 2, self._heartbeat)

    def _heartbeat(self) -> None:
        self._timer = None
        if self.closing:
            return
        now = self.loop.time()
        if now - self._last_rx > self.heartbeat_s * HEARTBEAT_MISSES:
            self._shut()  # as RabbitMQ: the socket is closed, no Connection.Close
            return
        if now - self._last_tx >= self.heartbeat_s / 2:
            self.write(HEARTBEAT_FRAME)
        self._timer = self.loop.call_later(self.heartbeat_s / 2, self._heartbeat)

    # -- events ------------------------------------------------------------------------------------

    def _on_event(self, event: Method | Message | Heartbeat) -> None:
        if type(event) is Heartbeat:
            return
        number = event.channel
        if type(event) is Message:
            ch = self.channels.get(number)
            if self.state != "open" or ch is None:
                raise AmqpConnectionError(E.CHANNEL_ERROR, E.EXPECTED_CHANNEL_OPEN, 60, 40)
            if ch.closing:
                return
            self._run(ch, ch.publish, event)
            if self.server.gauge.above and not self.blocked:
                self.block()
            return
        method = event.method
        if self.state == "closing":
            if type(method) in (C.Connection.CloseOk, C.Connection.Close):
                self._shut()
            return
        if number == 0:
            self._connection_method(method)
            return
        if self.state != "open":
            raise AmqpConnectionError(E.COMMAND_INVALID, E.UNEXPECTED_METHOD.format(method=method.name),
                                      method.index >> 16, method.index & 0xFFFF)  # fmt: skip
        ch = self.channels.get(number)
        kind = type(method)
        if kind is C.Channel.Open:
            if ch is not None:
                raise AmqpConnectionError(E.CHANNEL_ERROR, E.SECOND_CHANNEL_OPEN, 20, 10)
            if number > self.channel_max:
                raise AmqpConnectionError(
                    E.CHANNEL_ERROR, E.CHANNEL_MAX.format(channel=number, max=self.channel_max), 20, 10
                )
            self.channels[number] = Channel(self, number)
            self.write_method(number, C.Channel.OpenOk())
            return
        if ch is None:
            raise AmqpConnectionError(
                E.CHANNEL_ERROR, E.EXPECTED_CHANNEL_OPEN, method.index >> 16, method.index & 0xFFFF
            )
        if ch.closing:
            if kind is C.Channel.CloseOk:
                del self.channels[number]
            elif kind is C.Channel.Close:
                self.write_method(number, C.Channel.CloseOk())
            return
        if kind is C.Channel.Close:
            ch.release()
            del self.channels[number]
            self.decoder.forget_channel(number)
            self.write_method(number, C.Channel.CloseOk())
            return
        if kind is C.Channel.CloseOk:
            return
        self._run(ch, ch.handle, method)

    def _run(self, ch: Channel, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except ChannelError as exc:
            exc.channel = ch.number  # type: ignore[attr-defined]
            raise

    def _connection_method(self, method: Any) -> None:
        kind = type(method)
        if self.state == "start" and kind is C.Connection.StartOk:
            self._on_start_ok(method)
        elif self.state == "tune" and kind is C.Connection.TuneOk:
            self._on_tune_ok(method)
        elif self.state == "tune" and kind is C.Connection.Open:
            self._on_open(method)
        elif kind is C.Connection.Close:
            self.write_method(0, C.Connection.CloseOk())
            self._shut()
        elif kind is C.Connection.CloseOk:
            self._shut()
        elif self.state == "open" and kind in (
            C.Connection.Blocked,
            C.Connection.Unblocked,
            C.Connection.UpdateSecret,
        ):
            if kind is C.Connection.UpdateSecret:
                self.write_method(0, C.Connection.UpdateSecretOk())
        else:
            raise AmqpConnectionError(E.COMMAND_INVALID, E.UNEXPECTED_METHOD.format(method=method.name),
                                      method.index >> 16, method.index & 0xFFFF)  # fmt: skip

    # -- introspection -----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        ip, _, port = self.remote.rpartition(":")
        return {
            "cid": self.client_id, "ip": ip.strip("[]") or None, "port": int(port) if port.isdigit() else None,
            "name": self.name, "lang": "amqp", "version": "0-9-1", "user": self.user,
            "subscriptions": sum(len(ch.consumers) for ch in self.channels.values()),
            "in_msgs": self.in_msgs, "in_bytes": self.in_bytes, "out_msgs": self.out_msgs, "out_bytes": self.out_bytes,
            "channels": len(self.channels), "start": self.start_time, "blocked": self.blocked,
            "pending_bytes": sum(map(len, self._out)) + (
                self.transport.get_write_buffer_size() if self.transport is not None and not self.closing else 0),
        }  # fmt: skip


class AmqpServer(ClientCounters):
    """The AMQP front-end: the listener, the vhost and its durable state."""

    name = "amqp"

    def __init__(self, broker: Broker) -> None:
        from robustmq.auth import Authenticator

        super().__init__()
        self.broker = broker
        self.settings = broker.settings.amqp
        self.host = broker.settings.host
        self.router = broker.router
        self.store = getattr(broker, "store", None)
        self.authenticator = Authenticator(broker.settings.auth)
        self.open_connections: set[AmqpConnection] = set()
        self.handshakes = HandshakeGate(
            self.settings.max_unauthenticated_connections, self.settings.max_unauthenticated_per_address
        )
        high = self.settings.max_ready_bytes
        self.gauge = ReadyGauge(high, int(high * UNBLOCK_FRACTION))
        self.gauge.on_high = self._block_publishers
        self.gauge.on_low = self._unblock_publishers
        self.vhost = VirtualHost(gauge=self.gauge)
        self.vhost.on_queue_deleted = self._queue_deleted
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        from robustmq.bridges.amqp.subject_bridge import SubjectBridge

        self.loop = asyncio.get_running_loop()
        if self.store is not None:
            await self._load()
        self.vhost.bridge = SubjectBridge(self.vhost, self.router)
        self.vhost.bridge.bindings_changed()
        if self.settings.port is not None:
            self._server = await self.loop.create_server(
                lambda: AmqpConnection(self),
                self.host,
                self.settings.port,
                reuse_address=True,
                backlog=LISTEN_BACKLOG,
            )

    async def _load(self) -> None:
        from robustmq.bridges.amqp.persistence import AmqpPersistence
        from robustmq.bridges.amqp.routing import Binding, Exchange

        persistence = AmqpPersistence(self.store)
        exchanges, queues, bindings = await persistence.load()
        vhost = self.vhost
        for data in exchanges:
            vhost.exchanges.declare(Exchange(
                data["name"], data.get("type", "direct"), True, bool(data.get("auto_delete")),
                bool(data.get("internal")), data.get("arguments") or {},
            ))  # fmt: skip
        vhost.persistence = persistence
        for data in queues:
            vhost.restore_queue(data)
        for data in bindings:
            try:
                vhost.bind(data["source"], (data["kind"], data["destination"]), data["key"],
                           data.get("arguments") or {}, 0, 0, restoring=True)  # fmt: skip
            except (AmqpError, KeyError):  # its exchange or queue is gone: forget the binding
                persistence.binding_deleted(Binding(
                    data.get("source", ""), (data.get("kind", "q"), data.get("destination", "")),
                    data.get("key", ""), data.get("arguments") or {},
                ))  # fmt: skip

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.open_connections):
            if conn.state == "open":
                conn.write_method(0, C.Connection.Close(
                    reply_code=E.CONNECTION_FORCED, reply_text=E.describe(E.CONNECTION_FORCED, E.SHUTDOWN),
                    class_id=0, method_id=0,
                ))  # fmt: skip
            conn._shut()
        if self.vhost.bridge is not None:
            self.vhost.bridge.close()
        if self.vhost.persistence is not None:
            await self.vhost.persistence.close()

    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self._server.sockets] if self._server else []

    def _block_publishers(self) -> None:
        """Too many bytes wait in queues: publishing connections stop being read (RabbitMQ's
        memory alarm); those that asked are told with Connection.Blocked."""
        for conn in self.open_connections:
            conn.block()

    def _unblock_publishers(self) -> None:
        for conn in self.open_connections:
            conn.unblock()

    def _queue_deleted(self, q: AmqpQueue) -> None:
        for conn in self.open_connections:
            for ch in conn.channels.values():
                if any(c.queue is q for c in ch.consumers.values()):
                    ch.queue_deleted(q)

    # -- connections -------------------------------------------------------------------------------

    def connection_opened(self, conn: AmqpConnection) -> None:
        self.open_connections.add(conn)
        self.count_opened()

    def connection_closed(self, conn: AmqpConnection) -> None:
        if conn in self.open_connections:
            self.open_connections.discard(conn)
            self.count_closed(conn)

    def open_clients(self) -> Iterable[AmqpConnection]:
        return self.open_connections

    def connections(self) -> list[dict[str, Any]]:
        return [conn.info() for conn in self.open_connections if conn.state == "open"]
