"""AMQP reply codes and the texts that go with them, worded as RabbitMQ words them.

A ``ChannelError`` closes one channel (Channel.Close); an ``AmqpConnectionError`` closes the
connection (Connection.Close). Both carry the class and method id of the method that failed.
"""

from __future__ import annotations

# reply codes (AMQP 0-9-1 section 1.2 of the spec)
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

CODE_NAMES = {
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE", NO_ROUTE: "NO_ROUTE", NO_CONSUMERS: "NO_CONSUMERS",
    CONNECTION_FORCED: "CONNECTION_FORCED", INVALID_PATH: "INVALID_PATH", ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND", RESOURCE_LOCKED: "RESOURCE_LOCKED", PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR", SYNTAX_ERROR: "SYNTAX_ERROR", COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR", UNEXPECTED_FRAME: "UNEXPECTED_FRAME", RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED", NOT_IMPLEMENTED: "NOT_IMPLEMENTED", INTERNAL_ERROR: "INTERNAL_ERROR",
}  # fmt: skip

# texts (the code name is prefixed when the error is built)
NO_EXCHANGE = "no exchange '{name}' in vhost '/'"
NO_QUEUE = "no queue '{name}' in vhost '/'"
EXCHANGE_INEQUIVALENT = (
    "inequivalent arg '{arg}' for exchange '{name}' in vhost '/': received '{got}' but current is '{have}'"
)
QUEUE_INEQUIVALENT = (
    "inequivalent arg '{arg}' for queue '{name}' in vhost '/': received '{got}' but current is '{have}'"
)
QUEUE_ARG_INEQUIVALENT = "inequivalent arg '{arg}' for queue '{name}' in vhost '/': received the value '{got}' but current is {have}"
EXCHANGE_TYPE_INVALID = "unknown exchange type '{type}'"
RESERVED_NAME = "{kind} name '{name}' contains reserved prefix 'amq.*'"
DEFAULT_EXCHANGE_ACCESS = "operation not permitted on the default exchange"
EXCHANGE_IN_USE = "exchange '{name}' in vhost '/' in use"
QUEUE_IN_USE = "queue '{name}' in vhost '/' in use"
QUEUE_NOT_EMPTY = "queue '{name}' in vhost '/' not empty"
EXCLUSIVE_LOCKED = "cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
EXCLUSIVE_CONSUMER = "queue '{name}' in vhost '/' in exclusive use"
INTERNAL_EXCHANGE = "cannot publish to internal exchange '{name}' in vhost '/'"
UNKNOWN_DELIVERY_TAG = "unknown delivery tag {tag}"
CONSUMER_TAG_IN_USE = "attempt to reuse consumer tag '{tag}'"
NO_ROUTE_TEXT = "NO_ROUTE"
IMMEDIATE = "immediate=true"
BAD_ARGUMENT = "invalid arg '{arg}' for queue '{name}' in vhost '/': {reason}"
MESSAGE_TOO_LARGE = "message size {size} is larger than configured max size {max}"
TX_NOT_SELECTED = "channel is not transactional"
CONFIRM_AFTER_TX = "cannot switch from tx to confirm mode"
TX_AFTER_CONFIRM = "cannot switch from confirm to tx mode"
SECOND_CHANNEL_OPEN = "second 'channel.open' seen"
EXPECTED_CHANNEL_OPEN = "expected 'channel.open'"
CHANNEL_MAX = "channel number {channel} exceeds channel_max {max}"
VHOST_NOT_FOUND = "vhost {vhost} not found"
LOGIN_REFUSED = (
    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
)
UNKNOWN_MECHANISM = "unknown authentication mechanism '{mechanism}'"
BAD_LOGIN_RESPONSE = "{mechanism} login refused: malformed response"
UNKNOWN_METHOD = "unknown method class {class_id} method {method_id}"
UNEXPECTED_METHOD = "{method} is not allowed here"
EXPECTED_HEADER = "expected content header for class 60, got non content header frame instead"
EXPECTED_BODY = "expected content body, got non content body frame instead"
EXPECTED_METHOD = "expected method frame, got non method frame instead"
BODY_TOO_LONG = "content body longer than its header said ({size} bytes)"
FRAME_END_BAD = "type {type}, {octets}: {{invalid_frame_end_marker,{marker}}}"
FRAME_TOO_LARGE = "type {type}, all octets = <<>>: {{frame_too_large,{size},{max}}}"
FRAME_TYPE_BAD = "type {type}, all octets = <<>>: unknown_frame"
MALFORMED = "cannot decode {what}: {reason}"
UNDECODABLE = "cannot decode {octets}"
HEARTBEAT_MISSED = "missed heartbeats from client, timeout: {seconds}s"
HANDSHAKE_TIMEOUT = "handshake timeout"
SHUTDOWN = "broker forced connection closure with reason 'shutdown'"
QUEUE_DELETED = "queue '{name}' in vhost '/' deleted"
STORE_FAILED = "the message could not be stored: {reason}"
ACCESS_DENIED_PUBLISH = "access to subject '{subject}' refused for user '{user}'"
ACCESS_DENIED_SUBSCRIBE = "access to subject '{subject}' (a binding on amq.topic) refused for user '{user}'"
INTERNAL = "internal error ({reason})"


def erlang_binary(payload: bytes) -> str:
    """Bytes written as an Erlang binary, as RabbitMQ quotes them: ``<<0,0,9>>``."""
    return "<<" + ",".join(map(str, payload)) + ">>"


def erlang_octets(payload: bytes) -> str:
    """A frame payload as RabbitMQ quotes it in a FRAME_ERROR text."""
    if len(payload) <= 16:
        return "all octets = <<" + ",".join(map(str, payload)) + ">>"
    return "first 16 octets = <<" + ",".join(map(str, payload[:16])) + ">>"


def describe(code: int, text: str) -> str:
    """The reply text RabbitMQ sends: the code's name, a dash, the detail."""
    return f"{CODE_NAMES.get(code, str(code))} - {text}"


class AmqpError(Exception):
    """The peer broke a rule: the code, the text and the class/method that failed."""

    def __init__(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(describe(code, text))
        self.code = code
        self.text = describe(code, text)
        self.class_id = class_id
        self.method_id = method_id


class ChannelError(AmqpError):
    """Closes the channel only (4xx codes)."""


class AmqpConnectionError(AmqpError):
    """Closes the whole connection (5xx codes, 320, 402)."""


class BadProtocolHeader(Exception):
    """The first eight bytes were not AMQP 0-9-1's: answer with ours and close."""
