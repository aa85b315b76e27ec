"""The ``mq9-sender`` header: who sent a mailbox message, in the broker's words, not the client's.

With authentication on, every message that lands in a mailbox (mq9 SEND, legacy SEND, or a publish
on the address from any protocol) carries the publisher's user and no client-written value.
"""

from __future__ import annotations

SENDER_HEADER = "mq9-sender"

_HEADER_LINE = b"NATS/1.0"
_CRLF = b"\r\n"
_NAME = SENDER_HEADER.encode()


def _is_sender_line(line: bytes) -> bool:
    name, sep, _ = line.partition(b":")
    return bool(sep) and name.strip().lower() == _NAME


def stamp_sender(block: bytes | None, user: str | None) -> bytes | None:
    """``block`` without any ``mq9-sender`` line, plus ``mq9-sender: <user>`` when there is a user.

    Every other line (the status line, the order of the other headers, repeated keys) is kept as
    it was. ``None`` stays ``None`` when there is no user to stamp.
    """
    if block and _NAME in block.lower():
        lines = [line for line in block.split(_CRLF) if line and not _is_sender_line(line)]
        head, kept = (lines[0], lines[1:]) if lines else (_HEADER_LINE, [])
    elif user is None:
        return block
    elif block:
        head, _, rest = block.partition(_CRLF)
        kept = [line for line in rest.split(_CRLF) if line]
    else:
        head, kept = _HEADER_LINE, []
    if user is not None:
        kept.append(_NAME + b": " + user.encode())
    if not kept and head == _HEADER_LINE:
        return None
    return _CRLF.join([head, *kept]) + _CRLF + _CRLF
