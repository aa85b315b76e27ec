"""MQTT over WebSocket (RFC 6455, subprotocol ``mqtt``): a small frame codec and a Protocol adapter.

The adapter does the HTTP upgrade, unwraps binary frames into the MQTT connection's
``data_received`` and wraps its writes into frames, so the MQTT connection does not know it is on WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

from robustmq.admission import HandshakeGate, HandshakeTicket, peer_address

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE_BYTES = 16 * 1024
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class WebSocketError(Exception):
    """The peer broke RFC 6455 (or sent MQTT in a text frame)."""


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def parse_handshake(data: bytes) -> tuple[dict[str, str], str] | None:
    """``(headers, path)`` of a complete upgrade request, or None when more bytes are needed."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        if len(data) > MAX_HANDSHAKE_BYTES:
            raise WebSocketError("handshake too large")
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) < 3 or parts[0] != "GET":
        raise WebSocketError("not a WebSocket upgrade request")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "websocket" not in headers.get("upgrade", "").lower() or "sec-websocket-key" not in headers:
        raise WebSocketError("not a WebSocket upgrade request")
    return headers, parts[1]


def handshake_response(headers: dict[str, str]) -> bytes:
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}",
    ]
    for name in ("mqtt", "mqttv3.1"):
        if name in offered:
            lines.append(f"Sec-WebSocket-Protocol: {name}")
            break
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def parse_frames(buf: bytes, max_frame_bytes: int) -> tuple[list[tuple[int, bytes]], int]:
    """Complete frames in ``buf`` as ``(opcode, unmasked payload)`` and the bytes consumed."""
    frames = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        if b0 & 0x70:
            raise WebSocketError("reserved bits set")
        if not b1 & 0x80:
            raise WebSocketError("client frame not masked")
        length = b1 & 0x7F
        p = pos + 2
        if length == 126:
            if n - p < 2:
                break
            length = int.from_bytes(buf[p : p + 2], "big")
            p += 2
        elif length == 127:
            if n - p < 8:
                break
            length = int.from_bytes(buf[p : p + 8], "big")
            p += 8
        if length > max_frame_bytes:
            raise WebSocketError("frame too large")
        if n - p < 4 + length:
            break
        mask = buf[p : p + 4]
        p += 4
        frames.append((b0 & 0x0F, _unmask(buf[p : p + length], mask)))
        pos = p + length
    return frames, pos


def encode_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """A server frame (FIN set, not masked)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


class _FramedTransport:
    """What the MQTT connection sees as its transport: writes become binary frames."""

    def __init__(self, outer: WebSocketTransportProtocol) -> None:
        self._outer = outer

    def write(self, data: bytes) -> None:
        self._outer.transport.write(encode_frame(data))

    def is_closing(self) -> bool:
        return self._outer.transport.is_closing()

    def close(self) -> None:
        t = self._outer.transport
        if not t.is_closing():
            t.write(encode_frame(b"\x03\xe8", OP_CLOSE))
            t.close()

    def abort(self) -> None:
        self._outer.transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._outer.transport.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._outer.transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._outer.transport.pause_reading()

    def resume_reading(self) -> None:
        self._outer.transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._outer.transport.get_write_buffer_size()


class WebSocketTransportProtocol(asyncio.Protocol):
    """Carries one MQTT connection (``inner``) over a WebSocket.

    The upgrade must finish within ``upgrade_timeout_s``; until the MQTT CONNECT is accepted the
    socket holds a ticket of ``gate``, which the inner connection takes over at the upgrade.
    """

    def __init__(
        self,
        inner: asyncio.Protocol,
        max_frame_bytes: int,
        gate: HandshakeGate | None = None,
        upgrade_timeout_s: float | None = None,
    ) -> None:
        self.inner = inner
        self.transport: Any = None
        self._buf = b""
        self._open = False
        self._max_frame_bytes = max_frame_bytes
        self._gate = gate
        self._upgrade_timeout_s = upgrade_timeout_s
        self._ticket: HandshakeTicket | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self._gate is not None:
            self._ticket = self._gate.admit(peer_address(transport))
            if self._ticket is None:  # too many sockets still in their handshake: refuse at once
                transport.abort()
                return
        if self._upgrade_timeout_s is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._upgrade_timeout_s, self._upgrade_timeout)

    def _upgrade_timeout(self) -> None:
        self._timer = None
        if not self._open:
            self.transport.abort()  # a half-open upgrade gets no more of our descriptors

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        try:
            if not self._open:
                parsed = parse_handshake(buf)
                if parsed is None:
                    self._buf = buf
                    return
                headers, _ = parsed
                self.transport.write(handshake_response(headers))
                self._open = True
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                buf = buf.partition(b"\r\n\r\n")[2]
                if self._ticket is not None:  # the MQTT connection holds it until CONNECT
                    self.inner.handshake, self._ticket = self._ticket, None  # type: ignore[attr-defined]
                self.inner.connection_made(_FramedTransport(self))
            frames, used = parse_frames(buf, self._max_frame_bytes)
        except WebSocketError:
            self.transport.close()
            return
        self._buf = buf[used:]
        chunks = []
        for opcode, payload in frames:
            if opcode in (OP_BINARY, OP_CONTINUATION):
                chunks.append(payload)
            elif opcode == OP_PING:
                self.transport.write(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self.transport.write(encode_frame(payload[:2], OP_CLOSE))
                self.transport.close()
                break
            elif opcode == OP_TEXT:
                self.transport.close()  # MQTT over WebSocket is binary only
                break
        if chunks:
            self.inner.data_received(b"".join(chunks))

    def pause_writing(self) -> None:
        if self._open:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._open:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None
        if self._open:
            self.inner.connection_lost(exc)
