"""``/api/v1/mailboxes``: mq9 mailboxes and their messages (send, fetch, ack, query, delete).

Inspection reads the mailbox store directly; commands run through the mq9 service in process, for
the caller's user: another user's agent mailbox is 403 here as over NATS, and lists leave it out.
The request and reply models are mq9's own (``robustmq.agents.mq9.models``).
"""

from __future__ import annotations

import base64
import time
from bisect import bisect_left
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from api import mq9_calls
from api.dependencies import Mq9Dep
from api.limits import MAILBOX_SCAN_MAX_RECORDS, PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, paginate
from api.problems import NO_MAILBOX, Problem, ProblemError
from robustmq.agents.mq9 import Mq9Service
from robustmq.agents.mq9.mailboxes import (
    GROUP_PREFIX,
    MAX_ADDRESS_CHARS,
    QUERY_DEFAULT_LIMIT,
    QUERY_MAX_LIMIT,
    Mailbox,
)
from robustmq.agents.mq9.models import (
    PAYLOAD_CHOICE,
    U63_MAX,
    Acked,
    AckRequest,
    Deleted,
    FetchRequest,
    GroupState,
    MailboxCreate,
    MailboxDetail,
    MailboxInfo,
    MessageList,
    SendRequest,
    SendResult,
)
from robustmq.headers import encode_headers

router = APIRouter(prefix="/mailboxes", tags=["mailboxes"])

Service = Mq9Dep
Address = Annotated[str, Path(min_length=1, max_length=MAX_ADDRESS_CHARS, description="the mail address")]
FETCH_ANSWER_MARGIN_S = 2.0


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        403: "another user's mailbox, or a subject the user may not use",
        404: "no such mailbox",
        409: "the mailbox exists",
        503: "mq9 is not running",
        504: "no answer",
    }
    return {code: {"model": Problem, "description": texts[code]} for code in codes}


def _live(service: Mq9Service, address: str) -> Mailbox:
    box = service.mailboxes.get(address)
    if box is None:
        raise ProblemError(404, NO_MAILBOX.format(address=address))
    return box


@router.post(
    "",
    status_code=201,
    response_model=MailboxInfo,
    summary="create a mailbox",
    responses=_problems(409, 503, 504),
)
async def create_mailbox(body: MailboxCreate, request: Request, service: Service) -> MailboxInfo:
    command: dict[str, Any] = {"desc": body.desc}
    if body.name is not None:
        command["name"] = body.name
    if body.ttl_s is not None:
        command["ttl"] = body.ttl_s
    reply = await mq9_calls.command(request, service, "MAILBOX.CREATE", orjson.dumps(command))
    return MailboxInfo.of(_live(service, reply["mail_address"]))


@router.get("", response_model=Page[MailboxInfo], summary="list mailboxes")
async def list_mailboxes(
    request: Request, service: Service, limit: Limit = PAGE_LIMIT_DEFAULT, cursor: CursorParam = None
) -> Page[MailboxInfo]:
    now = time.time()
    boxes = [
        b
        for b in list(service.mailboxes.mailboxes.values())
        if not b.is_expired(now) and mq9_calls.may_read(request, service, b.address)
    ]
    page, next_cursor = paginate(boxes, lambda b: b.address, limit, cursor)
    return Page[MailboxInfo](items=[MailboxInfo.of(b) for b in page], next_cursor=next_cursor)


@router.get(
    "/{address}",
    response_model=MailboxDetail,
    summary="a mailbox with its depth per priority and its groups' lag",
    responses=_problems(403, 404),
)
async def get_mailbox(address: Address, request: Request, service: Service) -> MailboxDetail:
    box = mq9_calls.readable_mailbox(request, service, address)
    depth = {"critical": 0, "urgent": 0, "normal": 0}
    offsets: list[int] = []
    exact = True
    for record in service.mailboxes.in_order(address):
        if len(offsets) >= MAILBOX_SCAN_MAX_RECORDS:
            exact = False
            break
        depth[record.priority if record.priority in depth else "normal"] += 1
        offsets.append(record.offset)
    store = service.store
    groups = []
    for consumer in store.consumers(address):
        if not consumer.startswith(GROUP_PREFIX):
            continue
        name = consumer[len(GROUP_PREFIX) :]
        position = service.mailboxes.group_position(address, name)
        if position is None:
            continue
        groups.append(
            GroupState(name=name, position=position, lag=len(offsets) - bisect_left(offsets, position))
        )
    return MailboxDetail(
        **MailboxInfo.of(box).model_dump(),
        depth=len(offsets),
        depth_by_priority=depth,
        depth_exact=exact,
        next_msg_id=store.end_offset(address),
        groups=groups,
    )


@router.delete(
    "/{address}", status_code=204, summary="delete a mailbox with its messages", responses=_problems(403, 404)
)
async def delete_mailbox(address: Address, request: Request, service: Service) -> Response:
    mq9_calls.readable_mailbox(request, service, address)  # who may delete its messages may drop it
    service.mailboxes.drop(address)
    return Response(status_code=204)


@router.post(
    "/{address}/messages",
    status_code=201,
    response_model=SendResult,
    summary="send a message (stored durably before the answer)",
    responses=_problems(403, 404, 503, 504),
)
async def send_message(address: Address, body: SendRequest, request: Request, service: Service) -> SendResult:
    if body.payload is not None:
        payload = body.payload.encode()
    else:
        try:
            payload = base64.b64decode(body.payload_base64 or "", validate=True)
        except ValueError:
            raise ProblemError(400, PAYLOAD_CHOICE) from None
    headers = encode_headers(body.mq9_headers())
    reply = await mq9_calls.command(request, service, f"MSG.SEND.{address}", payload, headers)
    return SendResult(msg_id=reply["msg_id"])


@router.post(
    "/{address}/fetch",
    response_model=MessageList,
    summary="fetch messages in priority order (a group's position moves only on ack)",
    responses=_problems(403, 404, 503, 504),
)
async def fetch_messages(
    address: Address, body: FetchRequest, request: Request, service: Service
) -> MessageList:
    mq9_calls.check_reader(request, service, address)
    timeout_s = body.config.max_wait_ms / 1000 + FETCH_ANSWER_MARGIN_S
    command = orjson.dumps(body.model_dump(exclude_none=True))
    reply = await mq9_calls.command(request, service, f"MSG.FETCH.{address}", command, timeout_s=timeout_s)
    return MessageList.of_reply(reply)


@router.post(
    "/{address}/ack",
    response_model=Acked,
    summary="acknowledge up to a msg_id for a group",
    responses=_problems(403, 404, 503, 504),
)
async def ack_messages(address: Address, body: AckRequest, request: Request, service: Service) -> Acked:
    command = {"group_name": body.group_name, "mail_address": address, "msg_id": body.msg_id}
    await mq9_calls.command(request, service, f"MSG.ACK.{address}", orjson.dumps(command))
    return Acked(group_name=body.group_name, msg_id=body.msg_id)


@router.get(
    "/{address}/messages",
    response_model=MessageList,
    summary="query messages by key, tags or time (never moves a group)",
    responses=_problems(403, 404, 503, 504),
)
async def query_messages(
    address: Address,
    request: Request,
    service: Service,
    key: Annotated[str | None, Query(max_length=1024, description="the newest message with this key")] = None,
    tags: Annotated[list[str] | None, Query(description="messages with any of these tags")] = None,
    since: Annotated[int | None, Query(ge=0, le=U63_MAX, description="created at or after (seconds)")] = None,
    limit: Annotated[int, Query(ge=1, le=QUERY_MAX_LIMIT)] = QUERY_DEFAULT_LIMIT,
) -> MessageList:
    mq9_calls.readable_mailbox(request, service, address)
    command: dict[str, Any] = {"limit": limit}
    if key is not None:
        command["key"] = key
    if tags:
        command["tags"] = tags
    if since is not None:
        command["since"] = since
    reply = await mq9_calls.command(request, service, f"MSG.QUERY.{address}", orjson.dumps(command))
    return MessageList.of_reply(reply)


@router.delete(
    "/{address}/messages/{msg_id}",
    response_model=Deleted,
    summary="delete one message",
    responses=_problems(403, 404, 503, 504),
)
async def delete_message(
    address: Address,
    msg_id: Annotated[int, Path(ge=0, le=U63_MAX)],
    request: Request,
    service: Service,
) -> Deleted:
    mq9_calls.readable_mailbox(request, service, address)
    await mq9_calls.command(request, service, f"MSG.DELETE.{address}.{msg_id}")
    return Deleted(deleted=True)
