"""``/api/v1/mailboxes``: mq9 mailboxes and their messages (send, fetch, ack, query, delete).

Inspection reads the mailbox store directly; commands run through the mq9 service in process, for
the caller's user: another user's agent mailbox is 403 here as over NATS, and lists leave it out.
"""

from __future__ import annotations

import base64
import time
from bisect import bisect_left
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field, model_validator

from api import mq9_calls
from api.dependencies import Mq9Dep
from api.limits import MAILBOX_SCAN_MAX_RECORDS, PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, paginate
from api.problems import BAD_PAYLOAD_CHOICE, NO_MAILBOX, Problem, ProblemError
from robustmq.agents.mq9.mailboxes import GROUP_PREFIX, MAX_ADDRESS_CHARS
from robustmq.headers import decode_headers, encode_headers

router = APIRouter(prefix="/mailboxes", tags=["mailboxes"])

Service = Mq9Dep
Address = Annotated[str, Path(min_length=1, max_length=MAX_ADDRESS_CHARS, description="the mail address")]
Priority = Literal["critical", "urgent", "normal"]
U32_MAX = 2**32 - 1
U63_MAX = 2**63 - 1
HEADER_TEXT = r"^[^\r\n:]*$"
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


class MailboxCreate(BaseModel):
    name: str | None = Field(
        None, max_length=MAX_ADDRESS_CHARS, description="the address (a-z, 0-9, dots); random when omitted"
    )
    ttl_s: int | None = Field(None, ge=0, le=U63_MAX, description="lifetime in seconds; 0 = forever")
    desc: str = Field("", max_length=4096)


class MailboxInfo(BaseModel):
    address: str
    desc: str
    ttl_s: int
    create_time_s: int
    expires_at_s: int | None = Field(description="null when the mailbox never expires")


class GroupState(BaseModel):
    name: str
    position: int = Field(description="the next msg_id the group will fetch (last acked + 1)")
    lag: int = Field(description="messages at or after the position")


class MailboxDetail(MailboxInfo):
    depth: int = Field(description="messages a fetch could return now")
    depth_by_priority: dict[Priority, int]
    depth_exact: bool = Field(description="false when the count stopped at the scan limit")
    next_msg_id: int
    groups: list[GroupState]


class SendRequest(BaseModel):
    payload: str | None = Field(None, description="the message as text")
    payload_base64: str | None = Field(None, description="the message as base64 (instead of payload)")
    priority: Priority = "normal"
    ttl_s: int | None = Field(None, ge=1, le=U32_MAX, description="the message expires after this long")
    delay_s: int | None = Field(None, ge=1, le=U32_MAX, description="hold the message this long first")
    key: str | None = Field(None, min_length=1, max_length=1024, pattern=HEADER_TEXT)
    tags: list[Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\r\n,]*$")]] = Field(
        default_factory=list, max_length=64
    )
    headers: list[
        tuple[
            Annotated[str, Field(min_length=1, pattern=HEADER_TEXT)],
            Annotated[str, Field(pattern=r"^[^\r\n]*$")],
        ]
    ] = Field(default_factory=list, max_length=64, description="extra headers, kept with the message")

    @model_validator(mode="after")
    def _one_payload(self) -> SendRequest:
        if (self.payload is None) == (self.payload_base64 is None):
            raise ValueError(BAD_PAYLOAD_CHOICE)
        return self


class SendResult(BaseModel):
    msg_id: int = Field(description="the message's id; -1 while a delayed message is held")


class FetchConfig(BaseModel):
    num_msgs: int = Field(100, ge=0, le=U32_MAX)
    max_wait_ms: int = Field(500, ge=0, le=60_000)


class FetchRequest(BaseModel):
    group_name: str | None = Field(None, min_length=1, max_length=256)
    deliver: Literal["earliest", "latest", "from_time", "from_id"] = "latest"
    from_time: int | None = Field(None, ge=0, le=U63_MAX)
    from_id: int | None = Field(None, ge=0, le=U63_MAX)
    force_deliver: bool = False
    config: FetchConfig = Field(default_factory=FetchConfig)


class AckRequest(BaseModel):
    group_name: str = Field(min_length=1, max_length=256)
    msg_id: int = Field(ge=0, le=U63_MAX)


class MailboxMessage(BaseModel):
    msg_id: int
    payload: str
    priority: str
    headers: list[tuple[str, str]]
    create_time: int = Field(description="seconds")


class MessageList(BaseModel):
    messages: list[MailboxMessage]


class Acked(BaseModel):
    group_name: str
    msg_id: int


class Deleted(BaseModel):
    deleted: bool


def _info(box: Any) -> MailboxInfo:
    return MailboxInfo(
        address=box.address,
        desc=box.desc,
        ttl_s=box.ttl,
        create_time_s=box.create_time,
        expires_at_s=box.create_time + box.ttl if box.ttl else None,
    )


def _live(service: Any, address: str) -> Any:
    box = service.mailboxes.get(address)
    if box is None:
        raise ProblemError(404, NO_MAILBOX.format(address=address))
    return box


def _messages(reply: dict[str, Any]) -> MessageList:
    out = []
    for m in reply.get("messages") or ():
        raw = m.get("header")
        out.append(
            MailboxMessage(
                msg_id=m["msg_id"],
                payload=m.get("payload", ""),
                priority=m.get("priority", "normal"),
                headers=decode_headers(bytes(raw)) if raw else [],
                create_time=m.get("create_time", 0),
            )
        )
    return MessageList(messages=out)


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
    reply = await mq9_calls.command(request, "MAILBOX.CREATE", orjson.dumps(command))
    return _info(_live(service, reply["mail_address"]))


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
    return Page[MailboxInfo](items=[_info(b) for b in page], next_cursor=next_cursor)


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
        **_info(box).model_dump(),
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
            raise ProblemError(400, BAD_PAYLOAD_CHOICE) from None
    items: list[tuple[str, str]] = [("mq9-priority", body.priority)]
    if body.ttl_s:
        items.append(("mq9-ttl", str(body.ttl_s)))
    if body.delay_s:
        items.append(("mq9-delay", str(body.delay_s)))
    if body.key is not None:
        items.append(("mq9-key", body.key))
    if body.tags:
        items.append(("mq9-tags", ",".join(body.tags)))
    items.extend(body.headers)
    reply = await mq9_calls.command(request, f"MSG.SEND.{address}", payload, encode_headers(items))
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
    reply = await mq9_calls.command(
        request, f"MSG.FETCH.{address}", orjson.dumps(body.model_dump(exclude_none=True)), timeout_s=timeout_s
    )
    return _messages(reply)


@router.post(
    "/{address}/ack",
    response_model=Acked,
    summary="acknowledge up to a msg_id for a group",
    responses=_problems(403, 404, 503, 504),
)
async def ack_messages(address: Address, body: AckRequest, request: Request, service: Service) -> Acked:
    command = {"group_name": body.group_name, "mail_address": address, "msg_id": body.msg_id}
    await mq9_calls.command(request, f"MSG.ACK.{address}", orjson.dumps(command))
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
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> MessageList:
    mq9_calls.readable_mailbox(request, service, address)
    command: dict[str, Any] = {"limit": limit}
    if key is not None:
        command["key"] = key
    if tags:
        command["tags"] = tags
    if since is not None:
        command["since"] = since
    reply = await mq9_calls.command(request, f"MSG.QUERY.{address}", orjson.dumps(command))
    return _messages(reply)


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
    await mq9_calls.command(request, f"MSG.DELETE.{address}.{msg_id}")
    return Deleted(deleted=True)
