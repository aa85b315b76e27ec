"""Mailboxes and their messages as pydantic models: the control plane's requests and replies.

Declared here, beside the mailbox store whose limits and defaults they use, so the REST contract
and mq9 cannot drift apart; ``api/routers/mailboxes.py`` imports them and OpenAPI describes them.
(mq9 itself validates its NATS bodies with the JSON Schemas of ``schemas.py``: RobustMQ's shapes.)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from robustmq.agents.mq9.mailboxes import (
    FETCH_DEFAULT_MAX_WAIT_MS,
    FETCH_DEFAULT_NUM_MSGS,
    FETCH_MAX_WAIT_MS,
    MAX_ADDRESS_CHARS,
    Mailbox,
)
from robustmq.headers import decode_headers

Priority = Literal["critical", "urgent", "normal"]
U32_MAX = 2**32 - 1
U63_MAX = 2**63 - 1
HEADER_TEXT = r"^[^\r\n:]*$"
PAYLOAD_CHOICE = "give the message as exactly one of payload (text) or payload_base64"


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

    @classmethod
    def of(cls, box: Mailbox) -> MailboxInfo:
        return cls(
            address=box.address,
            desc=box.desc,
            ttl_s=box.ttl,
            create_time_s=box.create_time,
            expires_at_s=box.create_time + box.ttl if box.ttl else None,
        )


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
            raise ValueError(PAYLOAD_CHOICE)
        return self

    def mq9_headers(self) -> list[tuple[str, str]]:
        """The ``mq9-*`` headers a NATS client would send for these options, then the extra ones."""
        items: list[tuple[str, str]] = [("mq9-priority", self.priority)]
        if self.ttl_s:
            items.append(("mq9-ttl", str(self.ttl_s)))
        if self.delay_s:
            items.append(("mq9-delay", str(self.delay_s)))
        if self.key is not None:
            items.append(("mq9-key", self.key))
        if self.tags:
            items.append(("mq9-tags", ",".join(self.tags)))
        items.extend(self.headers)
        return items


class SendResult(BaseModel):
    msg_id: int = Field(description="the message's id; -1 while a delayed message is held")


class FetchConfig(BaseModel):
    num_msgs: int = Field(FETCH_DEFAULT_NUM_MSGS, ge=0, le=U32_MAX)
    max_wait_ms: int = Field(FETCH_DEFAULT_MAX_WAIT_MS, ge=0, le=FETCH_MAX_WAIT_MS)


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

    @classmethod
    def of_reply(cls, reply: dict[str, Any]) -> MessageList:
        """The messages of a FETCH or QUERY reply (``record_json`` shapes), headers decoded."""
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
        return cls(messages=out)


class Acked(BaseModel):
    group_name: str
    msg_id: int


class Deleted(BaseModel):
    deleted: bool
