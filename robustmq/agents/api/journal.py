"""Persistence of the agent API: one stream of the store holding task, event and agent records.

Records are gathered for ``JOURNAL_FLUSH_MS`` and go out as one store record (a JSON array),
appended without waiting (the store's group commit makes them durable); they are read back in
order at start-up. Gathering keeps the store's commits and syncs few however busy the API is. Without a store (in-process tests) the
records stay in memory.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable
from typing import Any

import orjson

from robustmq.agents.api import limits
from robustmq.agents.api.tasks import MemoryJournal, TaskJournal

log = logging.getLogger("robustmq.agents.api")

REPLAY_BATCH_RECORDS = 4096
TASK_RETENTION_S = 7 * 24 * 3600.0


class StoreJournal:
    """Appends records to ``limits.TASK_STREAM`` and replays them from its first offset."""

    def __init__(self, store: Any, stream: str = limits.TASK_STREAM) -> None:
        self.store = store
        self.stream = stream
        self._failed = False
        self._pending: list[dict[str, Any]] = []
        self._flush_timer: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        from robustmq.store import StreamConfig

        config = StreamConfig(
            name=self.stream,
            subjects=[],
            max_age_s=TASK_RETENTION_S,
            kind="agent_api",
            description="agent API tasks, task events and agent registrations",
        )
        self.store.create_stream(config, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        pending = self._pending
        pending.append(record)
        if len(pending) >= limits.JOURNAL_FLUSH_MAX_RECORDS:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                limits.JOURNAL_FLUSH_MS / 1000, self.flush
            )

    def flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self.store.append(self.stream, orjson.dumps(batch))
        except Exception as exc:
            if not self._failed:  # one line, not one per batch
                log.error("agent API journal: cannot append to stream %s: %s", self.stream, exc)
                self._failed = True

    async def close(self) -> None:
        self.flush()

    async def replay(self) -> Iterable[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = self.store.first_offset(self.stream)
        while True:
            batch = self.store.read(self.stream, offset, REPLAY_BATCH_RECORDS)
            if not batch:
                break
            for rec in batch:
                try:
                    value = orjson.loads(rec.payload)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, list):
                    out.extend(v for v in value if isinstance(v, dict))
                elif isinstance(value, dict):
                    out.append(value)
            offset = batch[-1].offset + 1
        return out


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def journal_for(broker: Any) -> TaskJournal:
    """The broker's store journal, or a memory journal when the broker has no store."""
    store = getattr(broker, "store", None)
    if store is None:
        return MemoryJournal()
    journal = StoreJournal(store)
    await journal.open()
    return journal
