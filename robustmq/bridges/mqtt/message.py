"""An application message on its way to one MQTT client, and MQTT 5 properties <-> headers.

MQTT 5 user properties are the message headers of the shared subject space; the other
forwarded PUBLISH properties travel as ``mqtt-*`` headers so NATS clients and the store see them.
"""

from __future__ import annotations

import base64
import time

from robustmq.bridges.mqtt import packets as P
from robustmq.headers import decode_headers, encode_headers

CONTENT_TYPE_HEADER = "mqtt-content-type"
PAYLOAD_FORMAT_HEADER = "mqtt-payload-format"
CORRELATION_DATA_HEADER = "mqtt-correlation-data"
EXPIRY_AT_HEADER = "mqtt-message-expiry-at"  # unix time in ms
_EXPIRY_AT_BYTES = EXPIRY_AT_HEADER.encode()
_RESERVED = frozenset((CONTENT_TYPE_HEADER, PAYLOAD_FORMAT_HEADER, CORRELATION_DATA_HEADER, EXPIRY_AT_HEADER))
# PUBLISH properties forwarded to subscribers unchanged
FORWARDED = (
    P.PAYLOAD_FORMAT_INDICATOR,
    P.CONTENT_TYPE,
    P.CORRELATION_DATA,
    P.USER_PROPERTY,
    P.RESPONSE_TOPIC,
)


class OutMessage:
    """One message queued or in flight towards one session. ``properties`` excludes the
    subscription identifiers and topic alias, which are per delivery."""

    __slots__ = (
        "topic",
        "payload",
        "qos",
        "retain",
        "properties",
        "expiry_at",
        "sub_ids",
        "packet_id",
        "released",
        "store_offset",
    )

    def __init__(
        self, topic: str, payload: bytes, qos: int, retain: bool,
        properties: P.Properties | None = None, expiry_at: float | None = None, sub_ids: list[int] | None = None,
    ) -> None:  # fmt: skip
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expiry_at = expiry_at  # time.time() deadline, or None
        self.sub_ids = sub_ids
        self.packet_id = 0
        self.released = False  # QoS 2: PUBREC received, PUBREL sent
        self.store_offset: int | None = None  # where a persistent session keeps it

    def expired(self, now: float | None = None) -> bool:
        return self.expiry_at is not None and (now or time.time()) >= self.expiry_at

    def outgoing_properties(self) -> P.Properties | None:
        """The properties of the PUBLISH as sent now: remaining expiry and subscription ids added."""
        props = self.properties
        if self.expiry_at is None and not self.sub_ids:
            return props
        out = dict(props) if props else {}
        if self.expiry_at is not None:
            out[P.MESSAGE_EXPIRY_INTERVAL] = max(1, int(self.expiry_at - time.time() + 0.999))
        if self.sub_ids:
            out[P.SUBSCRIPTION_IDENTIFIER] = self.sub_ids
        return out


def properties_to_headers(props: P.Properties | None, now: float | None = None) -> bytes | None:
    """The header block of an inbound PUBLISH's properties (``None`` when nothing travels)."""
    if not props:
        return None
    items: list[tuple[str, str]] = list(props.get(P.USER_PROPERTY, ()))
    if P.CONTENT_TYPE in props:
        items.append((CONTENT_TYPE_HEADER, props[P.CONTENT_TYPE]))
    if P.PAYLOAD_FORMAT_INDICATOR in props:
        items.append((PAYLOAD_FORMAT_HEADER, str(props[P.PAYLOAD_FORMAT_INDICATOR])))
    if P.CORRELATION_DATA in props:
        items.append((CORRELATION_DATA_HEADER, base64.b64encode(props[P.CORRELATION_DATA]).decode()))
    if P.MESSAGE_EXPIRY_INTERVAL in props:
        at = (now or time.time()) + props[P.MESSAGE_EXPIRY_INTERVAL]
        items.append((EXPIRY_AT_HEADER, str(int(at * 1000))))
    return encode_headers(items)


def expiry_of(props: P.Properties | None, now: float | None = None) -> float | None:
    if props and P.MESSAGE_EXPIRY_INTERVAL in props:
        return (now or time.time()) + props[P.MESSAGE_EXPIRY_INTERVAL]
    return None


def forwarded_properties(props: P.Properties | None) -> P.Properties | None:
    """The properties of an inbound PUBLISH that go out to subscribers as they came."""
    if not props:
        return None
    out = {k: props[k] for k in FORWARDED if k in props}
    return out or None


def headers_to_properties(headers: bytes | None) -> tuple[P.Properties | None, float | None]:
    """``(properties, expiry_at)`` for a message from the router (any protocol)."""
    if not headers:
        return None, None
    users: list[tuple[str, str]] = []
    props: P.Properties = {}
    expiry_at = None
    for key, value in decode_headers(headers):
        if key not in _RESERVED:
            users.append((key, value))
        elif key == CONTENT_TYPE_HEADER:
            props[P.CONTENT_TYPE] = value
        elif key == PAYLOAD_FORMAT_HEADER:
            props[P.PAYLOAD_FORMAT_INDICATOR] = 1 if value == "1" else 0
        elif key == CORRELATION_DATA_HEADER:
            try:
                props[P.CORRELATION_DATA] = base64.b64decode(value)
            except ValueError:
                pass
        else:
            try:
                expiry_at = int(value) / 1000
            except ValueError:
                pass
    if users:
        props[P.USER_PROPERTY] = users
    return props or None, expiry_at


def expiry_from_headers(headers: bytes | None) -> float | None:
    """Only the expiry deadline (cheap check for 3.1.1 subscribers)."""
    if not headers or _EXPIRY_AT_BYTES not in headers:
        return None
    return headers_to_properties(headers)[1]
