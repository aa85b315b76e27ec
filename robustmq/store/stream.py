"""Stream definitions: what a stream is called, which subjects feed it, and how long it keeps data.

Definitions are validated here (from Python, from the control plane and from the config file)
and saved in the data directory (``streams.json`` plus a journal) so they survive a restart.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from robustmq.subjects import is_valid_subject

MAX_STREAM_NAME_CHARS = 255
MAX_PARTITIONS = 1024
_BAD_NAME = re.compile(r"[\x00-\x1f/\\\s*>]")


def is_valid_stream_name(name: str) -> bool:
    return 0 < len(name) <= MAX_STREAM_NAME_CHARS and name not in (".", "..") and not _BAD_NAME.search(name)


class StreamConfig(BaseModel):
    """One stream. Limits of 0 / ``None`` mean unlimited.

    - ``subjects``: filters (``*``, ``>``) — a publish on a matching subject from any protocol is appended.
    - ``max_age_s``, ``max_msgs``, ``max_bytes``: retention, oldest records go first.
    - ``default_ttl_s``: TTL of records appended without their own.
    - ``compact``: only the newest record per key is visible; a background job reclaims the space.
    - ``storage``: ``file`` (the segment log) or ``memory`` (lost at restart, definition kept).
    - ``drop_consumed``: records below every consumer's ack floor are dropped, whole segments at a
      time (a work queue, e.g. an AMQP durable queue); without consumers nothing is dropped by it.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    subjects: list[str] = Field(default_factory=list)
    partitions: int = Field(1, ge=1, le=MAX_PARTITIONS)
    max_age_s: float | None = Field(None, ge=0)
    max_msgs: int | None = Field(None, ge=0)
    max_bytes: int | None = Field(None, ge=0)
    default_ttl_s: float | None = Field(None, ge=0)
    storage: Literal["file", "memory"] = "file"
    compact: bool = False
    drop_consumed: bool = False
    description: str = ""
    kind: str = "stream"  # free label for the owner: mailbox, kafka, mqtt_session, amqp_queue, ...
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not is_valid_stream_name(v):
            raise ValueError(f"invalid stream name {v!r}")
        return v

    @field_validator("subjects")
    @classmethod
    def _check_subjects(cls, v: list[str]) -> list[str]:
        for s in v:
            if not is_valid_subject(s):
                raise ValueError(f"invalid subject filter {s!r}")
        return list(dict.fromkeys(v))

    @property
    def max_age_ms(self) -> int:
        return int(self.max_age_s * 1000) if self.max_age_s else 0

    @property
    def default_ttl_ms(self) -> int:
        return int(self.default_ttl_s * 1000) if self.default_ttl_s else 0


class StreamInfo(BaseModel):
    """State of a stream: offsets are per partition (``first_offset`` .. ``last_offset``)."""

    config: StreamConfig
    first_offset: int
    last_offset: int  # -1 when nothing was ever stored
    count: int  # records between first and last (deleted and expired ones included)
    bytes: int
    partitions: list[dict[str, int]]
    consumers: list[str]
