"""The NATS header block (``NATS/1.0\\r\\nKey: value\\r\\n\\r\\n``) as bytes and as a dict.

mq9 returns the raw block a message was sent with; this module reads it back without nats-py.
"""

from __future__ import annotations

HEADER_LINE = b"NATS/1.0"


def encode_headers(headers: dict[str, str]) -> bytes:
    """``{"k": "v"}`` -> ``b"NATS/1.0\\r\\nk: v\\r\\n\\r\\n"``."""
    lines = [HEADER_LINE] + [f"{k}: {v}".encode() for k, v in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def decode_headers(block: bytes | None) -> dict[str, str]:
    """The headers of a block, first value of each key, keys as sent; ``{}`` for none."""
    out: dict[str, str] = {}
    if not block:
        return out
    for line in block.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if not sep or not key.strip():
            continue
        name = key.decode("utf-8", "replace").strip()
        out.setdefault(name, value.decode("utf-8", "replace").strip())
    return out
