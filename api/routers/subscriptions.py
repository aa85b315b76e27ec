"""``GET /api/v1/subscriptions``: every interest in the subject router, like nats-server's subsz.

Front-end and in-process subscriptions share one trie, so one listing covers every protocol.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.dependencies import BrokerDep
from api.limits import PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, paginate
from api.problems import BAD_TEST_SUBJECT, ProblemError
from robustmq.subjects import is_valid_publish_subject, subject_matches

router = APIRouter(prefix="/subscriptions", tags=["operations"])

INTERNAL = "internal"


class SubscriptionInfo(BaseModel):
    subject: str
    queue: str | None = None
    protocol: str = Field(description="the owner's protocol, or 'internal' for an in-process service")
    cid: int | None = Field(None, description="the owning connection's client id")
    sid: str | None = Field(None, description="the connection's own id for the subscription")
    msgs: int | None = Field(None, description="messages delivered so far")
    owner: str | None = Field(None, description="the owning service, for in-process subscriptions")


def _describe(sub: Any) -> SubscriptionInfo:
    owner = sub.owner
    protocol = getattr(owner, "protocol", None)
    if isinstance(protocol, str):
        # a connection owns its subscriptions; an MQTT session's outlive its connections
        conn = getattr(owner, "connection", owner)
        cid = getattr(conn, "client_id", None) if conn is not None else None
        sid = getattr(sub, "sid", None)
        if sid is None:
            sid = getattr(sub, "topic_filter", None)
        msgs = getattr(sub, "delivered", None)
        return SubscriptionInfo(
            subject=sub.subject,
            queue=sub.queue,
            protocol=protocol,
            cid=cid if isinstance(cid, int) else None,
            sid=str(sid) if sid is not None else None,
            msgs=msgs if isinstance(msgs, int) else None,
        )
    label = owner if isinstance(owner, str) else getattr(owner, "name", None)
    return SubscriptionInfo(
        subject=sub.subject,
        queue=sub.queue,
        protocol=INTERNAL,
        owner=label if isinstance(label, str) else (type(owner).__name__ if owner is not None else None),
    )


@router.get("", response_model=Page[SubscriptionInfo], summary="subscriptions, all protocols")
async def list_subscriptions(
    broker: BrokerDep,
    protocol: str | None = Query(None, max_length=32, description="only this protocol, or 'internal'"),
    test: str | None = Query(None, max_length=1024, description="only those a publish here would reach"),
    limit: Limit = PAGE_LIMIT_DEFAULT,
    cursor: CursorParam = None,
) -> Page[SubscriptionInfo]:
    if test is not None and not is_valid_publish_subject(test):
        raise ProblemError(400, BAD_TEST_SUBJECT.format(subject=test))
    items = []
    for sub in broker.router.trie.all():
        if test is not None and not subject_matches(sub.subject, test):
            continue
        info = _describe(sub)
        if protocol is None or info.protocol == protocol:
            items.append(info)
    # several identical interests may exist (one connection, two sids): number them to keep keys unique
    numbered = sorted(
        items, key=lambda s: (s.subject, s.queue or "", s.protocol, s.cid or -1, s.sid or "", s.owner or "")
    )
    keyed = list(enumerate(numbered))
    page, next_cursor = paginate(keyed, lambda pair: pair[0], limit, cursor)
    return Page[SubscriptionInfo](items=[s for _, s in page], next_cursor=next_cursor)
