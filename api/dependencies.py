"""FastAPI dependencies that hand a route the broker, its store and its services, typed.

A part that has not started (or has begun stopping) is a 503 problem, so routes never see a
half-built one. They are ``async def``: FastAPI would run a plain ``def`` in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from api.problems import NO_SERVICE, NO_STORE, ProblemError
from robustmq.agents.api import AgentApiService
from robustmq.agents.mq9 import Mq9Service
from robustmq.agents.pipelines import PipelineService
from robustmq.agents.tools import ToolService
from robustmq.broker import Broker, Component
from robustmq.store import Store

C = TypeVar("C", bound=Component)


async def get_broker(request: Request) -> Broker:
    return request.app.state.broker


def running(part: Callable[[Broker], C], problem: str) -> Callable[[Request], Coroutine[Any, Any, C]]:
    """A dependency handing over ``part(broker)`` once it has started, else 503 with ``problem``."""

    async def dependency(request: Request) -> C:
        broker: Broker = request.app.state.broker
        component = part(broker)
        if not broker.is_started(component):
            raise ProblemError(503, problem)
        return component

    return dependency


get_store = running(lambda b: b.store, NO_STORE)
get_mq9 = running(lambda b: b.mq9, NO_SERVICE.format(name="mq9"))
get_agent_api = running(lambda b: b.agent_api, NO_SERVICE.format(name="agent API"))
get_tools = running(lambda b: b.tools, NO_SERVICE.format(name="tool"))
get_pipelines = running(lambda b: b.pipelines, NO_SERVICE.format(name="pipeline"))

BrokerDep = Annotated[Broker, Depends(get_broker)]
StoreDep = Annotated[Store, Depends(get_store)]
Mq9Dep = Annotated[Mq9Service, Depends(get_mq9)]
AgentApiDep = Annotated[AgentApiService, Depends(get_agent_api)]
ToolsDep = Annotated[ToolService, Depends(get_tools)]
PipelinesDep = Annotated[PipelineService, Depends(get_pipelines)]
