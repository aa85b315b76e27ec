"""Kafka topic T = stream T: topic ids, name rules, header conversion and the partition choice.

Creating a topic over Kafka creates a stream with subject filter ``T`` (so a NATS, MQTT or AMQP
publish on ``T`` is appended to it); any stream created elsewhere is a topic under its own name.
"""

from __future__ import annotations

import itertools
import re
import uuid
from typing import TYPE_CHECKING, Any

from kafka.partitioner.default import murmur2

from robustmq.bridges.kafka.limits import MAX_TOPIC_NAME_CHARS
from robustmq.headers import decode_headers, encode_headers
from robustmq.subjects import is_valid_subject

if TYPE_CHECKING:
    from robustmq.router import Router
    from robustmq.store import Store, StreamConfig

KEY_HEADER = "kafka-key"  # how a record key travels to NATS and MQTT subscribers
MQ9_KEY_HEADER = "mq9-key"
TOPIC_ID_METADATA = "kafka_topic_id"
STREAM_KIND = "kafka"
_VALID_TOPIC = re.compile(r"^[A-Za-z0-9._-]+$")
_ID_NAMESPACE = uuid.UUID("6f1d4c4e-8a57-4e55-9f0c-7a3f0d1c2b10")


def is_valid_topic_name(name: str) -> bool:
    """Kafka's rule for names of topics created over Kafka (streams made elsewhere are not checked)."""
    return (
        0 < len(name) <= MAX_TOPIC_NAME_CHARS and name not in (".", "..") and bool(_VALID_TOPIC.match(name))
    )


def topic_id(config: StreamConfig) -> uuid.UUID:
    """The topic's id: chosen at creation over Kafka, derived from the name for other streams."""
    text = config.metadata.get(TOPIC_ID_METADATA)
    if text:
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
    return uuid.uuid5(_ID_NAMESPACE, config.name)


def new_topic_config(name: str, partitions: int, configs: dict[str, str]) -> dict[str, Any]:
    """The stream definition of a topic created over Kafka (retention from its topic configs)."""
    cfg: dict[str, Any] = {
        "name": name,
        "subjects": [name] if is_valid_subject(name) else [],
        "partitions": partitions,
        "kind": STREAM_KIND,
        "metadata": {TOPIC_ID_METADATA: str(uuid.uuid4())},
    }
    retention_ms = configs.get("retention.ms")
    if retention_ms is not None and int(retention_ms) > 0:
        cfg["max_age_s"] = int(retention_ms) / 1000
    retention_bytes = configs.get("retention.bytes")
    if retention_bytes is not None and int(retention_bytes) > 0:
        cfg["max_bytes"] = int(retention_bytes)
    if configs.get("cleanup.policy") == "compact":
        cfg["compact"] = True
    return cfg


def default_partition(key: bytes | None, partitions: int, counter: itertools.count) -> int:
    """Kafka's default partitioner: murmur2 of the key, round-robin without one."""
    if partitions <= 1:
        return 0
    if key is None:
        return next(counter) % partitions
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def kafka_headers_to_block(
    headers: list[tuple[str, bytes | None]], key: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """Record headers as (stored block, live block): the live one also carries ``kafka-key``.

    Values become text (UTF-8, undecodable bytes replaced; line breaks become spaces), the form
    every other protocol's headers take."""
    items = [(_text(k), _text(v or b"")) for k, v in headers]
    stored = encode_headers(items)
    if key is None:
        return stored, stored
    return stored, encode_headers([*items, (KEY_HEADER, _text(key))])


def block_to_kafka_headers(block: bytes | None) -> list[tuple[str, bytes | None]]:
    return [(k, v.encode()) for k, v in decode_headers(block) if k.lower() != KEY_HEADER]


def _text(value: str | bytes) -> str:
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return text.replace("\r", " ").replace("\n", " ")


class TopicIngest:
    """The ingest of a stream created over Kafka: a publish from another protocol on ``T`` gets the
    key of its ``kafka-key`` (or ``mq9-key``) header and the partition Kafka's partitioner picks."""

    def __init__(self, store: Store, router: Router, name: str) -> None:
        self.store = store
        self.router = router
        self.name = name
        self._round_robin = itertools.count()

    def __call__(self, subject: str, headers: bytes | None, payload: bytes) -> dict[str, Any] | None:
        key: bytes | None = None
        kept = []
        for k, v in decode_headers(headers):
            lower = k.lower()
            if lower == KEY_HEADER or (lower == MQ9_KEY_HEADER and key is None):
                key = v.encode()
                if lower == KEY_HEADER:
                    continue
            kept.append((k, v))
        partitions = self.store.stream_config(self.name).partitions
        return {
            "key": key,
            "headers": encode_headers(kept),
            "partition": default_partition(key, partitions, self._round_robin),
        }
