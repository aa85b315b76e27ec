"""Requests and replies of ``$mq9.AI.API.TOOL.*`` as pydantic models (shared with the control plane).

Tool names follow agent names; ``input_schema`` and ``output_schema`` are JSON Schemas checked
when a tool registers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from robustmq.agents.api import limits as api_limits
from robustmq.agents.api.schemas import AGENT_NAME_PATTERN, AgentStatus, InvokeMode, OnOffline, TaskState
from robustmq.agents.tools import limits


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str = ""


class ToolDefineRequest(_Request):
    """A tool's definition without an instance (``POST /api/v1/tools``); instances register later."""

    name: str = Field(min_length=1, max_length=api_limits.MAX_AGENT_NAME_CHARS, pattern=AGENT_NAME_PATTERN)
    description: str = ""
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    max_concurrency: int = Field(limits.DEFAULT_TOOL_CONCURRENCY, ge=1, le=api_limits.MAX_CONCURRENCY)


class ToolRegisterRequest(ToolDefineRequest):
    """An instance registering: the definition (the newest one wins) and its heartbeat interval."""

    heartbeat_interval_ms: int = Field(
        api_limits.DEFAULT_HEARTBEAT_INTERVAL_MS,
        ge=api_limits.MIN_HEARTBEAT_INTERVAL_MS,
        le=api_limits.MAX_HEARTBEAT_INTERVAL_MS,
    )


class ToolRegisterReply(_Reply):
    name: str
    instance_id: str
    serve_subject: str
    heartbeat_interval_ms: int


class ToolDeregisterRequest(_Request):
    instance_id: str | None = None  # only this instance; without it the tool and every instance


class ToolDeregisterReply(_Reply):
    name: str
    removed_instances: int


class ToolHeartbeatRequest(_Request):
    instance_id: str = Field(min_length=1)


class ToolListRequest(_Request):
    status: AgentStatus | None = None


class ToolDiscoverRequest(_Request):
    text: str | None = None
    semantic: str | None = None
    live_only: bool = True
    limit: int = Field(limits.DEFAULT_DISCOVER_LIMIT, ge=1, le=api_limits.MAX_LIST_LIMIT)


class ToolInvokeRequest(_Request):
    arguments: dict[str, Any] = Field(default_factory=dict)
    timeout_ms: int = Field(api_limits.DEFAULT_TIMEOUT_MS, ge=1, le=api_limits.MAX_TIMEOUT_MS)
    mode: InvokeMode = "sync"
    on_offline: OnOffline = "fail"
    retries: int = Field(0, ge=0, le=api_limits.MAX_RETRIES)


class ToolInfo(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    status: AgentStatus
    live_instances: int = 0
    max_concurrency: int = 1
    score: float | None = None


class ToolListReply(_Reply):
    tools: list[ToolInfo]


class SchemaViolation(BaseModel):
    path: str
    message: str


class ToolInvokeReply(_Reply):
    task_id: str
    state: TaskState
    result: Any = None
    latency_ms: float | None = None
    instance_id: str | None = None


REQUEST_SCHEMAS: dict[str, dict[str, Any]] = {
    "TOOL.REGISTER": ToolRegisterRequest.model_json_schema(),
    "TOOL.DEREGISTER": ToolDeregisterRequest.model_json_schema(),
    "TOOL.HEARTBEAT": ToolHeartbeatRequest.model_json_schema(),
    "TOOL.LIST": ToolListRequest.model_json_schema(),
    "TOOL.DISCOVER": ToolDiscoverRequest.model_json_schema(),
    "TOOL.INVOKE": ToolInvokeRequest.model_json_schema(),
}
