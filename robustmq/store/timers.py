"""The store's clock and timer heap: TTL, delayed delivery, ack-wait and retention run on these.

``ManualClock`` replaces the wall clock in tests: advancing it fires every timer that fell due,
so TTL, delay and retention are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable


class Clock:
    """Wall-clock milliseconds since the epoch."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def on_advance(self, fn: Callable[[], None]) -> None:
        """Called after a manual clock moves (the wall clock never calls it)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)


class ManualClock(Clock):
    """A clock that only moves when told to."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        super().__init__()
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms
        for fn in list(self._listeners):
            fn()

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms
        for fn in list(self._listeners):
            fn()


class TimerHeap:
    """Callbacks due at a clock time. One ``call_later`` is armed for the earliest entry only."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None
        clock.on_advance(self.run_due)

    def close(self) -> None:
        self.clock.remove_listener(self.run_due)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, due_ms: int, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (due_ms, next(self._seq), fn))
        if self._armed_for is None or due_ms < self._armed_for:
            self._arm()

    def run_due(self) -> None:
        now = self.clock.now_ms()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, fn = heapq.heappop(heap)
            fn()
        self._arm()

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_for = None
        if not self._heap:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (synchronous use): timers fire on the next run_due
        due = self._heap[0][0]
        delay_s = max(0.0, (due - self.clock.now_ms()) / 1000.0)
        self._armed_for = due
        self._handle = loop.call_later(delay_s, self.run_due)
