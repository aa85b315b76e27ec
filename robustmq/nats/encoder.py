"""The sans-IO encoder: NATS frames as bytes, for the server side and for test or bench clients.

Reference forms of every frame; the connection's hot path builds MSG frames itself, the same way.
"""

from __future__ import annotations

from typing import Any

import orjson

OK = b"+OK\r\n"
PING = b"PING\r\n"
PONG = b"PONG\r\n"
CRLF = b"\r\n"


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def info(fields: dict[str, Any]) -> bytes:
    """INFO with nats-server's layout: a space before the CRLF."""
    return b"INFO " + orjson.dumps(fields) + b" \r\n"


def err(text: str) -> bytes:
    return b"-ERR '" + _b(text) + b"'\r\n"


def msg(subject: str, sid: str, reply: str | None, payload: bytes) -> bytes:
    head = (
        f"MSG {subject} {sid} {reply} {len(payload)}\r\n"
        if reply
        else f"MSG {subject} {sid} {len(payload)}\r\n"
    )
    return _b(head) + payload + CRLF


def hmsg(subject: str, sid: str, reply: str | None, headers: bytes, payload: bytes) -> bytes:
    hlen = len(headers)
    total = hlen + len(payload)
    mid = f"{reply} " if reply else ""
    return _b(f"HMSG {subject} {sid} {mid}{hlen} {total}\r\n") + headers + payload + CRLF


def no_responders_headers(subject: str) -> bytes:
    """The status block nats-server sends to a requester when nobody serves ``subject``."""
    return b"NATS/1.0 503\r\nNats-Subject: " + _b(subject) + b"\r\n\r\n"


# -- the client side (tests, load generators) ----------------------------------------------------


def connect(options: dict[str, Any]) -> bytes:
    return b"CONNECT " + orjson.dumps(options) + CRLF


def pub(subject: str, payload: bytes, reply: str | None = None) -> bytes:
    mid = f" {reply}" if reply else ""
    return _b(f"PUB {subject}{mid} {len(payload)}\r\n") + payload + CRLF


def hpub(subject: str, headers: bytes, payload: bytes, reply: str | None = None) -> bytes:
    mid = f" {reply}" if reply else ""
    return (
        _b(f"HPUB {subject}{mid} {len(headers)} {len(headers) + len(payload)}\r\n") + headers + payload + CRLF
    )


def sub(subject: str, sid: str, queue: str | None = None) -> bytes:
    mid = f" {queue}" if queue else ""
    return _b(f"SUB {subject}{mid} {sid}\r\n")


def unsub(sid: str, max_msgs: int = 0) -> bytes:
    return _b(f"UNSUB {sid} {max_msgs}\r\n" if max_msgs else f"UNSUB {sid}\r\n")
