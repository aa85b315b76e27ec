"""The Kafka listener: a thin asyncio Protocol between sockets, the codec and the service.

Requests of one connection are answered one at a time and in order (as a Kafka broker mutes a
channel while it handles a request); reading pauses when too many wait or output backs up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from robustmq.auth import Authenticator, Principal
from robustmq.bridges.kafka import errors as E
from robustmq.bridges.kafka.codec import (
    KafkaDecoder,
    Request,
    encode_response,
    response_class,
    unsupported_api_versions,
)
from robustmq.bridges.kafka.errors import KafkaCodecError, UnsupportedRequest
from robustmq.bridges.kafka.limits import (
    API_VERSIONS,
    LISTEN_BACKLOG,
    MAX_QUEUED_REQUESTS,
    WRITE_BUFFER_HIGH_BYTES,
    WRITE_BUFFER_LOW_BYTES,
)
from robustmq.bridges.kafka.sasl import MECHANISMS, SaslExchange, SaslFailed
from robustmq.bridges.kafka.service import KafkaService
from robustmq.clients import ClientCounters
from robustmq.stream_access import may_read_stream

if TYPE_CHECKING:
    from robustmq.broker import Broker

log = logging.getLogger("robustmq.kafka")

_SASL_KEYS = (17, 18, 36)  # what an unauthenticated connection may send


class KafkaConnection(asyncio.Protocol):
    """One client socket. Also the router's origin for what it produces (``stored_in`` names the
    stream a produce already went to, so the store does not append it twice)."""

    protocol = "kafka"

    def __init__(self, server: KafkaServer) -> None:
        self.server = server
        self.service = server.service
        self.decoder = KafkaDecoder(server.settings.max_request_bytes, API_VERSIONS)
        self.transport: Any = None
        self.client_id = server.router.new_client_id()
        self.kafka_client_id: str | None = None
        self.name = ""
        self.remote = ""
        self.remote_host = ""
        self.user: str | None = None
        self.principal: Principal | None = None
        self.authenticated = not server.authenticator.required
        self.stored_in: str | None = None
        self.closing = False
        self.in_msgs = 0
        self.in_bytes = 0
        self.out_msgs = 0
        self.out_bytes = 0
        self.start_time = time.time()
        self._queue: deque[Request] = deque()
        self._worker: asyncio.Task | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading_paused = False
        self._sasl: SaslExchange | None = None
        self._auth_timer: asyncio.TimerHandle | None = None
        self._close_callbacks: list[Callable[[], Any]] = []

    # -- origin interface and permissions --------------------------------------------------------

    def add_close_callback(self, fn: Callable[[], Any]) -> None:
        self._close_callbacks.append(fn)

    def may_publish(self, topic: str) -> bool:
        perms = self.principal.permissions if self.principal is not None else None
        return perms is None or perms.may_publish(topic)

    def may_subscribe(self, topic: str) -> bool:
        """May this connection read ``topic``? With users configured, what its user could receive
        over NATS (robustmq/stream_access.py): no broker-internal stream, no other user's mailbox."""
        perms = self.principal.permissions if self.principal is not None else None
        if perms is not None and not perms.may_subscribe(topic):
            return False
        return self.server.may_read(self.principal, topic)

    def info(self) -> dict[str, Any]:
        return {
            "cid": self.client_id, "name": self.kafka_client_id or "", "lang": "kafka", "remote": self.remote,
            "user": self.user, "in_msgs": self.in_msgs, "in_bytes": self.in_bytes, "out_msgs": self.out_msgs,
            "out_bytes": self.out_bytes, "start": self.start_time,
        }  # fmt: skip

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote = f"{peer[0]}:{peer[1]}"
            self.remote_host = f"/{peer[0]}"
        server = self.server
        if len(server.open_connections) >= server.settings.max_connections:
            self.closing = True
            transport.abort()
            return
        server.connection_opened(self)
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH_BYTES, WRITE_BUFFER_LOW_BYTES)
        if not self.authenticated:
            loop = asyncio.get_running_loop()
            self._auth_timer = loop.call_later(server.settings.auth_timeout_s, self._auth_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        decoder = self.decoder
        decoder.feed(data)
        while True:
            try:
                request = decoder.next_request()
            except UnsupportedRequest as exc:
                if exc.api_key == 18:  # ApiVersions of a newer version: tell the client ours
                    self.transport.write(unsupported_api_versions(exc.correlation_id, API_VERSIONS))
                    continue
                self.close(f"unsupported request: {exc}")
                return
            except KafkaCodecError as exc:
                self.close(str(exc))
                return
            if request is None:
                break
            self._queue.append(request)
        if self._queue:
            if self._worker is None or self._worker.done():
                self._worker = asyncio.get_running_loop().create_task(self._serve())
            if len(self._queue) >= MAX_QUEUED_REQUESTS and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._writable.set()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self.server.connection_closed(self)
        callbacks, self._close_callbacks = self._close_callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                log.exception("close callback failed")

    def close(self, reason: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        if reason:
            log.info("closing kafka connection %s: %s", self.remote, reason)
        if self.transport is not None:
            self.transport.close()

    def _auth_timeout(self) -> None:
        if not self.authenticated:
            self.close("no SASL authentication in time")

    # -- requests --------------------------------------------------------------------------------

    async def _serve(self) -> None:
        while self._queue and not self.closing:
            request = self._queue.popleft()
            if self._reading_paused and len(self._queue) < MAX_QUEUED_REQUESTS // 2:
                self._reading_paused = False
                self.transport.resume_reading()
            self.kafka_client_id = request.client_id
            try:
                response = await self._handle(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kafka request %d v%d failed", request.api_key, request.api_version)
                self.close("internal error")
                return
            if response is not None and not self.closing:
                self.transport.write(encode_response(request, response))
                if not self._writable.is_set():
                    await self._writable.wait()

    async def _handle(self, request: Request) -> Any:
        key = request.api_key
        if not self.authenticated and key not in _SASL_KEYS:
            self.close("request before SASL authentication")
            return None
        if key == 17:
            return self._sasl_handshake(request)
        if key == 36:
            return self._sasl_authenticate(request)
        handler = self.service.handlers.get(key)
        if handler is None:  # advertised but not served would be a bug; close as Kafka does
            self.close(f"api key {key} not served")
            return None
        return await handler(self, request.body, request.api_version)

    def _sasl_handshake(self, request: Request) -> Any:
        mechanism = request.body.mechanism
        code = E.NONE
        if self.authenticated and self.server.authenticator.required:
            code = E.ILLEGAL_SASL_STATE
        elif mechanism not in MECHANISMS:
            code = E.UNSUPPORTED_SASL_MECHANISM
        else:
            self._sasl = SaslExchange(mechanism, self.server.authenticator, self.server.passwords)
        return response_class(17)(version=request.api_version, error_code=code, mechanisms=list(MECHANISMS))

    def _sasl_authenticate(self, request: Request) -> Any:
        cls = response_class(36)
        exchange = self._sasl
        if exchange is None:
            return cls(version=request.api_version, error_code=E.ILLEGAL_SASL_STATE,
                       error_message="SaslHandshake first", auth_bytes=b"")  # fmt: skip
        try:
            reply = exchange.step(bytes(request.body.auth_bytes))
        except SaslFailed as exc:
            self._sasl = None
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, self.close, "SASL authentication failed")  # after the answer is out
            return cls(version=request.api_version, error_code=E.SASL_AUTHENTICATION_FAILED,
                       error_message=str(exc), auth_bytes=b"")  # fmt: skip
        if exchange.done:
            self.principal = exchange.principal
            self.user = exchange.principal.user if exchange.principal is not None else None
            self.authenticated = True
            self._sasl = None
            if self._auth_timer is not None:
                self._auth_timer.cancel()
        return cls(
            version=request.api_version,
            error_code=0,
            error_message=None,
            auth_bytes=reply,
            session_lifetime_ms=0,
        )


class KafkaServer(ClientCounters):
    """The Kafka front-end component: its listener, its connections and the service behind them."""

    name = "kafka"

    def __init__(self, broker: Broker) -> None:
        super().__init__()
        self.broker = broker
        self.settings = broker.settings.kafka
        self.host = broker.settings.host
        self.router = broker.router
        self.authenticator = Authenticator(broker.settings.auth)
        self.passwords = {u.user: u.password for u in broker.settings.auth.users}
        self.open_connections: set[KafkaConnection] = set()
        self.service = KafkaService(self)
        self._server: asyncio.AbstractServer | None = None
        # stream reads are checked per user only when users are configured (a token is one identity)
        self._per_user = bool(broker.settings.auth.users)

    def may_read(self, principal: Principal | None, topic: str) -> bool:
        """May ``principal`` read stream ``topic`` whole (robustmq/stream_access.py)? Unknown topics
        are left to the caller (auto-creation, UNKNOWN_TOPIC_OR_PARTITION)."""
        if not self._per_user:
            return True
        store = self.broker.store
        if not store.has_stream(topic):
            return True
        cfg = store.stream_config(topic)
        user = principal.user if principal is not None else None
        perms = principal.permissions if principal is not None else None
        is_admin = principal is not None and principal.role == "admin"
        return may_read_stream(topic, list(cfg.subjects), user, perms, is_admin, self.broker.agent_api)

    async def start(self) -> None:
        self.service.start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: KafkaConnection(self),
            self.host,
            self.settings.port,
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.open_connections):
            conn.close()
        self.service.close()

    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self._server.sockets] if self._server else []

    def advertised_address(self) -> tuple[str, int]:
        """What Metadata and FindCoordinator name as this broker's address."""
        bound = self.addresses()
        host = self.settings.advertised_host or (bound[0][0] if bound else self.host)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        port = self.settings.advertised_port or (bound[0][1] if bound else self.settings.port or 9092)
        return host, port

    def connection_opened(self, conn: KafkaConnection) -> None:
        self.open_connections.add(conn)
        self.count_opened()

    def connection_closed(self, conn: KafkaConnection) -> None:
        if conn in self.open_connections:
            self.open_connections.discard(conn)
            self.count_closed(conn)

    def open_clients(self) -> Iterable[KafkaConnection]:
        return self.open_connections

    def connections(self) -> list[dict[str, Any]]:
        return [c.info() for c in self.open_connections]
