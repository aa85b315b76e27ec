"""``GET /api/v1/server``: what this broker is, like nats-server's varz.

Version, listeners, limits and load, for dashboards and support.
"""

from __future__ import annotations

import os
import platform
import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.dependencies import BrokerDep
from robustmq import __version__

router = APIRouter(prefix="/server", tags=["operations"])


class Listener(BaseModel):
    name: str = Field(description="the part listening: nats, mqtt, http, ...")
    host: str
    port: int


class ServerInfo(BaseModel):
    server_name: str
    version: str
    python: str
    pid: int
    listeners: list[Listener]
    components: list[str]
    started_at_ms: int
    uptime_s: float
    connections: int
    subscriptions: int
    auth_required: bool
    max_payload_bytes: int
    max_connections: int
    data_dir: str


@router.get("", response_model=ServerInfo, summary="server identity, listeners, limits and load")
async def server_info(request: Request, broker: BrokerDep) -> ServerInfo:
    settings = broker.settings
    started_at: float = request.app.state.started_at
    connections = 0
    for component in broker.components:
        listing = getattr(component, "connections", None)
        if callable(listing):
            connections += len(listing())
    return ServerInfo(
        server_name=settings.nats.server_name or platform.node(),
        version=__version__,
        python=platform.python_version(),
        pid=os.getpid(),
        listeners=[Listener(name=n, host=h, port=p) for n, h, p in broker.bound_addresses()],
        components=[c.name for c in broker.components],
        started_at_ms=int(started_at * 1000),
        uptime_s=round(time.time() - started_at, 3),
        connections=connections,
        subscriptions=broker.router.trie.count,
        auth_required=request.app.state.access.enabled,
        max_payload_bytes=settings.nats.max_payload_bytes,
        max_connections=settings.nats.max_connections,
        data_dir=str(settings.store.data_dir),
    )
