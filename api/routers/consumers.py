"""``/api/v1/streams/{name}/consumers``: the durable cursors on a stream (create, list, inspect, delete).

A consumer's lag is ``num_waiting``: records after its ack floor not acked yet.
Creating and deleting one is the admin's; others see the consumers of streams they may read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from api.dependencies import StoreDep
from api.limits import PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, paginate
from api.problems import CONSUMER_EXISTS, NO_CONSUMER, Problem, ProblemError
from api.security import require_admin
from api.stream_access import require_readable
from robustmq.store import ConsumerConfig

router = APIRouter(prefix="/streams/{name}/consumers", tags=["streams"])

NOT_FOUND = {
    403: {"model": Problem, "description": "not an admin, or a stream the caller may not read"},
    404: {"model": Problem, "description": "no such stream or consumer"},
}
ADMIN = [Depends(require_admin)]
StreamName = Annotated[str, Path(min_length=1, max_length=255)]
ConsumerName = Annotated[str, Path(min_length=1, max_length=255)]
Partition = Annotated[int, Query(ge=0, le=1023)]


class ConsumerCreate(BaseModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^\s/]+$")
    partition: int = Field(0, ge=0, le=1023)
    config: ConsumerConfig = Field(default_factory=ConsumerConfig)


class ConsumerState(BaseModel):
    name: str
    stream: str
    partition: int
    config: ConsumerConfig
    ack_floor: int = Field(description="every offset below is acknowledged")
    cursor: int = Field(description="the next offset it will deliver")
    num_pending: int = Field(description="delivered, not acknowledged yet")
    num_acked_above_floor: int
    num_waiting: int = Field(description="lag: records at or after the floor not acknowledged yet")


def _state(info: dict[str, Any]) -> ConsumerState:
    return ConsumerState.model_validate(info)


def _existing(store: Any, stream: str, consumer: str, partition: int) -> Any:
    if consumer not in store.consumers(stream, partition):
        raise ProblemError(404, NO_CONSUMER.format(name=consumer, stream=stream))
    return store.consumer(stream, consumer, partition, create=False)


@router.post(
    "",
    dependencies=ADMIN,
    status_code=201,
    response_model=ConsumerState,
    summary="create a consumer",
    responses={**NOT_FOUND, 409: {"model": Problem, "description": "the consumer exists"}},
)
async def create_consumer(name: StreamName, body: ConsumerCreate, store: StoreDep) -> ConsumerState:
    if body.name in store.consumers(name, body.partition):
        raise ProblemError(409, CONSUMER_EXISTS.format(name=body.name, stream=name))
    consumer = store.consumer(name, body.name, body.partition, config=body.config)
    return _state(consumer.info())


@router.get("", response_model=Page[ConsumerState], summary="list a stream's consumers", responses=NOT_FOUND)
async def list_consumers(
    name: StreamName,
    request: Request,
    store: StoreDep,
    partition: Partition = 0,
    limit: Limit = PAGE_LIMIT_DEFAULT,
    cursor: CursorParam = None,
) -> Page[ConsumerState]:
    require_readable(request, store, name)
    names, next_cursor = paginate(store.consumers(name, partition), lambda n: n, limit, cursor)
    items = [_state(store.consumer(name, n, partition, create=False).info()) for n in names]
    return Page[ConsumerState](items=items, next_cursor=next_cursor)


@router.get(
    "/{consumer}", response_model=ConsumerState, summary="a consumer's position and lag", responses=NOT_FOUND
)
async def get_consumer(
    name: StreamName, consumer: ConsumerName, request: Request, store: StoreDep, partition: Partition = 0
):
    require_readable(request, store, name)
    return _state(_existing(store, name, consumer, partition).info())


@router.delete(
    "/{consumer}", status_code=204, dependencies=ADMIN, summary="delete a consumer", responses=NOT_FOUND
)
async def delete_consumer(
    name: StreamName, consumer: ConsumerName, store: StoreDep, partition: Partition = 0
) -> Response:
    if not store.delete_consumer(name, consumer, partition):
        raise ProblemError(404, NO_CONSUMER.format(name=consumer, stream=name))
    return Response(status_code=204)
