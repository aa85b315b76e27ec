"""What a running skill knows about its task: id, deadline, cancellation, and how to report progress.

A skill gets one by declaring a parameter of type ``TaskContext``; events go to
``$mq9.AI.TASK.EVENT.<task_id>``, where the broker records them for the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mq9 import subjects

Publish = Callable[[str, bytes], Awaitable[None]]


class TaskContext:
    """One invocation in progress. ``progress()`` works from async and from sync (threaded) skills."""

    def __init__(
        self,
        task_id: str,
        skill: str,
        deadline_ms: int | None,
        publish: Publish,
        loop: asyncio.AbstractEventLoop,
        agent: str = "",
        instance_id: str = "",
    ) -> None:
        self.task_id = task_id
        self.skill = skill
        self.deadline_ms = deadline_ms
        self.agent = agent
        self.instance_id = instance_id
        self._publish = publish
        self._loop = loop
        self._cancelled = asyncio.Event()
        self._pending: list[asyncio.Future[None] | concurrent.futures.Future[None]] = []

    @property
    def cancelled(self) -> bool:
        """True once the caller (or the broker) has cancelled this task."""
        return self._cancelled.is_set()

    async def wait_cancelled(self) -> None:
        """Returns when the task is cancelled."""
        await self._cancelled.wait()

    @property
    def remaining_s(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        if not self.deadline_ms:
            return None
        return max(0.0, self.deadline_ms / 1000.0 - time.time())

    def progress(self, data: Any = None, **fields: Any) -> Awaitable[None] | concurrent.futures.Future[None]:
        """Report progress (``ctx.progress({"pct": 40})`` or ``ctx.progress(pct=40)``); awaiting is optional."""
        return self.event("progress", data if not fields else {**(data or {}), **fields})

    def artifact(self, data: Any) -> Awaitable[None] | concurrent.futures.Future[None]:
        """Report a partial result."""
        return self.event("artifact", data)

    def input_required(self, data: Any) -> Awaitable[None] | concurrent.futures.Future[None]:
        """Tell the caller that the task waits for more input."""
        return self.event("input-required", data)

    def event(self, type_: str, data: Any) -> Awaitable[None] | concurrent.futures.Future[None]:
        body = json.dumps({"type": type_, "data": data}, default=str).encode()
        coro = self._publish(subjects.task_event(self.task_id), body)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        future: asyncio.Future[None] | concurrent.futures.Future[None]
        if running is self._loop:
            future = asyncio.ensure_future(coro)
        else:  # a sync skill running in a worker thread: the caller may .result() it
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending.append(future)
        return future

    def _cancel(self) -> None:
        self._cancelled.set()

    async def _flush(self) -> None:
        """Wait until every reported event is on the wire (before the reply goes out)."""
        if self._pending:
            pending, self._pending = self._pending, []
            waits = [
                asyncio.wrap_future(f) if isinstance(f, concurrent.futures.Future) else f for f in pending
            ]
            await asyncio.gather(*waits, return_exceptions=True)
