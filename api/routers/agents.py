"""``/api/v1/agents``, ``/discover``, ``/invoke``: the agent registry and invocation over HTTP.

Models and error codes are the agent API's own, so REST and NATS never drift.
"""

from __future__ import annotations

import bisect
import itertools
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api import agent_calls
from api.dependencies import AgentApiDep
from api.limits import PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, decode_cursor, encode_cursor
from api.problems import BAD_CURSOR, Problem, ProblemError
from api.security import origin_of, principal_of
from robustmq.agents.api.errors import UNKNOWN_AGENT, ApiError
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

Service = AgentApiDep
AgentName = Annotated[str, Path(min_length=1, max_length=MAX_AGENT_NAME_CHARS, pattern=AGENT_NAME_PATTERN)]


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        403: "the agent (or its mailbox) belongs to another user",
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


def _record(service: Any, name: str) -> AgentRecord | None:
    record = service.directory.get(name)
    if record is None:
        registry = service.link.registry
        entry = registry.agents.get(name) if registry is not None else None
        if entry is not None and entry.card is not None:
            record = AgentRecord(name, entry.card, created_ms=int(entry.create_time) * 1000)
    return record


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
) -> Response:
    now = _now_ms()
    names = service.agent_names()  # kept in order by the service, rebuilt when the registry moves
    start = 0
    if cursor:
        after = decode_cursor(cursor)
        if not isinstance(after, str):
            raise ProblemError(400, BAD_CURSOR)
        start = bisect.bisect_right(names, after)
    if capability or text or status is not None:
        needle = text.lower() if text else None
        records = []
        for name in itertools.islice(names, start, None):
            record = _record(service, name)
            if record is None or (capability and not record.skill_matches(capability)):
                continue
            if needle is not None and not _matches_text(record, needle):
                continue
            if status is not None and service.agent_status(name, now) != status:
                continue
            records.append(record)
            if len(records) > limit:
                break
    else:
        # the common listing: a slice of the kept order; only the page's records are built
        records = [r for r in (_record(service, n) for n in names[start : start + limit + 1]) if r]
    page = records[:limit]
    next_cursor = encode_cursor(page[-1].name) if len(records) > limit and page else None
    items = [service.agent_info(r, now) for r in page]
    # the service's views are AgentInfo already: encoded once, not validated a second time
    return Response(orjson.dumps({"items": items, "next_cursor": next_cursor}), media_type="application/json")


@router.post(
    "/agents",
    status_code=201,
    response_model=AgentInfo,
    summary="register (or update) an agent's card",
    responses=_problems(403),
    description="Registers the card only; instances come online over NATS (AGENT.REGISTER) and "
    "take the invocations. Until one does, invocations fail fast or queue (on_offline).",
)
async def register_agent(body: RegisterRequest, request: Request, service: Service) -> AgentInfo:
    agent_calls.json_bytes(body.model_dump())  # the card is journalled as JSON: refuse what cannot be
    principal_of(request).require_publish(f"{agent_calls.API_PREFIX}AGENT.REGISTER")
    try:
        # another user's agent name or mailbox is 403, as REGISTER over NATS; a new one is the caller's
        owner = service.check_registration(body.name, body.mailbox, origin_of(request))
    except ApiError as exc:
        raise agent_calls.problem_of_reply(exc.reply()) from None
    record = service.register_card(body, owner=owner)
    return AgentInfo.model_validate(service.agent_info(record, _now_ms()))


@router.get("/agents/{name}", response_model=AgentInfo, summary="one agent", responses=_problems(404))
async def get_agent(name: AgentName, service: Service) -> AgentInfo:
    record = _record(service, name)
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
    responses=_problems(403, 404, 503, 504),
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
    openapi_extra=agent_calls.json_request_body(InvokeRequest),
)
async def invoke_agent(name: AgentName, request: Request, service: Service) -> Response:
    return await agent_calls.invoke(
        request, InvokeRequest, f"AGENT.INVOKE.{name}", "/api/v1/tasks/", "task_id"
    )


@router.post(
    "/invoke",
    response_model=InvokeReply,
    response_model_exclude={"error"},
    summary="invoke by intent: discovery picks the best live agent",
    responses=INVOKE_RESPONSES,
    openapi_extra=agent_calls.json_request_body(IntentInvokeRequest),
)
async def invoke_by_intent(request: Request, service: Service) -> Response:
    # an empty body fails validation (intent is required), so it never reaches the service
    return await agent_calls.invoke(request, IntentInvokeRequest, "INVOKE", "/api/v1/tasks/", "task_id")
