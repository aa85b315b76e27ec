"""``/api/v1/tools``: tools (list, get, define, delete, discover) and tool calls, sync or async.

Arguments are checked against the tool's input schema; a call is a task under ``/api/v1/tasks``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api import agent_calls
from api.dependencies import ToolsDep
from api.limits import PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, paginate
from api.problems import UNKNOWN_TOOL, Problem, ProblemError
from api.security import origin_of, principal_of
from robustmq.agents.api.errors import CONFLICT, ApiError
from robustmq.agents.api.limits import MAX_AGENT_NAME_CHARS
from robustmq.agents.api.schemas import AGENT_NAME_PATTERN, AgentStatus
from robustmq.agents.tools.schemas import (
    ToolDefineRequest,
    ToolDeregisterReply,
    ToolDiscoverRequest,
    ToolInfo,
    ToolInvokeReply,
    ToolInvokeRequest,
)

router = APIRouter(prefix="/tools", tags=["tools"])

Tools = ToolsDep
ToolName = Annotated[str, Path(min_length=1, max_length=MAX_AGENT_NAME_CHARS, pattern=AGENT_NAME_PATTERN)]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "invalid request or JSON Schema"},
    403: {"model": Problem, "description": "the tool belongs to another user"},
    409: {"model": Problem, "description": "the tool name belongs to a user of the NATS API"},
    404: {"model": Problem, "description": "no such tool"},
    408: {"model": Problem, "description": "the deadline passed"},
    502: {"model": Problem, "description": "the tool failed"},
    503: {"model": Problem, "description": "no live instance (or the tool service is not running)"},
    504: {"model": Problem, "description": "the agent API did not answer"},
}


class ToolList(BaseModel):
    tools: list[ToolInfo]


@router.get("", response_model=Page[ToolInfo], summary="list tools")
async def list_tools(
    tools: Tools,
    status: Annotated[AgentStatus | None, Query(description="only tools in this state")] = None,
    limit: Limit = PAGE_LIMIT_DEFAULT,
    cursor: CursorParam = None,
) -> Page[ToolInfo]:
    page, next_cursor = paginate(tools.tools(status), lambda t: t["name"], limit, cursor)
    return Page[ToolInfo](items=[ToolInfo.model_validate(t) for t in page], next_cursor=next_cursor)


@router.post(
    "/discover",
    response_model=ToolList,
    summary="find tools by words or meaning",
    responses={503: PROBLEMS[503], 504: PROBLEMS[504]},
)
async def discover_tools(body: ToolDiscoverRequest, request: Request, tools: Tools) -> dict[str, Any]:
    return await agent_calls.call(request, "TOOL.DISCOVER", body.model_dump(exclude_none=True))


@router.post(
    "",
    status_code=201,
    response_model=ToolInfo,
    summary="define (or update) a tool without an instance",
    description="Stores the definition only: the tool is down and calls get 503 until an instance "
    "registers the same name over NATS (TOOL.REGISTER), whose definition then wins.",
    responses={400: PROBLEMS[400], 409: PROBLEMS[409]},
)
async def define_tool(body: ToolDefineRequest, request: Request, tools: Tools) -> dict[str, Any]:
    agent_calls.json_bytes(body.model_dump())  # the definition is journalled as JSON
    principal = principal_of(request)
    principal.require_publish(f"{agent_calls.API_PREFIX}TOOL.REGISTER")
    owner = None if principal.is_admin else principal.user  # a new tool is the caller's, as over NATS
    try:
        record = tools.define(body, owner, taken_code=CONFLICT)
    except ApiError as exc:
        raise agent_calls.problem_of_reply(exc.reply()) from None
    return tools.tool_info(record, int(time.time() * 1000))


@router.delete(
    "/{name}",
    response_model=ToolDeregisterReply,
    response_model_exclude={"error"},
    summary="delete a tool's definition and deregister every instance",
    description="Running calls fail over or fail; each removed instance's next heartbeat is "
    "answered 404 and it must register again (which defines the tool again).",
    responses={403: PROBLEMS[403], 404: PROBLEMS[404]},
)
async def delete_tool(name: ToolName, request: Request, tools: Tools) -> dict[str, Any]:
    principal_of(request).require_publish(f"{agent_calls.API_PREFIX}TOOL.DEREGISTER.{name}")
    try:
        # the NATS handler itself: another user's tool is 403
        reply = tools.deregister_request(name, None, b"", origin_of(request))
    except ApiError as exc:
        raise agent_calls.problem_of_reply(exc.reply()) from None
    return {"name": name, "removed_instances": reply["removed_instances"]}


@router.get(
    "/{name}", response_model=ToolInfo, summary="one tool with its schemas", responses={404: PROBLEMS[404]}
)
async def get_tool(name: ToolName, tools: Tools) -> dict[str, Any]:
    record = tools.directory.get(name)
    if record is None:
        raise ProblemError(404, UNKNOWN_TOOL.format(name=name))
    return tools.tool_info(record, int(time.time() * 1000))


@router.post(
    "/{name}/invoke",
    response_model=ToolInvokeReply,
    response_model_exclude={"error"},
    summary="call a tool (sync: waits for the result; async: 202 with the task)",
    responses={202: {"model": ToolInvokeReply, "description": "async: the call was accepted"}, **PROBLEMS},
    openapi_extra=agent_calls.json_request_body(ToolInvokeRequest),
)
async def invoke_tool(name: ToolName, request: Request, tools: Tools) -> Response:
    return await agent_calls.invoke(
        request, ToolInvokeRequest, f"TOOL.INVOKE.{name}", "/api/v1/tasks/", "task_id"
    )
