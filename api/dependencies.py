"""FastAPI dependencies that hand a route the broker and its store (no NATS round trip to itself).

They are ``async def``: FastAPI would run a plain ``def`` in a worker thread per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from api.problems import NO_STORE, ProblemError

if TYPE_CHECKING:
    from robustmq.broker import Broker


async def get_broker(request: Request) -> Broker:
    return request.app.state.broker


async def get_store(request: Request) -> Any:
    store = getattr(request.app.state.broker, "store", None)
    if store is None:
        raise ProblemError(503, NO_STORE)
    return store


BrokerDep = Annotated[Any, Depends(get_broker)]
StoreDep = Annotated[Any, Depends(get_store)]
