"""Message headers as one key/value list shared by every protocol.

On the router headers travel as a NATS header block, the cheapest form for the NATS core;
MQTT 5 user properties, Kafka record headers and AMQP headers convert with these two functions.
Order and repeated keys are kept.
"""

from __future__ import annotations

HEADER_LINE = b"NATS/1.0"


def encode_headers(items: list[tuple[str, str]], status: str = "") -> bytes | None:
    """``[("k", "v"), ...]`` -> ``b"NATS/1.0\\r\\nk: v\\r\\n\\r\\n"``; ``None`` when there is nothing."""
    if not items and not status:
        return None
    head = HEADER_LINE + (b" " + status.encode() if status else b"")
    lines = [head]
    for key, value in items:
        lines.append(f"{key}: {value}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def decode_headers(block: bytes | None) -> list[tuple[str, str]]:
    """The key/value list of a NATS header block (the status line is not included)."""
    if not block:
        return []
    out: list[tuple[str, str]] = []
    for line in block.split(b"\r\n")[1:]:
        if not line:
            continue
        key, sep, value = line.partition(b":")
        if not sep:
            continue
        out.append((key.decode("utf-8", "replace").strip(), value.decode("utf-8", "replace").strip()))
    return out


def header_status(block: bytes | None) -> str:
    """The status code of a header block (``"503"``), or ``""``."""
    if not block:
        return ""
    first = block.split(b"\r\n", 1)[0]
    parts = first.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 else ""


def get_header(block: bytes | None, key: str) -> str | None:
    """The first value of ``key`` (case-insensitive), or ``None``."""
    lowered = key.lower()
    for k, v in decode_headers(block):
        if k.lower() == lowered:
            return v
    return None
