"""The NATS listener: a broker Component that accepts clients and flushes their output each tick.

It holds what every connection shares: INFO, auth, the flush list, the idle sweep, connz/subsz views.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from robustmq.admission import HandshakeGate
from robustmq.auth import Authenticator
from robustmq.clients import ClientCounters
from robustmq.nats import encoder, errors
from robustmq.nats.connection import NatsConnection, NatsSubscription
from robustmq.nats.limits import (
    COMPAT_SERVER_VERSION,
    DELIVERY_ERROR_LOG_INTERVAL_S,
    GO_FIELD,
    PROTOCOL_VERSION,
    STALL_MAX_S,
    STOP_DRAIN_S,
    SWEEP_INTERVAL_MAX_S,
)

if TYPE_CHECKING:
    from robustmq.broker import Broker

log = logging.getLogger("robustmq.nats")


def _server_id() -> str:
    """56 upper-case base32 characters starting with N, the shape of a nats-server id."""
    return "N" + base64.b32encode(os.urandom(35)).decode()[:55]


class NatsServer(ClientCounters):
    """The ``nats`` component: ``start`` binds, ``stop`` stops accepting, flushes and closes."""

    name = "nats"

    def __init__(self, broker: Broker) -> None:
        super().__init__()
        self.broker = broker
        self.router = broker.router
        self.settings = broker.settings.nats
        self.host = broker.settings.host
        self.authenticator = Authenticator(broker.settings.auth)
        self.auth_required = self.authenticator.required
        self.server_id = _server_id()
        self.log = log
        self.connections_by_id: dict[int, NatsConnection] = {}
        self.handshakes = HandshakeGate(
            self.settings.max_unauthenticated_connections, self.settings.max_unauthenticated_per_address
        )
        self.slow_consumers = 0
        self.delivery_errors = 0
        self._last_delivery_error_log = -DELIVERY_ERROR_LOG_INTERVAL_S
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: list[NatsConnection] = []
        self._flush_scheduled = False
        self._stalled: list[NatsConnection] = []
        self._release_handle: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.Task | None = None
        self._info_base: dict[str, Any] = {}
        self._bound: list[tuple[str, int]] = []

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._server = await self._loop.create_server(
                lambda: NatsConnection(self), self.host, self.settings.port, backlog=1024
            )
        except OSError as exc:  # name the address: "address already in use on 0.0.0.0:4222"
            raise OSError(exc.errno, f"{exc.strerror or exc} on {self.host}:{self.settings.port}") from None
        self._bound = [s.getsockname()[:2] for s in self._server.sockets]
        port = self._bound[0][1]
        info: dict[str, Any] = {
            "server_id": self.server_id,
            "server_name": self.settings.server_name or self.server_id,
            "version": COMPAT_SERVER_VERSION,
            "proto": PROTOCOL_VERSION,
            "go": GO_FIELD,
            "host": self.host,
            "port": port,
            "headers": True,
            "max_payload": self.settings.max_payload_bytes,
        }
        if self.auth_required:
            info["auth_required"] = True
        self._info_base = info
        self._sweeper = self._loop.create_task(self._sweep())

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.release_stalled()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._flush_all()
        connections = list(self.connections_by_id.values())
        for conn in connections:
            conn.close("server shutdown")
        # closing transports still write what they hold; give that a moment, then cut the rest
        deadline = time.monotonic() + STOP_DRAIN_S
        while time.monotonic() < deadline and any(_unsent(c) for c in connections):
            await asyncio.sleep(0.01)
        for conn in connections:
            if _unsent(conn):
                conn.transport.abort()  # type: ignore[union-attr]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), STOP_DRAIN_S)
        self._server = None

    def addresses(self) -> list[tuple[str, int]]:
        return list(self._bound)

    # -- connections ---------------------------------------------------------------------------

    def next_client_id(self) -> int:
        return self.router.new_client_id()

    def may_subscribe_agent_subject(self, user: str | None, subject: str) -> bool:
        """An agent's serve subjects are its owner's alone; True when the agent API is not built."""
        agent_api = getattr(self.broker, "agent_api", None)
        return agent_api is None or agent_api.may_subscribe(user, subject)

    def info_frame(self, conn: NatsConnection) -> bytes:
        return encoder.info({**self._info_base, "client_id": conn.client_id, "client_ip": conn.ip})

    def register(self, conn: NatsConnection) -> bool:
        """Admit a new connection; False when the server is at ``max_connections``."""
        if len(self.connections_by_id) >= self.settings.max_connections:
            return False
        self.connections_by_id[conn.client_id] = conn
        self.count_opened()
        return True

    def unregister(self, conn: NatsConnection) -> None:
        if self.connections_by_id.pop(conn.client_id, None) is not None:
            self.count_closed(conn)

    def open_clients(self) -> Iterable[NatsConnection]:
        return self.connections_by_id.values()

    def delivery_failed(self, subject: str) -> None:
        """An in-process subscriber raised while a client's message was delivered to it.

        Counted always, logged with its traceback at most once per ``DELIVERY_ERROR_LOG_INTERVAL_S``.
        """
        self.delivery_errors += 1
        now = time.monotonic()
        if now - self._last_delivery_error_log >= DELIVERY_ERROR_LOG_INTERVAL_S:
            self._last_delivery_error_log = now
            log.exception("delivery of a message on %s failed (%d so far)", subject, self.delivery_errors)

    def call_soon(self, fn: Any, *args: Any) -> None:
        """Run ``fn`` on the next loop tick (a connection yielding its turn to the others)."""
        assert self._loop is not None
        self._loop.call_soon(fn, *args)

    # -- output: one write per connection per loop tick ------------------------------------------

    def schedule_flush(self, conn: NatsConnection) -> None:
        conn.dirty = True
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            if conn.dirty:
                conn.flush()

    # -- stalled publishers (back-pressure for readers that are behind) -------------------------

    def add_stalled(self, conn: NatsConnection) -> None:
        self._stalled.append(conn)
        if self._release_handle is None:
            assert self._loop is not None
            self._release_handle = self._loop.call_later(STALL_MAX_S, self.release_stalled)

    def release_stalled(self) -> None:
        if self._release_handle is not None:
            self._release_handle.cancel()
            self._release_handle = None
        stalled, self._stalled = self._stalled, []
        for conn in stalled:
            conn.unstall()

    # -- the idle sweep ------------------------------------------------------------------------

    async def _sweep(self) -> None:
        interval = min(self.settings.ping_interval_s, self.settings.auth_timeout_s / 2, SWEEP_INTERVAL_MAX_S)
        auth_timeout = self.settings.auth_timeout_s
        ping_interval = self.settings.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            wall = time.time()
            for conn in list(self.connections_by_id.values()):
                if conn.closed:
                    continue
                if not conn.connect_received:  # with or without auth, as nats-server does
                    if wall - conn.start_time > auth_timeout:
                        conn.fail(errors.AUTHENTICATION_TIMEOUT)
                    continue
                if now >= conn.next_ping_at:
                    conn.next_ping_at = now + ping_interval
                    conn.ping(now)

    # -- introspection (connz / subsz) -----------------------------------------------------------

    def connections(self) -> list[dict[str, Any]]:
        return [conn.info() for conn in self.connections_by_id.values()]

    def subscriptions(self) -> list[dict[str, Any]]:
        out = []
        for conn in self.connections_by_id.values():
            for sub in conn.subs.values():
                out.append(_subscription_info(sub))
        return out


def _unsent(conn: NatsConnection) -> int:
    transport = conn.transport
    return transport.get_write_buffer_size() if transport is not None else 0


def _subscription_info(sub: NatsSubscription) -> dict[str, Any]:
    return {
        "cid": sub.conn.client_id,
        "subject": sub.subject,
        "queue": sub.queue,
        "sid": sub.sid,
        "msgs": sub.delivered,
        "max": sub.max_msgs,
    }
