"""A handle on one task of the agent API: its state, its result, its events, its cancellation.

Live updates on ``$mq9.AI.TASK.UPDATES.<id>`` only wake the handle; the recorded state and the
event log (``TASK.GET``, ``TASK.EVENTS`` from the last ``seq``) are the truth, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mq9 import defaults, errors, subjects

if TYPE_CHECKING:
    from mq9.client import Client


@dataclass(frozen=True)
class TaskEvent:
    """One recorded event: ``type`` is progress, artifact, input-required or a state change."""

    seq: int
    type: str
    data: Any = None
    ts_ms: int = 0

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> TaskEvent:
        return cls(
            seq=int(item.get("seq", 0)),
            type=str(item.get("type", "")),
            data=item.get("data"),
            ts_ms=int(item.get("ts_ms") or 0),
        )


def failure(task: dict[str, Any]) -> errors.Mq9Error:
    """The exception for a task that ended without output."""
    state = task.get("state", "")
    text = str(task.get("error") or f"task {state}")
    reply = {"task_id": task.get("id"), "state": state, "error": text}
    if state == "canceled":
        return errors.TaskCanceled(text, reply=reply)
    if state == "rejected":
        return errors.NoLiveAgent(text, reply=reply)
    if "deadline" in text.lower():
        return errors.DeadlineExceeded(text, reply=reply)
    return errors.TaskFailed(text, reply=reply)


class Task:
    """``task.id``; ``await task.result()``; ``async for ev in task.events(): ...``; ``await task.cancel()``."""

    def __init__(
        self, client: Client, task_id: str, agent: str = "", reply: dict[str, Any] | None = None
    ) -> None:
        self.client = client
        self.id = task_id
        self.agent = agent
        self.reply = reply or {}

    def __repr__(self) -> str:
        return f"Task({self.id!r}, agent={self.agent!r})"

    async def get(self) -> dict[str, Any]:
        """The task record: id, agent, skill, state, input, output, error, instance_id, times."""
        return dict((await self.client.request(subjects.task_op("GET", self.id)))["task"])

    async def state(self) -> str:
        return str((await self.get()).get("state", ""))

    async def cancel(self) -> str:
        """Cancel the task (the instance is told); ``Conflict`` if it has already finished."""
        reply = await self.client.request(subjects.task_op("CANCEL", self.id))
        return str(reply.get("state", "canceled"))

    @asynccontextmanager
    async def _wakeups(self) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the broker publishes an update of this task."""
        woken = asyncio.Event()

        async def on_update(_msg: Any) -> None:
            woken.set()

        sub = await self.client.nc.subscribe(subjects.task_updates(self.id), cb=on_update)
        try:
            yield woken
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is already closed
                pass

    @staticmethod
    async def _sleep_until(woken: asyncio.Event, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(woken.wait(), timeout_s)
        except TimeoutError:
            pass
        woken.clear()

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to finish; its output, or the exception of its failure."""
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._wakeups() as woken:
            while True:
                task = await self.get()
                if task.get("state") in defaults.TERMINAL_STATES:
                    if task["state"] == "completed":
                        return task.get("output")
                    raise failure(task)
                wait_s = defaults.TASK_POLL_S
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise errors.DeadlineExceeded(f"task {self.id} did not finish within {timeout:g} s")
                    wait_s = min(wait_s, left)
                await self._sleep_until(woken, wait_s)

    async def events(self, after_seq: int = 0, *, follow: bool = True) -> AsyncIterator[TaskEvent]:
        """Every event after ``after_seq`` in order, then live ones until the task ends (``follow``)."""
        last = after_seq
        async with self._wakeups() as woken:
            while True:
                reply = await self.client.request(subjects.task_op("EVENTS", self.id), {"after_seq": last})
                for item in reply.get("events") or []:
                    event = TaskEvent.from_wire(item)
                    if event.seq > last:
                        last = event.seq
                        yield event
                if not follow or reply.get("state") in defaults.TERMINAL_STATES:
                    return
                await self._sleep_until(woken, defaults.TASK_POLL_S)
