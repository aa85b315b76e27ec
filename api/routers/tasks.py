"""``/api/v1/tasks``: a task (get, cancel) and its events as resumable Server-Sent Events.

Event ids are per-task sequence numbers, so a reconnect with Last-Event-ID loses and repeats none.
A task is visible to its sender and its agent's owner only, as over NATS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

from api import agent_calls
from api.dependencies import AgentApiDep
from api.limits import SSE_KEEPALIVE_S
from api.problems import BAD_LAST_EVENT_ID, Problem, ProblemError
from robustmq.agents.api.schemas import TERMINAL_STATES, CancelReply, TaskRecord

router = APIRouter(prefix="/tasks", tags=["tasks"])

Service = AgentApiDep
TaskId = Annotated[str, Path(min_length=1, max_length=128)]
UPDATES_PREFIX = "$mq9.AI.TASK.UPDATES."
NOT_FOUND = {
    403: {"model": Problem, "description": "neither the caller's task nor its agent's"},
    404: {"model": Problem, "description": "no such task"},
}


@router.get("/{task_id}", response_model=TaskRecord, summary="a task's state and output", responses=NOT_FOUND)
async def get_task(task_id: TaskId, request: Request, service: Service) -> dict[str, Any]:
    return agent_calls.task_of(request, service, task_id).record()


@router.post(
    "/{task_id}/cancel",
    response_model=CancelReply,
    response_model_exclude={"error"},
    summary="cancel a task that has not finished",
    responses={
        **NOT_FOUND,
        409: {"model": Problem, "description": "the task already finished"},
        503: {"model": Problem, "description": "the agent API is not running"},
        504: {"model": Problem, "description": "the agent API did not answer"},
    },
)
async def cancel_task(task_id: TaskId, request: Request, service: Service) -> dict[str, Any]:
    return await agent_calls.call(request, f"TASK.CANCEL.{task_id}")


def _frame(event: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        event["seq"],
        str(event.get("type", "message")).encode(),
        orjson.dumps(event),
    )


def _is_final(event: dict[str, Any]) -> bool:
    data = event.get("data")
    return event.get("type") == "state" and isinstance(data, dict) and data.get("state") in TERMINAL_STATES


async def _event_stream(request: Request, service: Any, task: Any, after_seq: int) -> AsyncIterator[bytes]:
    router_ = request.app.state.broker.router
    closing: asyncio.Event = request.app.state.closing
    live: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    streams: set[asyncio.Queue] = request.app.state.event_streams
    streams.add(live)  # the server puts None here when it stops

    def on_update(subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        live.put_nowait(orjson.loads(payload))

    # subscribe before replaying, so nothing recorded in between is missed
    sub = router_.subscribe(UPDATES_PREFIX + task.id, on_update)
    sent = after_seq
    try:
        yield b"retry: 1000\n\n"
        while True:
            # replay (and fill any gap) from the task's own log
            while True:
                backlog = service.tasks.events_after(task, sent)
                for event in backlog:
                    yield _frame(event)
                    sent = event["seq"]
                    if _is_final(event):
                        return
                if not backlog:
                    break
            if task.finished and sent >= task.seq:
                return
            if closing.is_set():
                return
            try:
                event = await asyncio.wait_for(live.get(), SSE_KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if event is None:
                return
            seq = event.get("seq", 0)
            if seq <= sent:
                continue
            if seq > sent + 1:
                continue  # a gap: the replay above fetches it in order
            event.pop("task_id", None)
            event.pop("state", None)
            yield _frame(event)
            sent = seq
            if _is_final(event):
                return
    finally:
        streams.discard(live)
        router_.unsubscribe(sub)


@router.get(
    "/{task_id}/events",
    summary="the task's events as Server-Sent Events, resumable with Last-Event-ID",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "event stream",
        },
        **NOT_FOUND,
    },
)
async def task_events(
    task_id: TaskId,
    request: Request,
    service: Service,
    last_event_id: Annotated[str | None, Header(max_length=32, description="resume after this event")] = None,
    after_seq: Annotated[int | None, Query(ge=0, description="resume after this sequence number")] = None,
) -> StreamingResponse:
    task = agent_calls.task_of(request, service, task_id, "EVENTS")
    start = after_seq or 0
    if last_event_id:
        try:
            start = max(start, int(last_event_id))
        except ValueError:
            raise ProblemError(400, BAD_LAST_EVENT_ID.format(value=last_event_id)) from None
    return StreamingResponse(
        _event_stream(request, service, task, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
