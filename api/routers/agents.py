"""``/api/v1/agents``, ``/api/v1/discover``, ``/api/v1/invoke``: the agent registry and invocation.

Request and reply models are the agent API's own (``robustmq.agents.api.schemas``), so REST and NATS
never drift; errors carry the NATS API's codes (404 unknown agent, 503 nobody live, 408 deadline,
502 the agent failed). A sync invoke answers with the output; an async one with 202 and the task.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api import agent_calls
from api.limits import PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, paginate
from api.problems import Problem, ProblemError
from robustmq.agents.api.errors import UNKNOWN_AGENT
from robustmq.agents.api.limits import MAX_AGENT_NAME_CHARS
from robustmq.agents.api.registry import AgentRecord, card_text
from robustmq.agents.api.schemas import (
    AGENT_NAME_PATTERN,
    AgentInfo,
    AgentStatus,
    AgentStatusReply,
    DiscoveredAgent,
    DiscoverRequest,
    IntentInvokeRequest,
    InvokeReply,
    InvokeRequest,
    RegisterRequest,
)

router = APIRouter(tags=["agents"])

Service = Annotated[Any, Depends(agent_calls.agent_service)]
AgentName = Annotated[str, Path(min_length=1, max_length=MAX_AGENT_NAME_CHARS, pattern=AGENT_NAME_PATTERN)]


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        404: "no such agent",
        408: "the deadline passed",
        409: "already finished or canceled",
        502: "the agent failed",
        503: "no live instance (or the agent API is not running)",
        504: "the agent API did not answer",
    }
    return {code: {"model": Problem, "description": texts[code]} for code in codes}


class DiscoverResult(BaseModel):
    agents: list[DiscoveredAgent]


class Deregistered(BaseModel):
    name: str
    removed_instances: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def _matches_text(record: AgentRecord, text: str) -> bool:
    return text in card_text(record.card).lower() or text in record.name.lower()


@router.get("/agents", response_model=Page[AgentInfo], summary="list agents")
async def list_agents(
    service: Service,
    status: Annotated[AgentStatus | None, Query(description="only agents in this state")] = None,
    capability: Annotated[str | None, Query(max_length=256, description="a skill id or tag")] = None,
    text: Annotated[
        str | None, Query(max_length=256, description="words in the name, description or skills")
    ] = None,
    limit: Limit = PAGE_LIMIT_DEFAULT,
    cursor: CursorParam = None,
) -> Page[AgentInfo]:
    records = service.records()
    if capability:
        records = [r for r in records if r.skill_matches(capability)]
    if text:
        needle = text.lower()
        records = [r for r in records if _matches_text(r, needle)]
    now = _now_ms()
    if status is not None:
        records = [r for r in records if service.agent_status(r.name, now) == status]
    page, next_cursor = paginate(records, lambda r: r.name, limit, cursor)
    items = [AgentInfo.model_validate(service.agent_info(r, now)) for r in page]
    return Page[AgentInfo](items=items, next_cursor=next_cursor)


@router.post(
    "/agents",
    status_code=201,
    response_model=AgentInfo,
    summary="register (or update) an agent's card",
    description="Registers the card only; instances come online over NATS (AGENT.REGISTER) and "
    "take the invocations. Until one does, invocations fail fast or queue (on_offline).",
)
async def register_agent(body: RegisterRequest, service: Service) -> AgentInfo:
    agent_calls.json_bytes(body.card())  # the card is journalled as JSON: refuse what cannot be
    now = _now_ms()
    record = service.directory.get(body.name) or AgentRecord(body.name, body.card(), created_ms=now)
    record.card = body.card()
    record.mailbox = body.mailbox or record.mailbox
    record.metadata = body.metadata
    record.max_concurrency = body.max_concurrency
    record.heartbeat_interval_ms = body.heartbeat_interval_ms
    service.directory.put(record)
    service.link.register(record.name, record.card)
    if record.mailbox:
        service.link.create_mailbox(record.mailbox)
    return AgentInfo.model_validate(service.agent_info(record, now))


@router.get("/agents/{name}", response_model=AgentInfo, summary="one agent", responses=_problems(404))
async def get_agent(name: AgentName, service: Service) -> AgentInfo:
    record = service.record(name)
    if record is None:
        raise ProblemError(404, UNKNOWN_AGENT.format(name=name))
    return AgentInfo.model_validate(service.agent_info(record, _now_ms()))


@router.get(
    "/agents/{name}/status",
    response_model=AgentStatusReply,
    response_model_exclude={"error"},
    summary="an agent's instances, load and latency",
    responses=_problems(404, 503, 504),
)
async def agent_status(name: AgentName, request: Request, service: Service) -> dict[str, Any]:
    return await agent_calls.call(request, f"AGENT.STATUS.{name}")


@router.delete(
    "/agents/{name}",
    response_model=Deregistered,
    summary="deregister an agent and every instance",
    responses=_problems(404, 503, 504),
)
async def delete_agent(name: AgentName, request: Request, service: Service) -> dict[str, Any]:
    return await agent_calls.call(request, f"AGENT.DEREGISTER.{name}", {})


@router.post(
    "/discover",
    response_model=DiscoverResult,
    summary="find agents by capability, words or meaning",
    responses=_problems(503, 504),
)
async def discover(body: DiscoverRequest, request: Request, service: Service) -> dict[str, Any]:
    return await agent_calls.call(request, "AGENT.DISCOVER", body.model_dump(exclude_none=True))


def _invoke_answer(reply: dict[str, Any], mode: str) -> JSONResponse:
    body = InvokeReply.model_validate(reply).model_dump(exclude={"error"}, exclude_none=True)
    if mode == "async":
        return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/tasks/{body['task_id']}"})
    return JSONResponse(body)


INVOKE_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": InvokeReply, "description": "async: the task was accepted"},
    **_problems(404, 408, 409, 502, 503, 504),
}


@router.post(
    "/agents/{name}/invoke",
    response_model=InvokeReply,
    response_model_exclude={"error"},
    summary="invoke an agent (sync: waits for the output; async: 202 with the task)",
    responses=INVOKE_RESPONSES,
)
async def invoke_agent(
    name: AgentName, body: InvokeRequest, request: Request, service: Service
) -> JSONResponse:
    timeout_s = body.timeout_ms / 1000 + agent_calls.ANSWER_MARGIN_S
    reply = await agent_calls.call(
        request, f"AGENT.INVOKE.{name}", body.model_dump(exclude_none=True), timeout_s
    )
    return _invoke_answer(reply, body.mode)


@router.post(
    "/invoke",
    response_model=InvokeReply,
    response_model_exclude={"error"},
    summary="invoke by intent: discovery picks the best live agent",
    responses=INVOKE_RESPONSES,
)
async def invoke_by_intent(body: IntentInvokeRequest, request: Request, service: Service) -> JSONResponse:
    timeout_s = body.timeout_ms / 1000 + agent_calls.ANSWER_MARGIN_S
    reply = await agent_calls.call(request, "INVOKE", body.model_dump(exclude_none=True), timeout_s)
    return _invoke_answer(reply, body.mode)
