"""The structured message query over the DuckDB index (``Store.query``).

Pure: builds SQL text and parameters; the index worker runs them off the loop. User SQL is
checked by sql_guard.py instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from robustmq.store.errors import QueryError
from robustmq.store.records import PRIORITY_CODE, index_tags


@dataclass(slots=True)
class MessageQuery:
    """What ``Store.query`` asks for. Times in ms; ``subject`` is a filter with ``*`` and ``>``."""

    stream: str
    partition: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    key: bytes | None = None
    tags_any: list[str] = field(default_factory=list)
    tags_all: list[str] = field(default_factory=list)
    subject: str | None = None
    priority: str | None = None
    limit: int = 100
    order: str = "asc"


def subject_regex(pattern: str) -> str:
    """A NATS subject filter as an anchored regular expression."""
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r".+")
        else:
            parts.append(re.escape(token))
    return r"\.".join(parts)


def build_message_query(q: MessageQuery, now_ms: int, limit: int, skip: int) -> tuple[str, list[Any]]:
    """SQL for the (partition, offset) pairs matching ``q``, newest or oldest first."""
    where = ["stream = ?"]
    params: list[Any] = [q.stream]
    if q.partition is not None:
        where.append("partition = ?")
        params.append(q.partition)
    if q.since_ms is not None:
        where.append("ts >= ?")
        params.append(q.since_ms)
    if q.until_ms is not None:
        where.append("ts < ?")
        params.append(q.until_ms)
    if q.key is not None:
        where.append("key = ?")
        params.append(q.key)
    if q.tags_any:
        where.append("(" + " OR ".join(["contains(tags, ?)"] * len(q.tags_any)) + ")")
        params.extend(index_tags([t]) for t in q.tags_any)
    if q.tags_all:
        where.extend(["contains(tags, ?)"] * len(q.tags_all))
        params.extend(index_tags([t]) for t in q.tags_all)
    if q.subject:
        where.append("regexp_full_match(subject, ?)")
        params.append(subject_regex(q.subject))
    if q.priority is not None:
        if q.priority not in PRIORITY_CODE:
            raise QueryError(f"unknown priority {q.priority!r}")
        where.append("priority = ?")
        params.append(PRIORITY_CODE[q.priority])
    where.append("(expires_at = 0 OR expires_at > ?)")
    params.append(now_ms)
    where.append("deliver_after <= ?")
    params.append(now_ms)
    direction = "DESC" if q.order.lower() == "desc" else "ASC"
    sql = (
        "SELECT m.partition, m.off FROM msg_index m WHERE "
        + " AND ".join(where)
        + " AND NOT EXISTS (SELECT 1 FROM deletions d WHERE d.stream = m.stream"
        " AND d.partition = m.partition AND d.off = m.off)"
        + f" ORDER BY ts {direction}, partition, off {direction} LIMIT ? OFFSET ?"
    )
    params.extend([limit, skip])
    return sql, params
