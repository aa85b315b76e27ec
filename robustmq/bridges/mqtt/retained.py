"""Retained messages: the last retained PUBLISH per topic, handed to new subscriptions.

Kept in memory for matching; the listener journals every change to the store so they survive a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.topics import topic_matches


@dataclass(slots=True)
class RetainedMessage:
    topic: str
    payload: bytes
    qos: int
    properties: P.Properties | None = None
    expiry_at: float | None = None


class RetainedMessages:
    """Topic -> retained message; an empty payload deletes."""

    def __init__(self) -> None:
        self._by_topic: dict[str, RetainedMessage] = {}

    def __len__(self) -> int:
        return len(self._by_topic)

    def set(self, message: RetainedMessage) -> None:
        if message.payload:
            self._by_topic[message.topic] = message
        else:
            self._by_topic.pop(message.topic, None)

    def get(self, topic: str) -> RetainedMessage | None:
        return self._by_topic.get(topic)

    def matching(self, topic_filter: str) -> list[RetainedMessage]:
        """The live retained messages a new subscription to ``topic_filter`` receives."""
        now = time.time()
        out = []
        if "+" not in topic_filter and "#" not in topic_filter:
            candidates = [m for m in (self._by_topic.get(topic_filter),) if m is not None]
        else:
            candidates = [m for t, m in self._by_topic.items() if topic_matches(topic_filter, t)]
        for message in candidates:
            if message.expiry_at is not None and message.expiry_at <= now:
                self._by_topic.pop(message.topic, None)
                continue
            out.append(message)
        return out
