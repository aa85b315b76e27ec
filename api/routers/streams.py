"""``/api/v1/streams``: create, list, inspect, change and delete streams; read their messages.

Definitions are the store's own ``StreamConfig``; reads go straight to the log (offset or time).
Changes are the admin's; other callers see the streams and records their user could receive.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from api.dependencies import StoreDep
from api.limits import PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, STREAM_MAX_DURATION_S
from api.messages import Message, PayloadEncoding, message_of
from api.paging import CursorParam, Limit, Page, paginate
from api.problems import DURATION_TOO_LONG, INTERNAL_STREAM, STREAM_NAME_MISMATCH, Problem, ProblemError
from api.security import require_admin
from api.stream_access import may_read_stream, record_filter, require_readable
from robustmq.store import StreamConfig, StreamInfo

router = APIRouter(prefix="/streams", tags=["streams"])

RATE_WINDOW_S = 60
INTERNAL_PREFIX = "$"  # the broker's own streams ($mq9...): readable, never changed from outside
NOT_FOUND = {404: {"model": Problem, "description": "no such stream"}}
FORBIDDEN = {403: {"model": Problem, "description": "an internal stream of the broker, or not an admin"}}
HIDDEN = {403: {"model": Problem, "description": "the caller's user may not read this stream"}}
ADMIN = [Depends(require_admin)]
StreamName = Annotated[str, Path(min_length=1, max_length=255, description="the stream's name")]


class StreamState(StreamInfo):
    """A stream's definition and state; ``rate_msgs_per_s`` averages the last minute of appends."""

    rate_msgs_per_s: float = Field(description=f"records appended per second over the last {RATE_WINDOW_S} s")


class MessagePage(BaseModel):
    items: list[Message]
    next_offset: int = Field(description="pass as offset to continue reading")


def _check_durations(config: StreamConfig) -> None:
    """The store turns these into integer milliseconds: refuse what cannot be one."""
    for field in ("max_age_s", "default_ttl_s"):
        value = getattr(config, field)
        if value is not None and value > STREAM_MAX_DURATION_S:
            raise ProblemError(400, DURATION_TOO_LONG.format(field=field, max=STREAM_MAX_DURATION_S))


def _refuse_internal(name: str) -> None:
    if name.startswith(INTERNAL_PREFIX):
        raise ProblemError(403, INTERNAL_STREAM.format(name=name))


def _state(store, name: str) -> StreamState:
    info = store.stream_info(name)
    since_ms = int((time.time() - RATE_WINDOW_S) * 1000)
    recent = 0
    for part in info.partitions:
        first = store.first_offset_at_or_after(name, since_ms, part["partition"])
        if first is not None:
            recent += store.end_offset(name, part["partition"]) - first
    return StreamState(**info.model_dump(), rate_msgs_per_s=round(recent / RATE_WINDOW_S, 3))


@router.post(
    "",
    dependencies=ADMIN,
    status_code=201,
    response_model=StreamState,
    summary="create a stream",
    responses={**FORBIDDEN, 409: {"model": Problem, "description": "a stream with this name exists"}},
)
async def create_stream(config: StreamConfig, store: StoreDep) -> StreamState:
    _refuse_internal(config.name)
    _check_durations(config)
    store.create_stream(config)
    return _state(store, config.name)


@router.get("", response_model=Page[StreamState], summary="list streams")
async def list_streams(
    request: Request,
    store: StoreDep,
    kind: Annotated[str | None, Query(max_length=64, description="only this kind (mailbox, ...)")] = None,
    limit: Limit = PAGE_LIMIT_DEFAULT,
    cursor: CursorParam = None,
) -> Page[StreamState]:
    configs = [
        c for c in store.list_streams() if (kind is None or c.kind == kind) and may_read_stream(request, c)
    ]
    page, next_cursor = paginate(configs, lambda c: c.name, limit, cursor)
    return Page[StreamState](items=[_state(store, c.name) for c in page], next_cursor=next_cursor)


@router.get(
    "/{name}",
    response_model=StreamState,
    summary="a stream's offsets, size and rate",
    responses={**NOT_FOUND, **HIDDEN},
)
async def get_stream(name: StreamName, request: Request, store: StoreDep) -> StreamState:
    require_readable(request, store, name)
    return _state(store, name)


@router.put(
    "/{name}",
    dependencies=ADMIN,
    response_model=StreamState,
    summary="change a stream's definition",
    responses={**NOT_FOUND, **FORBIDDEN},
)
async def update_stream(name: StreamName, config: StreamConfig, store: StoreDep) -> StreamState:
    _refuse_internal(name)
    _check_durations(config)
    if config.name != name:
        raise ProblemError(400, STREAM_NAME_MISMATCH.format(path=name, body=config.name))
    store.update_stream(config)
    return _state(store, name)


@router.delete(
    "/{name}",
    dependencies=ADMIN,
    status_code=204,
    summary="delete a stream and its data",
    responses={**NOT_FOUND, **FORBIDDEN},
)
async def delete_stream(name: StreamName, store: StoreDep) -> Response:
    _refuse_internal(name)
    store.delete_stream(name)
    return Response(status_code=204)


@router.get(
    "/{name}/messages",
    response_model=MessagePage,
    summary="read messages by offset or by time",
    responses={**NOT_FOUND, **HIDDEN},
)
async def read_messages(
    name: StreamName,
    request: Request,
    store: StoreDep,
    offset: Annotated[
        int | None, Query(ge=0, description="first offset to read (default: the first kept)")
    ] = None,
    since_ms: Annotated[
        int | None, Query(ge=0, description="read from the first record at or after this time")
    ] = None,
    partition: Annotated[int, Query(ge=0, le=1023)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
    encoding: PayloadEncoding = "text",
) -> MessagePage:
    require_readable(request, store, name)
    start = store.first_offset(name, partition) if offset is None else offset
    if since_ms is not None:
        found = store.first_offset_at_or_after(name, since_ms, partition)
        if found is None:
            return MessagePage(items=[], next_offset=store.end_offset(name, partition))
        start = max(start, found) if offset is not None else found
    records = store.read(name, start, limit, partition)
    # nothing visible from start to the end: continue from the end
    next_offset = records[-1].offset + 1 if records else max(start, store.end_offset(name, partition))
    readable = record_filter(request)
    if readable is not None:  # skipped records still move next_offset: the page stays resumable
        records = [r for r in records if readable(r.subject)]
    return MessagePage(items=[message_of(r, encoding) for r in records], next_offset=next_offset)
