"""The errors of the MQTT front-end and every error text, in one place.

``MqttError`` carries the MQTT 5 reason code the connection is closed with (a DISCONNECT for 5.0).
"""

from __future__ import annotations

from robustmq.bridges.mqtt import reason_codes as rc


class MqttError(Exception):
    """The peer broke the protocol; the connection must be closed with ``reason_code``."""

    reason_code = rc.PROTOCOL_ERROR

    def __init__(self, text: str, reason_code: int | None = None) -> None:
        super().__init__(text)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(MqttError):
    reason_code = rc.MALFORMED_PACKET


class ProtocolError(MqttError):
    reason_code = rc.PROTOCOL_ERROR


class PacketTooLarge(MqttError):
    reason_code = rc.PACKET_TOO_LARGE


# codec texts
BAD_REMAINING_LENGTH = "malformed remaining length"
BAD_FLAGS = "reserved flags set in the fixed header"
BAD_PACKET_TYPE = "reserved packet type"
BAD_QOS = "QoS 3 is not a QoS"
TRUNCATED = "packet shorter than its fields"
TRAILING = "bytes left over after the last field"
BAD_UTF8 = "string is not well-formed UTF-8"
NUL_IN_STRING = "string contains U+0000"
BAD_PROTOCOL_NAME = "unknown protocol name"
BAD_CONNECT_FLAGS = "reserved CONNECT flag set"
BAD_WILL_FLAGS = "will QoS or retain without a will"
BAD_PASSWORD_FLAG = "password without user name"
UNKNOWN_PROPERTY = "unknown property"
REPEATED_PROPERTY = "property repeated"
BAD_PROPERTY_VALUE = "property value out of range"
NO_TOPIC_FILTERS = "SUBSCRIBE or UNSUBSCRIBE without a topic filter"
BAD_SUBSCRIPTION_OPTIONS = "reserved subscription option bits set"
ZERO_PACKET_ID = "packet identifier 0"
TOO_LARGE = "packet larger than the maximum packet size"

# session texts
FIRST_NOT_CONNECT = "first packet is not CONNECT"
SECOND_CONNECT = "second CONNECT"
WILDCARD_IN_TOPIC = "wildcard in a PUBLISH topic"
EMPTY_TOPIC = "empty topic without a topic alias"
BAD_TOPIC_ALIAS = "topic alias out of range or unknown"
BAD_TOPIC_FILTER = "invalid topic filter"
RECEIVE_MAXIMUM = "more QoS 1/2 publishes in flight than the receive maximum"
UNEXPECTED_PACKET = "packet type a client must not send"
KEEPALIVE_EXPIRED = "keep alive timeout"
TAKEN_OVER = "session taken over by a new connection"
SESSION_EXPIRY_RAISED = "session expiry raised from 0 at DISCONNECT"
NOT_AUTHORIZED_PUBLISH = "not authorized to publish to this topic"
SERVER_SHUTTING_DOWN = "server shutting down"


class UnsupportedProtocolVersion(MqttError):
    """CONNECT with a protocol level we do not speak: answer CONNACK 0x01 / 0x84, then close."""

    reason_code = rc.UNSUPPORTED_PROTOCOL_VERSION

    def __init__(self, level: int) -> None:
        super().__init__(f"unsupported protocol level {level}")
        self.level = level
