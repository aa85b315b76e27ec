"""Every ``-ERR`` text the NATS front-end sends, and the parser's one exception type.

The texts are nats-server's, byte for byte, because clients match on them.
"""

from __future__ import annotations

UNKNOWN_OPERATION = "Unknown Protocol Operation"
MAX_PAYLOAD = "Maximum Payload Violation"
MAX_CONTROL_LINE = "maximum control line exceeded"
INVALID_SUBJECT = "Invalid Subject"
INVALID_PUBLISH_SUBJECT = "Invalid Publish Subject"
NO_RESPONDERS_NEEDS_HEADERS = "no responders requires headers support"
AUTHORIZATION_VIOLATION = "Authorization Violation"
AUTHENTICATION_TIMEOUT = "Authentication Timeout"
STALE_CONNECTION = "Stale Connection"
MAX_CONNECTIONS = "maximum connections exceeded"
MAX_SUBSCRIPTIONS = "maximum subscriptions exceeded"
INVALID_CLIENT_PROTOCOL = "invalid client protocol"


def publish_violation(subject: str) -> str:
    return f'Permissions Violation for Publish to "{subject}"'


def subscribe_violation(subject: str) -> str:
    return f'Permissions Violation for Subscription to "{subject}"'


class ProtocolViolation(Exception):
    """The peer broke the protocol; the connection must be closed.

    ``text`` is the ``-ERR`` text to send first, or ``None`` where nats-server closes silently.
    ``events`` holds what the parser decoded from the same input before the violation.
    """

    def __init__(self, text: str | None, reason: str = "") -> None:
        super().__init__(text or reason)
        self.text = text
        self.reason = reason or (text or "")
        self.events: list = []
