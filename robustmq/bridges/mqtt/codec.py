"""The MQTT wire codec for 3.1, 3.1.1 and 5.0: bytes in, packets out; packets in, bytes out.

No sockets and no awaits: ``MqttDecoder.receive`` parses every complete packet of a chunk in one
call, and ``encode`` (plus the prebuilt-frame helpers for PUBLISH and acks) serialises them.
"""

from __future__ import annotations

from struct import Struct
from typing import Any

from robustmq.bridges.mqtt import errors as E
from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.errors import MalformedPacket, PacketTooLarge, UnsupportedProtocolVersion

MAX_REMAINING_LENGTH = 268_435_455
_U16 = Struct(">H")
_U32 = Struct(">I")

# property id -> value type
_BYTE, _U16T, _U32T, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES: dict[int, int] = {
    P.PAYLOAD_FORMAT_INDICATOR: _BYTE,
    P.MESSAGE_EXPIRY_INTERVAL: _U32T,
    P.CONTENT_TYPE: _STR,
    P.RESPONSE_TOPIC: _STR,
    P.CORRELATION_DATA: _BIN,
    P.SUBSCRIPTION_IDENTIFIER: _VARINT,
    P.SESSION_EXPIRY_INTERVAL: _U32T,
    P.ASSIGNED_CLIENT_IDENTIFIER: _STR,
    P.SERVER_KEEP_ALIVE: _U16T,
    P.AUTHENTICATION_METHOD: _STR,
    P.AUTHENTICATION_DATA: _BIN,
    P.REQUEST_PROBLEM_INFORMATION: _BYTE,
    P.WILL_DELAY_INTERVAL: _U32T,
    P.REQUEST_RESPONSE_INFORMATION: _BYTE,
    P.RESPONSE_INFORMATION: _STR,
    P.SERVER_REFERENCE: _STR,
    P.REASON_STRING: _STR,
    P.RECEIVE_MAXIMUM: _U16T,
    P.TOPIC_ALIAS_MAXIMUM: _U16T,
    P.TOPIC_ALIAS: _U16T,
    P.MAXIMUM_QOS: _BYTE,
    P.RETAIN_AVAILABLE: _BYTE,
    P.USER_PROPERTY: _PAIR,
    P.MAXIMUM_PACKET_SIZE: _U32T,
    P.WILDCARD_SUBSCRIPTION_AVAILABLE: _BYTE,
    P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: _BYTE,
    P.SHARED_SUBSCRIPTION_AVAILABLE: _BYTE,
}
REPEATABLE_PROPERTIES = frozenset((P.USER_PROPERTY, P.SUBSCRIPTION_IDENTIFIER))


# -- decoding ------------------------------------------------------------------------------------


def _string(buf: bytes, p: int, end: int) -> tuple[str, int]:
    if p + 2 > end:
        raise MalformedPacket(E.TRUNCATED)
    e = p + 2 + ((buf[p] << 8) | buf[p + 1])
    if e > end:
        raise MalformedPacket(E.TRUNCATED)
    try:
        s = buf[p + 2 : e].decode()
    except UnicodeDecodeError:
        raise MalformedPacket(E.BAD_UTF8) from None
    if "\x00" in s:
        raise MalformedPacket(E.NUL_IN_STRING)
    return s, e


def _binary(buf: bytes, p: int, end: int) -> tuple[bytes, int]:
    if p + 2 > end:
        raise MalformedPacket(E.TRUNCATED)
    e = p + 2 + ((buf[p] << 8) | buf[p + 1])
    if e > end:
        raise MalformedPacket(E.TRUNCATED)
    return buf[p + 2 : e], e


def _u16(buf: bytes, p: int, end: int) -> int:
    if p + 2 > end:
        raise MalformedPacket(E.TRUNCATED)
    return (buf[p] << 8) | buf[p + 1]


def _varint(buf: bytes, p: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for i in range(4):
        if p + i >= end:
            raise MalformedPacket(E.TRUNCATED)
        b = buf[p + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, p + i + 1
        shift += 7
    raise MalformedPacket(E.BAD_REMAINING_LENGTH)


def _properties(buf: bytes, p: int, end: int) -> tuple[P.Properties | None, int]:
    length, p = _varint(buf, p, end)
    stop = p + length
    if stop > end:
        raise MalformedPacket(E.TRUNCATED)
    if not length:
        return None, p
    props: dict[int, Any] = {}
    while p < stop:
        pid, p = _varint(buf, p, stop)
        kind = PROPERTY_TYPES.get(pid)
        if kind is None:
            raise MalformedPacket(E.UNKNOWN_PROPERTY)
        if kind == _BYTE:
            if p >= stop:
                raise MalformedPacket(E.TRUNCATED)
            value: Any = buf[p]
            p += 1
        elif kind == _U16T:
            value = _u16(buf, p, stop)
            p += 2
        elif kind == _U32T:
            if p + 4 > stop:
                raise MalformedPacket(E.TRUNCATED)
            value = _U32.unpack_from(buf, p)[0]
            p += 4
        elif kind == _VARINT:
            value, p = _varint(buf, p, stop)
        elif kind == _STR:
            value, p = _string(buf, p, stop)
        elif kind == _BIN:
            value, p = _binary(buf, p, stop)
        else:
            k, p = _string(buf, p, stop)
            v, p = _string(buf, p, stop)
            value = (k, v)
        if pid in REPEATABLE_PROPERTIES:
            props.setdefault(pid, []).append(value)
        elif pid in props:
            raise MalformedPacket(E.REPEATED_PROPERTY)
        else:
            props[pid] = value
    return props, p


class MqttDecoder:
    """Incremental parser of one byte stream.

    ``receive(data)`` returns the packets completed by ``data``; malformed input raises an
    ``MqttError`` and nothing else. On the server side the protocol level is learnt from CONNECT.
    """

    __slots__ = ("_buf", "version", "max_packet_bytes")

    def __init__(self, max_packet_bytes: int = MAX_REMAINING_LENGTH + 5, version: int | None = None) -> None:
        self._buf = b""
        self.version = version
        self.max_packet_bytes = max_packet_bytes

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def receive(self, data: bytes) -> list[P.Packet]:
        buf = self._buf + data if self._buf else bytes(data)
        n = len(buf)
        pos = 0
        out: list[P.Packet] = []
        parsers = _PARSERS
        limit = self.max_packet_bytes
        try:
            while n - pos >= 2:
                b = buf[pos + 1]
                if b < 0x80:
                    length = b
                    start = pos + 2
                else:
                    length = b & 0x7F
                    shift = 7
                    i = pos + 2
                    while True:
                        if i >= n:
                            if i - pos > 4:
                                raise MalformedPacket(E.BAD_REMAINING_LENGTH)
                            length = -1
                            break
                        b = buf[i]
                        length |= (b & 0x7F) << shift
                        i += 1
                        if b < 0x80:
                            break
                        if i - pos > 4:
                            raise MalformedPacket(E.BAD_REMAINING_LENGTH)
                        shift += 7
                    if length < 0:
                        break
                    start = i
                end = start + length
                if end - pos > limit:
                    raise PacketTooLarge(E.TOO_LARGE)
                if end > n:
                    break
                b0 = buf[pos]
                out.append(parsers[b0 >> 4](self, b0 & 0x0F, buf, start, end))
                pos = end
        finally:
            self._buf = buf[pos:] if pos < n else b""
        return out

    # each parser gets (flags, buffer, first byte after the fixed header, end of packet)

    def _reserved(self, flags: int, buf: bytes, p: int, end: int) -> P.Packet:
        raise MalformedPacket(E.BAD_PACKET_TYPE)

    def _connect(self, flags: int, buf: bytes, p: int, end: int) -> P.Connect:
        if flags:
            raise MalformedPacket(E.BAD_FLAGS)
        name, p = _string(buf, p, end)
        if p + 4 > end:
            raise MalformedPacket(E.TRUNCATED)
        level = buf[p]
        if name not in ("MQTT", "MQIsdp"):
            raise MalformedPacket(E.BAD_PROTOCOL_NAME)
        if level not in (P.MQTT_3_1, P.MQTT_3_1_1, P.MQTT_5) or (level == P.MQTT_3_1) != (name == "MQIsdp"):
            raise UnsupportedProtocolVersion(level)
        cf = buf[p + 1]
        keepalive = (buf[p + 2] << 8) | buf[p + 3]
        p += 4
        if cf & 0x01:
            raise MalformedPacket(E.BAD_CONNECT_FLAGS)
        will_flag = cf & 0x04
        will_qos = (cf >> 3) & 3
        will_retain = bool(cf & 0x20)
        if will_qos == 3:
            raise MalformedPacket(E.BAD_QOS)
        if not will_flag and (will_qos or will_retain):
            raise MalformedPacket(E.BAD_WILL_FLAGS)
        if level != P.MQTT_5 and cf & 0x40 and not cf & 0x80:
            raise MalformedPacket(E.BAD_PASSWORD_FLAG)
        props = None
        if level == P.MQTT_5:
            props, p = _properties(buf, p, end)
        client_id, p = _string(buf, p, end)
        will = None
        if will_flag:
            will_props = None
            if level == P.MQTT_5:
                will_props, p = _properties(buf, p, end)
            topic, p = _string(buf, p, end)
            payload, p = _binary(buf, p, end)
            will = P.Will(topic, payload, will_qos, will_retain, will_props)
        username = password = None
        if cf & 0x80:
            username, p = _string(buf, p, end)
        if cf & 0x40:
            password, p = _binary(buf, p, end)
        if p != end:
            raise MalformedPacket(E.TRAILING)
        self.version = level
        return P.Connect(client_id, level, bool(cf & 0x02), keepalive, will, username, password, props, name)

    def _connack(self, flags: int, buf: bytes, p: int, end: int) -> P.Connack:
        if flags:
            raise MalformedPacket(E.BAD_FLAGS)
        if p + 2 > end:
            raise MalformedPacket(E.TRUNCATED)
        if buf[p] & 0xFE:
            raise MalformedPacket(E.BAD_FLAGS)
        present = bool(buf[p] & 1)
        code = buf[p + 1]
        p += 2
        props = None
        if self.version == P.MQTT_5:
            props, p = _properties(buf, p, end)
        if p != end:
            raise MalformedPacket(E.TRAILING)
        return P.Connack(present, code, props)

    def _publish(self, flags: int, buf: bytes, p: int, end: int) -> P.Publish:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise MalformedPacket(E.BAD_QOS)
        if p + 2 > end:
            raise MalformedPacket(E.TRUNCATED)
        e = p + 2 + ((buf[p] << 8) | buf[p + 1])
        if e > end:
            raise MalformedPacket(E.TRUNCATED)
        try:
            topic = buf[p + 2 : e].decode()
        except UnicodeDecodeError:
            raise MalformedPacket(E.BAD_UTF8) from None
        if "\x00" in topic:
            raise MalformedPacket(E.NUL_IN_STRING)
        p = e
        pid = 0
        if qos:
            if p + 2 > end:
                raise MalformedPacket(E.TRUNCATED)
            pid = (buf[p] << 8) | buf[p + 1]
            if not pid:
                raise MalformedPacket(E.ZERO_PACKET_ID)
            p += 2
        props = None
        if self.version == P.MQTT_5:
            props, p = _properties(buf, p, end)
        return P.Publish(topic, buf[p:end], qos, bool(flags & 1), bool(flags & 8), pid, props)

    def _ack(self, cls: type, flags: int, want_flags: int, buf: bytes, p: int, end: int) -> Any:
        if flags != want_flags:
            raise MalformedPacket(E.BAD_FLAGS)
        pid = _u16(buf, p, end)
        p += 2
        code = 0
        props = None
        if self.version == P.MQTT_5 and p < end:
            code = buf[p]
            p += 1
            if p < end:
                props, p = _properties(buf, p, end)
        if p != end:
            raise MalformedPacket(E.TRAILING)
        return cls(pid, code, props)

    def _puback(self, flags: int, buf: bytes, p: int, end: int) -> P.Puback:
        if end - p == 2 and not flags:  # the common short form
            return P.Puback((buf[p] << 8) | buf[p + 1])
        return self._ack(P.Puback, flags, 0, buf, p, end)

    def _pubrec(self, flags: int, buf: bytes, p: int, end: int) -> P.Pubrec:
        return self._ack(P.Pubrec, flags, 0, buf, p, end)

    def _pubrel(self, flags: int, buf: bytes, p: int, end: int) -> P.Pubrel:
        return self._ack(P.Pubrel, flags, 2, buf, p, end)

    def _pubcomp(self, flags: int, buf: bytes, p: int, end: int) -> P.Pubcomp:
        return self._ack(P.Pubcomp, flags, 0, buf, p, end)

    def _subscribe(self, flags: int, buf: bytes, p: int, end: int) -> P.Subscribe:
        if flags != 2:
            raise MalformedPacket(E.BAD_FLAGS)
        pid = _u16(buf, p, end)
        if not pid:
            raise MalformedPacket(E.ZERO_PACKET_ID)
        p += 2
        props = None
        v5 = self.version == P.MQTT_5
        if v5:
            props, p = _properties(buf, p, end)
        subs = []
        while p < end:
            topic_filter, p = _string(buf, p, end)
            if p >= end:
                raise MalformedPacket(E.TRUNCATED)
            opts = buf[p]
            p += 1
            qos = opts & 3
            if qos == 3:
                raise MalformedPacket(E.BAD_QOS)
            if v5:
                if opts & 0xC0 or (opts >> 4) & 3 == 3:
                    raise MalformedPacket(E.BAD_SUBSCRIPTION_OPTIONS)
                subs.append(
                    P.SubscriptionRequest(topic_filter, qos, bool(opts & 4), bool(opts & 8), (opts >> 4) & 3)
                )
            else:
                if opts & 0xFC:
                    raise MalformedPacket(E.BAD_SUBSCRIPTION_OPTIONS)
                subs.append(P.SubscriptionRequest(topic_filter, qos))
        if not subs:
            raise MalformedPacket(E.NO_TOPIC_FILTERS, 0x82)
        return P.Subscribe(pid, subs, props)

    def _suback(self, flags: int, buf: bytes, p: int, end: int) -> P.Suback:
        if flags:
            raise MalformedPacket(E.BAD_FLAGS)
        pid = _u16(buf, p, end)
        p += 2
        props = None
        if self.version == P.MQTT_5:
            props, p = _properties(buf, p, end)
        return P.Suback(pid, list(buf[p:end]), props)

    def _unsubscribe(self, flags: int, buf: bytes, p: int, end: int) -> P.Unsubscribe:
        if flags != 2:
            raise MalformedPacket(E.BAD_FLAGS)
        pid = _u16(buf, p, end)
        if not pid:
            raise MalformedPacket(E.ZERO_PACKET_ID)
        p += 2
        props = None
        if self.version == P.MQTT_5:
            props, p = _properties(buf, p, end)
        filters = []
        while p < end:
            topic_filter, p = _string(buf, p, end)
            filters.append(topic_filter)
        if not filters:
            raise MalformedPacket(E.NO_TOPIC_FILTERS, 0x82)
        return P.Unsubscribe(pid, filters, props)

    def _unsuback(self, flags: int, buf: bytes, p: int, end: int) -> P.Unsuback:
        if flags:
            raise MalformedPacket(E.BAD_FLAGS)
        pid = _u16(buf, p, end)
        p += 2
        props = None
        codes: list[int] = []
        if self.version == P.MQTT_5:
            props, p = _properties(buf, p, end)
            codes = list(buf[p:end])
        elif p != end:
            raise MalformedPacket(E.TRAILING)
        return P.Unsuback(pid, codes, props)

    def _ping(self, cls: type, flags: int, p: int, end: int) -> Any:
        if flags:
            raise MalformedPacket(E.BAD_FLAGS)
        if p != end:
            raise MalformedPacket(E.TRAILING)
        return cls()

    def _pingreq(self, flags: int, buf: bytes, p: int, end: int) -> P.Pingreq:
        return self._ping(P.Pingreq, flags, p, end)

    def _pingresp(self, flags: int, buf: bytes, p: int, end: int) -> P.Pingresp:
        return self._ping(P.Pingresp, flags, p, end)

    def _coded(self, cls: type, flags: int, buf: bytes, p: int, end: int) -> Any:
        if flags:
            raise MalformedPacket(E.BAD_FLAGS)
        code = 0
        props = None
        if self.version == P.MQTT_5 and p < end:
            code = buf[p]
            p += 1
            if p < end:
                props, p = _properties(buf, p, end)
        if p != end:
            raise MalformedPacket(E.TRAILING)
        return cls(code, props)

    def _disconnect(self, flags: int, buf: bytes, p: int, end: int) -> P.Disconnect:
        return self._coded(P.Disconnect, flags, buf, p, end)

    def _auth(self, flags: int, buf: bytes, p: int, end: int) -> P.Auth:
        if self.version != P.MQTT_5:
            raise MalformedPacket(E.BAD_PACKET_TYPE)
        return self._coded(P.Auth, flags, buf, p, end)


_PARSERS = (
    MqttDecoder._reserved, MqttDecoder._connect, MqttDecoder._connack, MqttDecoder._publish,
    MqttDecoder._puback, MqttDecoder._pubrec, MqttDecoder._pubrel, MqttDecoder._pubcomp,
    MqttDecoder._subscribe, MqttDecoder._suback, MqttDecoder._unsubscribe, MqttDecoder._unsuback,
    MqttDecoder._pingreq, MqttDecoder._pingresp, MqttDecoder._disconnect, MqttDecoder._auth,
)  # fmt: skip


# -- encoding ------------------------------------------------------------------------------------


def encode_varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_string(s: str) -> bytes:
    data = s.encode()
    return _U16.pack(len(data)) + data


def encode_binary(b: bytes) -> bytes:
    return _U16.pack(len(b)) + b


def _one_property(pid: int, kind: int, value: Any) -> bytes:
    head = encode_varint(pid)
    if kind == _BYTE:
        return head + bytes((value,))
    if kind == _U16T:
        return head + _U16.pack(value)
    if kind == _U32T:
        return head + _U32.pack(value)
    if kind == _VARINT:
        return head + encode_varint(value)
    if kind == _STR:
        return head + encode_string(value)
    if kind == _BIN:
        return head + encode_binary(value)
    return head + encode_string(value[0]) + encode_string(value[1])


def encode_properties(props: P.Properties | None) -> bytes:
    """A property block with its varint length (``b"\\x00"`` when there is none)."""
    if not props:
        return b"\x00"
    parts = []
    for pid, value in props.items():
        kind = PROPERTY_TYPES[pid]
        if pid in REPEATABLE_PROPERTIES:
            parts.extend(_one_property(pid, kind, v) for v in value)
        else:
            parts.append(_one_property(pid, kind, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def frame(first_byte: int, body: bytes) -> bytes:
    """Fixed header + body."""
    n = len(body)
    if n < 0x80:
        return bytes((first_byte, n)) + body
    return bytes((first_byte,)) + encode_varint(n) + body


def encode_publish(
    topic: bytes, payload: bytes, qos: int = 0, retain: bool = False, dup: bool = False,
    packet_id: int = 0, properties: bytes | None = None,
) -> bytes:  # fmt: skip
    """A PUBLISH from prebuilt pieces: ``topic`` is the length-prefixed topic, ``properties`` the
    encoded property block for 5.0 (``None`` before 5.0)."""
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    if qos:
        head = topic + _U16.pack(packet_id)
    else:
        head = topic
    if properties is not None:
        head += properties
    n = len(head) + len(payload)
    if n < 0x80:
        return bytes((first, n)) + head + payload
    return bytes((first,)) + encode_varint(n) + head + payload


def encode(packet: P.Packet, version: int = P.MQTT_3_1_1) -> bytes:
    """Serialise one packet for a connection speaking ``version``."""
    return _ENCODERS[type(packet)](packet, version == P.MQTT_5)


def _enc_connect(pk: P.Connect, v5: bool) -> bytes:
    will = pk.will
    cf = 0
    if pk.clean_start:
        cf |= 0x02
    if will is not None:
        cf |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if pk.username is not None:
        cf |= 0x80
    if pk.password is not None:
        cf |= 0x40
    parts = [encode_string(pk.protocol_name), bytes((pk.protocol_level, cf)), _U16.pack(pk.keepalive)]
    if v5:
        parts.append(encode_properties(pk.properties))
    parts.append(encode_string(pk.client_id))
    if will is not None:
        if v5:
            parts.append(encode_properties(will.properties))
        parts.append(encode_string(will.topic))
        parts.append(encode_binary(will.payload))
    if pk.username is not None:
        parts.append(encode_string(pk.username))
    if pk.password is not None:
        parts.append(encode_binary(pk.password))
    return frame(0x10, b"".join(parts))


def _enc_connack(pk: P.Connack, v5: bool) -> bytes:
    body = bytes((1 if pk.session_present else 0, pk.reason_code))
    if v5:
        body += encode_properties(pk.properties)
    return frame(0x20, body)


def _enc_publish(pk: P.Publish, v5: bool) -> bytes:
    return encode_publish(
        encode_string(pk.topic), pk.payload, pk.qos, pk.retain, pk.dup, pk.packet_id,
        encode_properties(pk.properties) if v5 else None,
    )  # fmt: skip


def _ack_encoder(first: int) -> Any:
    def enc(pk: Any, v5: bool) -> bytes:
        if v5 and (pk.reason_code or pk.properties):
            body = _U16.pack(pk.packet_id) + bytes((pk.reason_code,))
            if pk.properties:
                body += encode_properties(pk.properties)
            return frame(first, body)
        return bytes((first, 2)) + _U16.pack(pk.packet_id)

    return enc


def _enc_subscribe(pk: P.Subscribe, v5: bool) -> bytes:
    parts = [_U16.pack(pk.packet_id)]
    if v5:
        parts.append(encode_properties(pk.properties))
    for s in pk.subscriptions:
        opts = s.qos
        if v5:
            opts |= (4 if s.no_local else 0) | (8 if s.retain_as_published else 0) | (s.retain_handling << 4)
        parts.append(encode_string(s.topic_filter) + bytes((opts,)))
    return frame(0x82, b"".join(parts))


def _enc_suback(pk: P.Suback, v5: bool) -> bytes:
    body = _U16.pack(pk.packet_id)
    if v5:
        body += encode_properties(pk.properties)
    return frame(0x90, body + bytes(pk.reason_codes))


def _enc_unsubscribe(pk: P.Unsubscribe, v5: bool) -> bytes:
    parts = [_U16.pack(pk.packet_id)]
    if v5:
        parts.append(encode_properties(pk.properties))
    parts.extend(encode_string(f) for f in pk.topic_filters)
    return frame(0xA2, b"".join(parts))


def _enc_unsuback(pk: P.Unsuback, v5: bool) -> bytes:
    body = _U16.pack(pk.packet_id)
    if v5:
        body += encode_properties(pk.properties) + bytes(pk.reason_codes)
    return frame(0xB0, body)


def _coded_encoder(first: int) -> Any:
    def enc(pk: Any, v5: bool) -> bytes:
        if not v5 or (not pk.reason_code and not pk.properties):
            return bytes((first, 0))
        body = bytes((pk.reason_code,))
        if pk.properties:
            body += encode_properties(pk.properties)
        return frame(first, body)

    return enc


_ENCODERS: dict[type, Any] = {
    P.Connect: _enc_connect,
    P.Connack: _enc_connack,
    P.Publish: _enc_publish,
    P.Puback: _ack_encoder(0x40),
    P.Pubrec: _ack_encoder(0x50),
    P.Pubrel: _ack_encoder(0x62),
    P.Pubcomp: _ack_encoder(0x70),
    P.Subscribe: _enc_subscribe,
    P.Suback: _enc_suback,
    P.Unsubscribe: _enc_unsubscribe,
    P.Unsuback: _enc_unsuback,
    P.Pingreq: lambda pk, v5: b"\xc0\x00",
    P.Pingresp: lambda pk, v5: b"\xd0\x00",
    P.Disconnect: _coded_encoder(0xE0),
    P.Auth: _coded_encoder(0xF0),
}

PINGRESP = b"\xd0\x00"


def encode_ack(first: int, packet_id: int) -> bytes:
    """A 4-byte PUBACK/PUBREC/PUBREL/PUBCOMP with reason Success (``first``: 0x40, 0x50, 0x62, 0x70)."""
    return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))
