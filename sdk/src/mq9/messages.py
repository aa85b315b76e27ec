"""A mailbox message as FETCH and QUERY return it, and the mq9 send options as headers.

mq9 records are ``{"msg_id", "payload", "priority", "header": [bytes] | null, "create_time"}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mq9.defaults import PRIORITIES
from mq9.headers import decode_headers

Payload = bytes | str | dict | list


@dataclass(frozen=True)
class Message:
    """One stored message. ``payload`` is bytes; ``json()`` decodes it."""

    msg_id: int
    payload: bytes
    priority: str = "normal"
    headers: dict[str, str] = field(default_factory=dict)
    create_time: int = 0
    mailbox: str = ""

    def json(self) -> Any:
        return json.loads(self.payload)

    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    @property
    def key(self) -> str | None:
        return _header(self.headers, "mq9-key")

    @property
    def tags(self) -> list[str]:
        value = _header(self.headers, "mq9-tags") or ""
        return [t.strip() for t in value.split(",") if t.strip()]

    @property
    def sender(self) -> str | None:
        """The user the broker stamped on the message (with authentication on)."""
        return _header(self.headers, "mq9-sender")

    @classmethod
    def from_record(cls, record: dict[str, Any], mailbox: str = "") -> Message:
        payload = record.get("payload")
        if isinstance(payload, str):
            data = payload.encode("utf-8")
        elif isinstance(payload, list):
            data = bytes(payload)
        elif payload is None:
            data = b""
        else:
            data = json.dumps(payload).encode()
        header = record.get("header")
        block = (
            bytes(header)
            if isinstance(header, list)
            else header.encode()
            if isinstance(header, str)
            else None
        )
        return cls(
            msg_id=int(record.get("msg_id", 0)),
            payload=data,
            priority=str(record.get("priority") or "normal"),
            headers=decode_headers(block),
            create_time=int(record.get("create_time") or 0),
            mailbox=mailbox,
        )


def _header(headers: dict[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def encode_payload(payload: Payload) -> bytes:
    """bytes as they are, str as UTF-8, anything else as JSON."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":")).encode()


def send_headers(
    priority: str | None = None,
    ttl: int | None = None,
    delay: int | None = None,
    key: str | None = None,
    tags: Iterable[str] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The ``mq9-*`` headers of a SEND; a bad priority is a ``ValueError`` before anything is sent."""
    headers = dict(extra or {})
    if priority is not None:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
        headers["mq9-priority"] = priority
    if ttl is not None:
        headers["mq9-ttl"] = str(int(ttl))
    if delay is not None:
        headers["mq9-delay"] = str(int(delay))
    if key is not None:
        headers["mq9-key"] = key
    if tags:
        items = [t.strip() for t in tags if t.strip()]
        if any("," in t for t in items):
            raise ValueError("a tag may not contain a comma")
        if items:
            headers["mq9-tags"] = ",".join(items)
    return headers
