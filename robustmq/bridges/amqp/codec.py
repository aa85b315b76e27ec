"""The AMQP 0-9-1 wire format without I/O: bytes in, frames and whole messages out; methods in, bytes out.

pamqp decodes and encodes the method frames; the frames that carry messages (Basic.Publish in,
content header and body in, Basic.Deliver, Basic.GetOk and Basic.Return out) take a hand-written
struct path, since they are the hot path and pamqp tops out near 35-40k frames/s. The decoder also
puts a message back together (publish method, header, body frames) per channel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pamqp import base as pamqp_base
from pamqp import commands as C
from pamqp import frame as pamqp_frame

from robustmq.bridges.amqp import errors as E
from robustmq.bridges.amqp.errors import AmqpConnectionError, BadProtocolHeader
from robustmq.bridges.amqp.limits import FRAME_END, FRAME_HEADER_BYTES, FRAME_OVERHEAD_BYTES, PROTOCOL_HEADER

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8

BASIC_CLASS = 60
PUBLISH_METHOD = 40
_PUBLISH_INDEX = (BASIC_CLASS << 16) | PUBLISH_METHOD
_PUBLISH_HEAD = b"\x00\x3c\x00\x28"

_frame_head = struct.Struct(">BHI")
_u16 = struct.Struct(">H")
_u16u16 = struct.Struct(">HH")
_content_head = struct.Struct(">HHQ")
_deliver_tail = struct.Struct(">QB")
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"


@dataclass(slots=True)
class Method:
    """A method frame other than Basic.Publish."""

    channel: int
    method: pamqp_base.Frame


@dataclass(slots=True)
class Message:
    """A whole published message: Basic.Publish, its properties and its body.

    ``raw_properties`` are the property flags and list exactly as received, re-sent as they are
    on delivery; ``properties`` is decoded from them once.
    """

    channel: int
    exchange: str
    routing_key: str
    mandatory: bool
    immediate: bool
    properties: C.Basic.Properties
    raw_properties: bytes
    body: bytes
    refused_size: int = 0  # set when the body was over max_message_bytes (then not kept)


@dataclass(slots=True)
class Heartbeat:
    channel: int


Event = Method | Message | Heartbeat


class _Assembly:
    """A message whose header or body frames are still to come on one channel."""

    __slots__ = ("publish", "size", "properties", "raw", "parts", "have")

    def __init__(self, publish: tuple[str, str, bool, bool]) -> None:
        self.publish = publish
        self.size = -1  # body size, known once the header came
        self.properties: Any = None
        self.raw = b""
        self.parts: list[bytes] = []
        self.have = 0


def _short_str(buf: bytes | memoryview, pos: int) -> tuple[str, int]:
    n = buf[pos]
    end = pos + 1 + n
    if end > len(buf):
        raise ValueError("short string runs past the frame")
    return bytes(buf[pos + 1 : end]).decode("utf-8"), end


def decode_publish(args: bytes) -> tuple[str, str, bool, bool]:
    """Basic.Publish arguments: reserved u16, exchange, routing key, mandatory/immediate bits."""
    exchange, pos = _short_str(args, 2)
    routing_key, pos = _short_str(args, pos)
    bits = args[pos]
    return exchange, routing_key, bool(bits & 1), bool(bits & 2)


def decode_properties(raw: bytes) -> C.Basic.Properties:
    """The 14 basic properties from their flag words and values."""
    flags = 0
    pos = 0
    word = 0
    while True:
        if pos + 2 > len(raw):
            raise ValueError("content header flags are truncated")
        part = _u16.unpack_from(raw, pos)[0]
        pos += 2
        flags |= part << (word * 16)
        if not part & 1:
            break
        word += 1
    props = C.Basic.Properties()
    props.unmarshal(flags, raw[pos:])
    return props


class FrameDecoder:
    """Splits a byte stream into events. Raises ``BadProtocolHeader`` (first bytes) and
    ``AmqpConnectionError`` (frame errors; the connection must close with its code)."""

    def __init__(self, frame_max: int, max_message_bytes: int) -> None:
        self.frame_max = frame_max
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._header_seen = False
        self._assembling: dict[int, _Assembly] = {}
        self._last_raw = b"\xff"  # never a valid property list on its own
        self._last_props: Any = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    @property
    def header_seen(self) -> bool:
        """The protocol header has arrived (the server then sends Connection.Start)."""
        return self._header_seen

    def receive(self, data: bytes) -> list[Event]:
        buf = self._buf
        buf += data
        out: list[Event] = []
        if not self._header_seen:
            if len(buf) < 8:
                if not PROTOCOL_HEADER.startswith(bytes(buf[:4])[: len(buf)]):
                    raise BadProtocolHeader()
                return out
            if bytes(buf[:8]) != PROTOCOL_HEADER:
                raise BadProtocolHeader()
            del buf[:8]
            self._header_seen = True
        pos = 0
        n = len(buf)
        frame_max = self.frame_max
        assembling = self._assembling
        try:
            while n - pos >= FRAME_HEADER_BYTES:
                ftype, channel, size = _frame_head.unpack_from(buf, pos)
                if ftype == FRAME_METHOD and not assembling and buf[pos + 7 : pos + 11] == _PUBLISH_HEAD:
                    fast = self._whole_publish(buf, pos, n, channel, size)
                    if fast is not None:
                        out.append(fast[0])
                        pos = fast[1]
                        continue
                if size + FRAME_OVERHEAD_BYTES > frame_max:
                    raise AmqpConnectionError(
                        E.FRAME_ERROR,
                        E.FRAME_TOO_LARGE.format(type=ftype, size=size, max=frame_max - FRAME_OVERHEAD_BYTES),
                    )
                end = pos + FRAME_HEADER_BYTES + size
                if end >= n:
                    break
                if buf[end] != FRAME_END:
                    octets = E.erlang_octets(bytes(buf[pos + FRAME_HEADER_BYTES : end]))
                    raise AmqpConnectionError(
                        E.FRAME_ERROR, E.FRAME_END_BAD.format(type=ftype, octets=octets, marker=buf[end])
                    )
                payload = bytes(buf[pos + FRAME_HEADER_BYTES : end])
                pos = end + 1
                event = self._frame(ftype, channel, payload)
                if event is not None:
                    out.append(event)
        finally:
            if pos:
                del buf[:pos]
        return out

    def _whole_publish(
        self, buf: bytearray, pos: int, n: int, channel: int, size: int
    ) -> tuple[Message, int] | None:
        """The common case in one step: Basic.Publish, its header and at most one body frame, all
        well-formed and already in the buffer. Anything else returns None for the frame-by-frame
        path, which also reports every error."""
        frame_max = self.frame_max
        end1 = pos + 7 + size
        if size + FRAME_OVERHEAD_BYTES > frame_max or end1 + 8 > n or buf[end1] != FRAME_END:
            return None
        h = end1 + 1
        ftype2, ch2, size2 = _frame_head.unpack_from(buf, h)
        end2 = h + 7 + size2
        if ftype2 != FRAME_HEADER or ch2 != channel or size2 < 14 or size2 + FRAME_OVERHEAD_BYTES > frame_max:
            return None
        if end2 >= n or buf[end2] != FRAME_END:
            return None
        body_size = _content_head.unpack_from(buf, h + 7)[2]
        if body_size > self.max_message_bytes:
            return None
        if body_size:
            b = end2 + 1
            if b + 7 > n:
                return None
            ftype3, ch3, size3 = _frame_head.unpack_from(buf, b)
            end3 = b + 7 + size3
            if (
                ftype3 != FRAME_BODY
                or ch3 != channel
                or size3 != body_size
                or end3 >= n
                or buf[end3] != FRAME_END
            ):
                return None
            if size3 + FRAME_OVERHEAD_BYTES > frame_max:
                return None
            body = bytes(buf[b + 7 : end3])
            next_pos = end3 + 1
        else:
            body = b""
            next_pos = end2 + 1
        try:
            exchange, routing_key, mandatory, immediate = decode_publish(bytes(buf[pos + 11 : end1]))
        except (IndexError, ValueError, UnicodeDecodeError):
            return None
        raw = bytes(buf[h + 19 : end2])
        if raw == self._last_raw:
            props = self._last_props
        else:
            try:
                props = decode_properties(raw)
            except Exception:
                return None
            self._last_raw = raw
            self._last_props = props
        return Message(channel, exchange, routing_key, mandatory, immediate, props, raw, body), next_pos

    def _frame(self, ftype: int, channel: int, payload: bytes) -> Event | None:
        pending = self._assembling.get(channel)
        if ftype == FRAME_METHOD:
            if pending is not None:
                raise AmqpConnectionError(
                    E.UNEXPECTED_FRAME,
                    E.EXPECTED_HEADER if pending.size < 0 else E.EXPECTED_BODY,
                    BASIC_CLASS,
                    PUBLISH_METHOD,
                )
            if len(payload) < 4:
                raise AmqpConnectionError(
                    E.FRAME_ERROR, E.MALFORMED.format(what="method frame", reason="too short")
                )
            class_id, method_id = _u16u16.unpack_from(payload, 0)
            index = (class_id << 16) | method_id
            if index == _PUBLISH_INDEX:
                try:
                    publish = decode_publish(payload[4:])
                except (IndexError, ValueError, UnicodeDecodeError):
                    raise AmqpConnectionError(
                        E.FRAME_ERROR,
                        E.UNDECODABLE.format(octets=E.erlang_binary(payload[4:])),
                        class_id,
                        method_id,
                    ) from None
                self._assembling[channel] = _Assembly(publish)
                return None
            cls = C.INDEX_MAPPING.get(index)
            if cls is None:
                raise AmqpConnectionError(
                    E.NOT_IMPLEMENTED,
                    E.UNKNOWN_METHOD.format(class_id=class_id, method_id=method_id),
                    class_id,
                    method_id,
                )
            method = cls()
            try:
                method.unmarshal(payload[4:])
            except Exception:  # pamqp raises struct.error, ValueError, IndexError, ...
                raise AmqpConnectionError(
                    E.FRAME_ERROR,
                    E.UNDECODABLE.format(octets=E.erlang_binary(payload[4:])),
                    class_id,
                    method_id,
                ) from None
            return Method(channel, method)
        if ftype == FRAME_HEADER:
            if pending is None or pending.size >= 0:
                raise AmqpConnectionError(
                    E.UNEXPECTED_FRAME, E.EXPECTED_METHOD if pending is None else E.EXPECTED_BODY
                )
            if len(payload) < 14:
                raise AmqpConnectionError(
                    E.FRAME_ERROR, E.MALFORMED.format(what="content header", reason="too short")
                )
            _class_id, _weight, size = _content_head.unpack_from(payload, 0)
            raw = payload[12:]
            if raw == self._last_raw:
                props = self._last_props  # a run of messages with the same properties: decode once
            else:
                try:
                    props = decode_properties(raw)
                except Exception:
                    raise AmqpConnectionError(
                        E.FRAME_ERROR, E.UNDECODABLE.format(octets=E.erlang_binary(payload[:64]))
                    ) from None
                self._last_raw = raw
                self._last_props = props
            pending.size = size
            pending.properties = props
            pending.raw = raw
            if size > self.max_message_bytes:
                # RabbitMQ refuses it as a channel error once the body has been read; the body
                # frames are still consumed (size bounded per frame), then dropped.
                pending.parts = []
            if size == 0:
                return self._complete(channel, pending)
            return None
        if ftype == FRAME_BODY:
            if pending is None or pending.size < 0:
                raise AmqpConnectionError(
                    E.UNEXPECTED_FRAME, E.EXPECTED_METHOD if pending is None else E.EXPECTED_HEADER
                )
            pending.have += len(payload)
            if pending.have > pending.size:
                raise AmqpConnectionError(E.FRAME_ERROR, E.BODY_TOO_LONG.format(size=pending.size))
            if pending.size <= self.max_message_bytes:
                pending.parts.append(payload)
            if pending.have == pending.size:
                return self._complete(channel, pending)
            return None
        if ftype == FRAME_HEARTBEAT:
            return Heartbeat(channel)
        raise AmqpConnectionError(E.FRAME_ERROR, E.FRAME_TYPE_BAD.format(type=ftype))

    def _complete(self, channel: int, pending: _Assembly) -> Message:
        del self._assembling[channel]
        parts = pending.parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        exchange, routing_key, mandatory, immediate = pending.publish
        msg = Message(
            channel, exchange, routing_key, mandatory, immediate, pending.properties, pending.raw, body
        )
        if pending.size > self.max_message_bytes:
            msg.refused_size = pending.size
        return msg

    def forget_channel(self, channel: int) -> None:
        """A closed channel's half-received message is dropped."""
        self._assembling.pop(channel, None)


# -- encoding ----------------------------------------------------------------------------------------


def encode_method(channel: int, method: pamqp_base.Frame) -> bytes:
    return pamqp_frame.marshal(method, channel)


def _short(text: str) -> bytes:
    raw = text.encode("utf-8")
    return bytes((len(raw),)) + raw


def _frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return _frame_head.pack(ftype, channel, len(payload)) + payload + b"\xce"


def content_frames(channel: int, raw_properties: bytes, body: bytes, frame_max: int) -> bytes:
    """The content header and body frames of one message (bodies split at ``frame_max``)."""
    head = _content_head.pack(BASIC_CLASS, 0, len(body)) + raw_properties
    parts = [_frame(FRAME_HEADER, channel, head)]
    if body:
        step = frame_max - FRAME_OVERHEAD_BYTES
        if len(body) <= step:
            parts.append(_frame(FRAME_BODY, channel, body))
        else:
            for i in range(0, len(body), step):
                parts.append(_frame(FRAME_BODY, channel, body[i : i + step]))
    return b"".join(parts)


def deliver_frames(
    channel: int, consumer_tag_short: bytes, delivery_tag: int, redelivered: bool,
    exchange: str, routing_key: str, raw_properties: bytes, body: bytes, frame_max: int,
) -> bytes:  # fmt: skip
    """Basic.Deliver plus content; ``consumer_tag_short`` is the tag pre-encoded as a short string."""
    args = (
        b"\x00\x3c\x00\x3c" + consumer_tag_short + _deliver_tail.pack(delivery_tag, 1 if redelivered else 0)
        + _short(exchange) + _short(routing_key)
    )  # fmt: skip
    return _frame(FRAME_METHOD, channel, args) + content_frames(channel, raw_properties, body, frame_max)


class DeliveryWire:
    """What every delivery of one message repeats, encoded once (fan-out and redelivery reuse it)."""

    __slots__ = ("names", "channel", "frame_max", "content")

    def __init__(self, exchange: str, routing_key: str) -> None:
        self.names = _short(exchange) + _short(routing_key)
        self.channel = -1
        self.frame_max = 0
        self.content = b""


def deliver_cached(
    wire: DeliveryWire, channel: int, consumer_tag_short: bytes, delivery_tag: int, redelivered: bool,
    raw_properties: bytes, body: bytes, frame_max: int,
) -> bytes:  # fmt: skip
    """``deliver_frames`` with the routing names and content frames taken from ``wire``."""
    if wire.channel != channel or wire.frame_max != frame_max:
        wire.content = content_frames(channel, raw_properties, body, frame_max)
        wire.channel = channel
        wire.frame_max = frame_max
    args = (
        b"\x00\x3c\x00\x3c"
        + consumer_tag_short
        + _deliver_tail.pack(delivery_tag, 1 if redelivered else 0)
        + wire.names
    )
    return _frame_head.pack(FRAME_METHOD, channel, len(args)) + args + b"\xce" + wire.content


def get_ok_frames(
    channel: int, delivery_tag: int, redelivered: bool, exchange: str, routing_key: str,
    message_count: int, raw_properties: bytes, body: bytes, frame_max: int,
) -> bytes:  # fmt: skip
    args = (
        b"\x00\x3c\x00\x47" + _deliver_tail.pack(delivery_tag, 1 if redelivered else 0)
        + _short(exchange) + _short(routing_key) + struct.pack(">I", message_count)
    )  # fmt: skip
    return _frame(FRAME_METHOD, channel, args) + content_frames(channel, raw_properties, body, frame_max)


def return_frames(
    channel: int, reply_code: int, reply_text: str, exchange: str, routing_key: str,
    raw_properties: bytes, body: bytes, frame_max: int,
) -> bytes:  # fmt: skip
    args = (
        b"\x00\x3c\x00\x32"
        + _u16.pack(reply_code)
        + _short(reply_text)
        + _short(exchange)
        + _short(routing_key)
    )
    return _frame(FRAME_METHOD, channel, args) + content_frames(channel, raw_properties, body, frame_max)


def declare_ok_frame(channel: int, queue: str, message_count: int, consumer_count: int) -> bytes:
    """Queue.DeclareOk, encoded here: pamqp refuses queue names RabbitMQ accepts (any UTF-8)."""
    args = b"\x00\x32\x00\x0b" + _short(queue) + struct.pack(">II", message_count, consumer_count)
    return _frame(FRAME_METHOD, channel, args)


def basic_ack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """Basic.Ack from the server (publisher confirms), without pamqp: one per confirmed batch."""
    return _frame(
        FRAME_METHOD, channel, b"\x00\x3c\x00\x50" + _deliver_tail.pack(delivery_tag, 1 if multiple else 0)
    )


def encode_properties(props: C.Basic.Properties) -> bytes:
    """Flag words and values of ``props`` (for messages that did not arrive over AMQP)."""
    return props.marshal()


def short_string(text: str) -> bytes:
    """A short string as it goes on the wire (length octet, UTF-8)."""
    return _short(text)
