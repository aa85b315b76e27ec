"""``GET /api/v1/connections``: open client connections of every protocol, like nats-server's connz.

Each listener that offers ``connections()`` contributes; figures are read from the connection objects.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.dependencies import BrokerDep
from api.limits import PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, paginate

router = APIRouter(prefix="/connections", tags=["operations"])

_FIELDS = (
    "cid", "ip", "port", "name", "lang", "version", "user", "subscriptions", "in_msgs", "out_msgs",
    "in_bytes", "out_bytes", "pending_bytes", "start_ms", "rtt_ms",
)  # fmt: skip


class ConnectionInfo(BaseModel):
    """One client connection; protocol-specific extras (an MQTT client id, ...) are kept as sent."""

    model_config = ConfigDict(extra="allow")

    protocol: str
    cid: int = Field(description="the broker-wide client id")
    ip: str | None = None
    port: int | None = None
    name: str | None = None
    lang: str | None = None
    version: str | None = None
    user: str | None = None
    subscriptions: int = 0
    in_msgs: int = 0
    out_msgs: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    pending_bytes: int = 0
    start_ms: int | None = None
    rtt_ms: float | None = None


def _as_dict(entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict):
        data = dict(entry)
    elif hasattr(entry, "model_dump"):
        data = entry.model_dump()
    else:
        data = {name: getattr(entry, name) for name in _FIELDS if hasattr(entry, name)}
    # front-ends report times in seconds; the API speaks milliseconds
    start_s = data.pop("start", None)
    if isinstance(start_s, int | float) and "start_ms" not in data:
        data["start_ms"] = int(start_s * 1000)
    rtt_s = data.pop("rtt_s", None)
    if isinstance(rtt_s, int | float) and "rtt_ms" not in data:
        data["rtt_ms"] = round(rtt_s * 1000, 3)
    return data


def all_connections(broker: Any) -> list[ConnectionInfo]:
    out: list[ConnectionInfo] = []
    for component in broker.components:
        listing = getattr(component, "connections", None)
        if not callable(listing):
            continue
        for entry in listing():
            data = _as_dict(entry)
            data.setdefault("protocol", component.name)
            out.append(ConnectionInfo.model_validate(data))
    return out


@router.get("", response_model=Page[ConnectionInfo], summary="open connections, all protocols")
async def list_connections(
    broker: BrokerDep,
    protocol: str | None = Query(None, max_length=32, description="only this protocol (nats, mqtt, ...)"),
    limit: Limit = PAGE_LIMIT_DEFAULT,
    cursor: CursorParam = None,
) -> Page[ConnectionInfo]:
    items = [c for c in all_connections(broker) if protocol is None or c.protocol == protocol]
    page, next_cursor = paginate(items, lambda c: [c.protocol, c.cid], limit, cursor)
    return Page[ConnectionInfo](items=page, next_cursor=next_cursor)
