"""FastAPI dependencies that hand a route the broker and its services (no NATS round trip to itself).

A route asks for what it uses; a service the broker was built without answers 503, never a crash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

if TYPE_CHECKING:
    from robustmq.broker import Broker


def get_broker(request: Request) -> Broker:
    return request.app.state.broker


BrokerDep = Annotated[Any, Depends(get_broker)]
