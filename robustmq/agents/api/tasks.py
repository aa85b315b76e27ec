"""Task records: the A2A states of one invocation, its events with a per-task seq, and persistence.

Every state change is itself an event (``type: "state"``), so ``after_seq`` replay and the live
``$mq9.AI.TASK.UPDATES.<id>`` feed carry the whole history. Records are written to a journal (a
stream of the store) and replayed at start-up.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from robustmq.agents.api import limits
from robustmq.agents.api.schemas import TERMINAL_STATES
from robustmq.agents.journal import StoreJournal

EVICT_MAX_SKIPS = 64  # unfinished tasks looked past per eviction round


def new_task_id() -> str:
    return os.urandom(12).hex()


class Task:
    """One invocation. The persisted fields are listed in ``_PERSISTED``; the rest is runtime."""

    __slots__ = (
        "id", "agent", "skill", "state", "input", "output", "error", "instance_id", "created_ms",
        "updated_ms", "deadline_ms", "mode", "on_offline", "retries", "attempts", "idempotency_key",
        "sender", "waiters", "intent", "candidates", "events", "seq",
        "reply_code",
        # runtime only
        "timer", "instance", "excluded", "queued", "dispatched_ns", "submitted_ns",
    )  # fmt: skip

    _PERSISTED = (
        "id", "agent", "skill", "state", "input", "output", "error", "instance_id", "created_ms",
        "updated_ms", "deadline_ms", "mode", "on_offline", "retries", "attempts", "idempotency_key",
        "sender", "waiters", "intent", "candidates", "reply_code",
    )  # fmt: skip

    def __init__(
        self,
        task_id: str,
        agent: str,
        input: Any,
        *,
        skill: str | None = None,
        created_ms: int,
        deadline_ms: int,
        mode: str = "sync",
        on_offline: str = "fail",
        retries: int = 0,
        idempotency_key: str | None = None,
        sender: str | None = None,
        intent: str | None = None,
        candidates: list[str] | None = None,
    ) -> None:
        self.id = task_id
        self.agent = agent
        self.skill = skill
        self.state = "submitted"
        self.input = input
        self.output: Any = None
        self.error: str | None = None
        self.instance_id: str | None = None
        self.created_ms = created_ms
        self.updated_ms = created_ms
        self.deadline_ms = deadline_ms
        self.mode = mode
        self.on_offline = on_offline
        self.retries = retries
        self.attempts = 0
        self.idempotency_key = idempotency_key
        self.sender = sender
        self.waiters: list[str] = []  # reply subjects of sync callers waiting for the outcome
        self.intent = intent
        self.candidates = candidates or []  # intent: the next agents to fail over to
        self.events: list[dict[str, Any]] = []
        self.seq = 0
        self.timer: Any = None
        self.instance: Any = None
        self.excluded: set[str] = set()
        self.queued = False
        self.dispatched_ns = 0
        self.submitted_ns = 0
        self.reply_code = 0

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    def record(self) -> dict[str, Any]:
        """The public task record (``TASK.GET``)."""
        return {
            "id": self.id,
            "agent": self.agent,
            "skill": self.skill,
            "state": self.state,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "instance_id": self.instance_id,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
        }

    def snapshot(self) -> dict[str, Any]:
        """The persisted fields (``_PERSISTED``): the public record plus the dispatch state."""
        snap = self.record()
        snap["deadline_ms"] = self.deadline_ms
        snap["mode"] = self.mode
        snap["on_offline"] = self.on_offline
        snap["retries"] = self.retries
        snap["attempts"] = self.attempts
        snap["idempotency_key"] = self.idempotency_key
        snap["sender"] = self.sender
        snap["waiters"] = self.waiters
        snap["intent"] = self.intent
        snap["candidates"] = self.candidates
        snap["reply_code"] = self.reply_code
        return snap

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> Task:
        task = cls.__new__(cls)
        for name in cls.__slots__:
            setattr(task, name, None)
        for name in cls._PERSISTED:
            setattr(task, name, snap.get(name))
        task.waiters = list(task.waiters or [])
        task.candidates = list(task.candidates or [])
        task.attempts = task.attempts or 0
        task.retries = task.retries or 0
        task.events = []
        task.seq = 0
        task.excluded = set()
        task.queued = False
        task.dispatched_ns = 0
        task.submitted_ns = 0
        task.reply_code = task.reply_code or 0
        return task


class TaskTable:
    """Tasks by id, their events, the idempotency window, and the journal they are written to.

    ``on_event(task, event)`` is called for every recorded event (the service republishes it).
    A finished task is archived as one JSON blob (no objects for the garbage collector to walk);
    finished tasks beyond ``MAX_TASKS_IN_MEMORY`` are forgotten, oldest first.
    """

    def __init__(
        self,
        journal: StoreJournal,
        clock_ms: Callable[[], int],
        on_event: Callable[[Task, dict[str, Any]], None] | None = None,
        max_tasks: int = limits.MAX_TASKS_IN_MEMORY,
    ) -> None:
        self.journal = journal
        self._clock_ms = clock_ms
        self._on_event = on_event
        self._max_tasks = max_tasks
        self.tasks: dict[str, Task | bytes] = {}
        self._order: deque[str] = deque()  # task ids, oldest first, for eviction
        self._idempotency: dict[tuple[str, str], tuple[str, int]] = {}

    def get(self, task_id: str) -> Task | None:
        """The task (a read-only copy when it has finished and was archived)."""
        task = self.tasks.get(task_id)
        if task.__class__ is bytes:
            return _restore(task)  # type: ignore[arg-type]
        return task  # type: ignore[return-value]

    def archive(self, task: Task) -> None:
        """Keep a finished task as a blob; the object itself can go."""
        if task.finished and self.tasks.get(task.id) is task:
            blob = orjson.dumps({**task.snapshot(), "events": task.events, "seq": task.seq})
            # an exact-size copy: orjson's result keeps its whole initial buffer (4 KiB) allocated
            self.tasks[task.id] = memoryview(blob).tobytes()

    def add(self, task: Task) -> None:
        self.tasks[task.id] = task
        self._order.append(task.id)
        if task.idempotency_key:
            self._idempotency[(task.agent if not task.intent else "", task.idempotency_key)] = (
                task.id,
                task.created_ms + limits.IDEMPOTENCY_WINDOW_MS,
            )
        self.journal.write({"k": "task", **task.snapshot()})
        self.add_event(task, "state", {"state": task.state})
        if len(self.tasks) > self._max_tasks:
            self._evict()

    def by_idempotency_key(self, scope: str, key: str) -> Task | None:
        entry = self._idempotency.get((scope, key))
        if entry is None:
            return None
        task_id, expires_ms = entry
        if self._clock_ms() >= expires_ms:
            del self._idempotency[(scope, key)]
            return None
        return self.get(task_id)

    def prune_idempotency(self) -> int:
        """Forget idempotency keys older than the window; returns how many went."""
        now = self._clock_ms()
        expired = [key for key, (_, expires_ms) in self._idempotency.items() if expires_ms <= now]
        for key in expired:
            del self._idempotency[key]
        return len(expired)

    def add_event(self, task: Task, type_: str, data: Any) -> dict[str, Any]:
        now = self._clock_ms()
        task.seq += 1
        event = {"seq": task.seq, "type": type_, "data": data, "ts_ms": now}
        if len(task.events) < limits.MAX_EVENTS_PER_TASK:
            task.events.append(event)
        task.updated_ms = now
        self.journal.write({"k": "ev", "t": task.id, **event})
        if self._on_event is not None:
            self._on_event(task, event)
        return event

    def set_state(self, task: Task, state: str, **fields: Any) -> None:
        """Move ``task`` to ``state``; ``fields`` (output, error, instance_id) go into the event too."""
        task.state = state
        for name, value in fields.items():
            setattr(task, name, value)
        self.add_event(task, "state", {"state": state, **fields})

    def events_after(self, task: Task, after_seq: int) -> list[dict[str, Any]]:
        events = task.events
        # seqs are 1..n without gaps, so the index is seq - 1
        start = max(0, min(after_seq, len(events)))
        return events[start : start + limits.MAX_EVENTS_PER_REPLY]

    def write_snapshot(self, task: Task) -> None:
        """Persist fields that changed outside a state event (waiters, attempts, agent)."""
        self.journal.write({"k": "task", **task.snapshot()})

    def recover(self, records: Iterable[dict[str, Any]]) -> list[Task]:
        """Rebuild every task from journal records; returns the tasks that were not finished."""
        for rec in records:
            kind = rec.get("k")
            if kind == "task":
                snap = {k: v for k, v in rec.items() if k != "k"}
                old = self.tasks.get(snap["id"])
                task = Task.from_snapshot(snap)
                if old is not None:
                    task.events, task.seq = old.events, old.seq
                if old is None:
                    self._order.append(task.id)
                self.tasks[task.id] = task
                if task.idempotency_key:
                    scope = task.agent if not task.intent else ""
                    self._idempotency[(scope, task.idempotency_key)] = (
                        task.id,
                        task.created_ms + limits.IDEMPOTENCY_WINDOW_MS,
                    )
            elif kind == "ev":
                task = self.tasks.get(rec.get("t", ""))
                if task is None:
                    continue
                event = {
                    "seq": rec["seq"],
                    "type": rec["type"],
                    "data": rec.get("data"),
                    "ts_ms": rec["ts_ms"],
                }
                if event["seq"] <= task.seq:
                    continue
                task.seq = event["seq"]
                task.events.append(event)
                task.updated_ms = event["ts_ms"]
                data = event["data"]
                if event["type"] == "state" and isinstance(data, dict):
                    task.state = data.get("state", task.state)
                    for name in ("output", "error", "instance_id"):
                        if name in data:
                            setattr(task, name, data[name])
                elif event["type"] == "input-required":
                    task.state = "input-required"
        unfinished = []
        for task in list(self.tasks.values()):
            if task.finished:
                self.archive(task)
            else:
                unfinished.append(task)
        if len(self.tasks) > self._max_tasks:
            self._evict()
        return unfinished

    def _evict(self) -> None:
        """Forget the oldest finished tasks while there are too many (O(1) per forgotten task)."""
        order = self._order
        skipped = 0
        while len(self.tasks) > self._max_tasks and order and skipped < EVICT_MAX_SKIPS:
            task_id = order[0]
            entry = self.tasks.get(task_id)
            if entry is None:
                order.popleft()
            elif entry.__class__ is bytes or entry.finished:  # type: ignore[union-attr]
                order.popleft()
                del self.tasks[task_id]
            else:  # still running: keep it, look at the next oldest
                order.rotate(-1)
                skipped += 1


def _restore(blob: bytes) -> Task:
    data = orjson.loads(blob)
    task = Task.from_snapshot(data)
    task.events = data.get("events") or []
    task.seq = data.get("seq") or len(task.events)
    return task
