"""The Kafka wire codec, sans-IO: bytes in, ``Request`` objects out; responses in, bytes out.

Frames are ``int32 size | header | body``. Headers and bodies are decoded and encoded with the
schemas of ``kafka.protocol`` (generated from Kafka's own JSON message definitions), so no request
layout is written by hand here. Whatever the peer sends, only ``KafkaCodecError`` leaves this module.
"""

from __future__ import annotations

import importlib
import io
import struct
from dataclasses import dataclass
from typing import Any

from kafka.protocol.api_header import RequestHeader
from kafka.protocol.api_message import ApiMessage

from robustmq.bridges.kafka.errors import MalformedRequest, RequestTooLarge, UnsupportedRequest

_SIZE = struct.Struct(">i")
_KEY_VERSION_CORRELATION = struct.Struct(">hhi")

# api key -> module holding its request and response classes (kafka.protocol's layout)
_MODULES = (
    "producer.produce", "consumer.fetch", "consumer.offsets", "metadata.metadata", "consumer.group",
    "metadata.find_coordinator", "admin.groups", "sasl", "metadata.api_versions", "admin.topics",
    "producer.transaction", "admin.configs", "admin.cluster",
)  # fmt: skip


def _message_classes() -> tuple[dict[int, type[ApiMessage]], dict[int, type[ApiMessage]]]:
    """Request and response classes by API key, found once in kafka.protocol."""
    requests: dict[int, type[ApiMessage]] = {}
    responses: dict[int, type[ApiMessage]] = {}
    for name in _MODULES:
        module = importlib.import_module(f"kafka.protocol.{name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, ApiMessage)
                and getattr(value, "_class_version", 1) is None
                and getattr(value, "_json", None)
            ):
                table = requests if value.is_request() else responses
                table.setdefault(value.API_KEY, value)
    return requests, responses


REQUEST_CLASSES, RESPONSE_CLASSES = _message_classes()


@dataclass(slots=True)
class Request:
    """One decoded request: its header fields and its body (a kafka.protocol message)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any
    size: int  # frame bytes, for the connection's counters


class KafkaDecoder:
    """Cuts the byte stream into frames and decodes each; ``supported`` is the ApiVersions table."""

    def __init__(self, max_request_bytes: int, supported: dict[int, tuple[int, int]]) -> None:
        self.max_request_bytes = max_request_bytes
        self.supported = supported
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def next_request(self) -> Request | None:
        """The next complete request, or None when more bytes are needed.

        Raises ``RequestTooLarge``, ``MalformedRequest`` or ``UnsupportedRequest`` (the frame is
        consumed, so after an ``UnsupportedRequest`` decoding may go on).
        """
        buf = self._buf
        if len(buf) < 4:
            return None
        (size,) = _SIZE.unpack_from(buf, 0)
        if size < 0 or size > self.max_request_bytes:
            raise RequestTooLarge(f"request of {size} bytes (limit {self.max_request_bytes})")
        if len(buf) < 4 + size:
            return None
        frame = bytes(buf[4 : 4 + size])
        del buf[: 4 + size]
        return decode_request(frame, self.supported)


def decode_request(frame: bytes, supported: dict[int, tuple[int, int]]) -> Request:
    """One frame (without its size prefix) as a ``Request``."""
    if len(frame) < _KEY_VERSION_CORRELATION.size:
        raise MalformedRequest("request shorter than its header")
    api_key, api_version, correlation_id = _KEY_VERSION_CORRELATION.unpack_from(frame, 0)
    versions = supported.get(api_key)
    cls = REQUEST_CLASSES.get(api_key)
    if versions is None or cls is None or not versions[0] <= api_version <= versions[1]:
        raise UnsupportedRequest(api_key, api_version, correlation_id)
    try:
        data = io.BytesIO(frame)
        header = RequestHeader.decode(data, flexible=cls.flexible_version_q(api_version))
        pos = data.tell()
        body = cls.decode(memoryview(frame)[pos:], version=api_version)
    except Exception as exc:  # the schemas raise anything from struct.error to ValueError
        raise MalformedRequest(f"cannot decode api key {api_key} v{api_version}: {exc!r}") from None
    return Request(api_key, api_version, correlation_id, header.client_id, body, len(frame) + 4)


def response_class(api_key: int) -> type[ApiMessage]:
    return RESPONSE_CLASSES[api_key]


def encode_response(request: Request, response: ApiMessage) -> bytes:
    """The framed response to ``request`` (its correlation id, its version's header format)."""
    response.with_header(correlation_id=request.correlation_id)
    return bytes(response.encode(header=True, framed=True))


def unsupported_api_versions(correlation_id: int, supported: dict[int, tuple[int, int]]) -> bytes:
    """The ApiVersions v0 answer to a version we do not serve: UNSUPPORTED_VERSION plus our table,
    so the client retries with a version it finds there (KIP-511)."""
    from robustmq.bridges.kafka.errors import UNSUPPORTED_VERSION

    cls = RESPONSE_CLASSES[18]
    body = cls(
        version=0,
        error_code=UNSUPPORTED_VERSION,
        api_keys=[
            cls.ApiVersion(api_key=k, min_version=lo, max_version=hi) for k, (lo, hi) in supported.items()
        ],
    )
    body.with_header(correlation_id=correlation_id)
    return bytes(body.encode(header=True, framed=True))
