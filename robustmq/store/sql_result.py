"""SQL results as JSON, encoded in the query thread and capped in bytes.

The event loop gets bytes it only has to send: a big result never stalls other clients.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import uuid
from typing import Any

import orjson


def json_value(value: Any) -> Any:
    """A DuckDB value as something JSON can carry (bytes as base64, times as ISO 8601)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def encode_row(row: tuple) -> bytes:
    """One row as a JSON array (the standard library takes integers beyond 64 bits, orjson not)."""
    values = [json_value(v) for v in row]
    try:
        return orjson.dumps(values)
    except TypeError:
        return json.dumps(values, separators=(",", ":")).encode()


class RowEncoder:
    """Accumulates encoded rows until ``max_bytes``; ``full`` says a row did not fit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.parts: list[bytes] = []
        self.size = 2  # the brackets
        self.full = False

    def add(self, row: tuple) -> bool:
        data = encode_row(row)
        if self.size + len(data) + 1 > self.max_bytes:
            self.full = True
            return False
        self.parts.append(data)
        self.size += len(data) + 1
        return True

    def json(self) -> bytes:
        return b"[" + b",".join(self.parts) + b"]"

    def __len__(self) -> int:
        return len(self.parts)
