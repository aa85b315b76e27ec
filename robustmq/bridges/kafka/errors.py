"""Kafka error codes the broker answers with, and the codec's own exceptions.

The numbers are the protocol's (``org.apache.kafka.common.protocol.Errors``); every handler takes
its codes from here so a code is spelled once.
"""

from __future__ import annotations

NONE = 0
UNKNOWN_SERVER_ERROR = -1
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
NOT_COORDINATOR = 16
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUIRED_ACKS = 21
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40
INVALID_REQUEST = 42
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46
INVALID_PRODUCER_EPOCH = 47
SASL_AUTHENTICATION_FAILED = 58
UNKNOWN_PRODUCER_ID = 59
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
UNSUPPORTED_COMPRESSION_TYPE = 76
UNKNOWN_TOPIC_ID = 100


class KafkaCodecError(Exception):
    """The peer sent bytes that are not a request we can answer; nothing else leaves the codec."""


class RequestTooLarge(KafkaCodecError):
    """A frame longer than ``max_request_bytes`` (Kafka closes the connection)."""


class MalformedRequest(KafkaCodecError):
    """A frame that does not decode as the request its header names (Kafka closes the connection)."""


class UnsupportedRequest(KafkaCodecError):
    """An API key or version this broker does not serve; ApiVersions still gets an answer."""

    def __init__(self, api_key: int, api_version: int, correlation_id: int) -> None:
        super().__init__(f"unsupported api key {api_key} version {api_version}")
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id


class CorruptBatch(Exception):
    """A produced record batch fails its CRC, has the wrong magic or is cut short."""

    def __init__(self, message: str, code: int = CORRUPT_MESSAGE) -> None:
        super().__init__(message)
        self.code = code
