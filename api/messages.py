"""Stored messages as JSON: one shape for stream reads, mailbox fetches and queries.

Payloads are bytes; ``encoding=text`` returns them as UTF-8 (invalid bytes replaced), ``base64`` exactly.
"""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, Field

from robustmq.headers import decode_headers
from robustmq.store import Record

PayloadEncoding = Literal["text", "base64"]


class Message(BaseModel):
    offset: int
    partition: int = 0
    timestamp_ms: int
    subject: str
    key: str | None = None
    priority: str = "normal"
    tags: list[str] = Field(default_factory=list)
    headers: list[tuple[str, str]] = Field(default_factory=list, description="key/value pairs, in order")
    payload: str = Field(description="UTF-8 text or base64, as the encoding parameter asked")
    encoding: PayloadEncoding = "text"
    expires_at_ms: int | None = None
    deliver_after_ms: int | None = None


def message_of(record: Record, encoding: PayloadEncoding = "text") -> Message:
    if encoding == "base64":
        payload = base64.b64encode(record.payload).decode()
    else:
        payload = record.payload.decode("utf-8", "replace")
    return Message(
        offset=record.offset,
        partition=record.partition,
        timestamp_ms=record.timestamp_ms,
        subject=record.subject,
        key=record.key_text,
        priority=record.priority,
        tags=list(record.tags),
        headers=decode_headers(record.headers),
        payload=payload,
        encoding=encoding,
        expires_at_ms=record.expires_at_ms or None,
        deliver_after_ms=record.deliver_after_ms or None,
    )
