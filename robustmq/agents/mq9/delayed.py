"""Delayed SENDs (``mq9-delay``): held in a stream of their own, appended to the mailbox when due.

A delayed message gets its msg_id only when it is released (MQ9.md), so it cannot sit in the
mailbox's own log beforehand. The held record keeps the address as its subject and the original
header block, which carries every ``mq9-*`` option, so a restart can re-arm the timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from robustmq.store import Record, Store

HELD_STREAM = "$mq9.delayed"
READ_CHUNK = 256


class DelayedSends:
    """Timers for held messages; ``release(record)`` is called when one is due."""

    def __init__(self, store: Store, release: Callable[[Record], None]) -> None:
        self.store = store
        self._release = release
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, delay_of: Callable[[Record], int]) -> int:
        """Re-arm every held message; returns how many there are."""
        self._loop = asyncio.get_running_loop()
        self.store.create_stream({"name": HELD_STREAM, "kind": "mq9_delayed"}, exist_ok=True)
        offset = self.store.first_offset(HELD_STREAM)
        end = self.store.end_offset(HELD_STREAM)
        count = 0
        while offset < end:
            chunk = self.store.read(HELD_STREAM, offset, READ_CHUNK)
            if not chunk:
                break
            for rec in chunk:
                self._arm(rec.offset, rec.timestamp_ms / 1000.0 + delay_of(rec))
                count += 1
            offset = chunk[-1].offset + 1
        return count

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def hold(self, address: str, payload: bytes, headers: bytes | None, delay_s: int) -> Any:
        """Keep a message for ``delay_s`` seconds; returns the store's ack of the held copy."""
        ack = self.store.append(HELD_STREAM, payload, subject=address, headers=headers)
        self._arm(ack.offset, self._now() + delay_s)
        return ack

    def _now(self) -> float:
        return self.store.clock.now_ms() / 1000.0

    def _arm(self, offset: int, due_s: float) -> None:
        assert self._loop is not None
        self._timers[offset] = self._loop.call_later(max(0.0, due_s - self._now()), self._fire, offset)

    def _fire(self, offset: int) -> None:
        self._timers.pop(offset, None)
        rec = self.store.get(HELD_STREAM, offset)
        if rec is None:
            return
        try:
            self._release(rec)
        finally:
            self.store.delete(HELD_STREAM, offset)
