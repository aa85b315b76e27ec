"""FastAPI dependencies that hand a route the broker, its store and its services, typed.

A service that has not started (or has begun stopping) is a 503 problem, so routes never see a
half-built part. They are ``async def``: FastAPI would run a plain ``def`` in a worker thread.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request

from api.problems import NO_SERVICE, NO_STORE, ProblemError
from robustmq.agents.api import AgentApiService
from robustmq.agents.mq9 import Mq9Service
from robustmq.agents.pipelines import PipelineService
from robustmq.agents.tools import ToolService
from robustmq.broker import Broker, Component
from robustmq.store import Store

C = TypeVar("C", bound=Component)


def _running(broker: Broker, component: C, name: str) -> C:
    if not broker.is_started(component):
        raise ProblemError(503, NO_SERVICE.format(name=name))
    return component


async def get_broker(request: Request) -> Broker:
    return request.app.state.broker


async def get_store(request: Request) -> Store:
    broker: Broker = request.app.state.broker
    if not broker.is_started(broker.store):
        raise ProblemError(503, NO_STORE)
    return broker.store


async def get_mq9(request: Request) -> Mq9Service:
    broker: Broker = request.app.state.broker
    return _running(broker, broker.mq9, "mq9")


async def get_agent_api(request: Request) -> AgentApiService:
    broker: Broker = request.app.state.broker
    return _running(broker, broker.agent_api, "agent API")


async def get_tools(request: Request) -> ToolService:
    broker: Broker = request.app.state.broker
    return _running(broker, broker.tools, "tool")


async def get_pipelines(request: Request) -> PipelineService:
    broker: Broker = request.app.state.broker
    return _running(broker, broker.pipelines, "pipeline")


BrokerDep = Annotated[Broker, Depends(get_broker)]
StoreDep = Annotated[Store, Depends(get_store)]
Mq9Dep = Annotated[Mq9Service, Depends(get_mq9)]
AgentApiDep = Annotated[AgentApiService, Depends(get_agent_api)]
ToolsDep = Annotated[ToolService, Depends(get_tools)]
PipelinesDep = Annotated[PipelineService, Depends(get_pipelines)]
