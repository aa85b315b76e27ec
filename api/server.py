"""The broker Component serving the control plane: uvicorn inside the broker's own event loop.

It binds its socket itself (clean start errors, real port for port 0); the broker owns signals.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import uvicorn

from api.app import create_app
from api.handshake_guard import guarded_h11_protocol
from api.limits import LISTEN_BACKLOG, SHUTDOWN_GRACE_S
from robustmq.admission import HandshakeGate

if TYPE_CHECKING:
    from robustmq.broker import Broker


def bind_listen_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port``; raises OSError (e.g. port taken)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """``name = "http"``: the REST control plane on ``settings.host``:``settings.http.port``."""

    name = "http"

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.app = create_app(broker)
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._ticker: asyncio.Task[None] | None = None
        http = broker.settings.http
        self.handshakes = HandshakeGate(
            http.max_unauthenticated_connections, http.max_unauthenticated_per_address
        )

    async def start(self) -> None:
        settings = self.broker.settings
        assert settings.http.port is not None
        sock = bind_listen_socket(settings.host, settings.http.port)
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            http=guarded_h11_protocol(self.handshakes, settings.http.request_head_timeout_s),
            ws="none",
            timeout_keep_alive=settings.http.keep_alive_timeout_s,  # type: ignore[arg-type]
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server = server
        self._socket = sock
        # uvicorn's tick refreshes the Date header once a second and notices should_exit
        self._ticker = asyncio.create_task(server.main_loop(), name="http-tick")

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.app.state.closing.set()
        for stream in list(self.app.state.event_streams):
            stream.put_nowait(None)
        server.should_exit = True
        if self._ticker is not None:
            await self._ticker
        await server.shutdown()
        if self._socket is not None:
            self._socket.close()

    def addresses(self) -> list[tuple[str, int]]:
        if self._socket is None:
            return []
        host, port = self._socket.getsockname()[:2]
        return [(host, port)]
