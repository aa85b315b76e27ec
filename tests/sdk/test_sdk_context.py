"""Unit tests: TaskContext events, from the event loop and from a worker thread (no broker)."""

from __future__ import annotations

import asyncio
import json
import time

from mq9 import TaskContext


async def test_events_go_to_the_task_event_subject_in_order_and_flush_waits_for_them():
    sent: list[tuple[str, dict]] = []

    async def publish(subject: str, body: bytes) -> None:
        await asyncio.sleep(0)
        sent.append((subject, json.loads(body)))

    ctx = TaskContext("t1", "skill", None, publish, asyncio.get_running_loop())
    ctx.progress({"pct": 10})
    ctx.progress(pct=20)
    ctx.artifact({"part": 1})
    ctx.input_required({"question": "which language?"})
    await ctx._flush()
    assert [s for s, _ in sent] == ["$mq9.AI.TASK.EVENT.t1"] * 4
    assert [b for _, b in sent] == [
        {"type": "progress", "data": {"pct": 10}},
        {"type": "progress", "data": {"pct": 20}},
        {"type": "artifact", "data": {"part": 1}},
        {"type": "input-required", "data": {"question": "which language?"}},
    ]


async def test_progress_from_a_worker_thread():
    sent: list[dict] = []

    async def publish(subject: str, body: bytes) -> None:
        sent.append(json.loads(body))

    ctx = TaskContext("t2", "skill", None, publish, asyncio.get_running_loop())
    await asyncio.to_thread(lambda: [ctx.progress(step=i) for i in range(3)])
    await ctx._flush()
    assert [e["data"] for e in sent] == [{"step": 0}, {"step": 1}, {"step": 2}]


async def test_cancellation_and_deadline():
    async def publish(subject: str, body: bytes) -> None: ...

    deadline_ms = int((time.time() + 60) * 1000)
    ctx = TaskContext("t3", "skill", deadline_ms, publish, asyncio.get_running_loop())
    assert not ctx.cancelled
    assert 0 < ctx.remaining_s <= 60
    waiter = asyncio.create_task(ctx.wait_cancelled())
    ctx._cancel()
    await asyncio.wait_for(waiter, 5)
    assert ctx.cancelled
    assert TaskContext("t4", "s", None, publish, asyncio.get_running_loop()).remaining_s is None
