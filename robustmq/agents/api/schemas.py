"""Requests and replies of the agent API as pydantic models, and their JSON Schemas.

The NATS service validates every request body with these models and the control plane imports the
same models, so the two never drift. ``REQUEST_SCHEMAS`` holds the JSON Schema of each request.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from robustmq.agents import inputs
from robustmq.agents.api import errors, limits

AGENT_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
M = TypeVar("M", bound=BaseModel)
# the integers the JSON encoder of the journal and of every reply can write (orjson's range)
JSON_INT_MIN = -(2**63)
JSON_INT_MAX = 2**64 - 1
_LONG_DIGIT_RUN = re.compile(rb"\d{19}")  # an integer outside that range has at least 19 digits

TaskState = Literal["submitted", "working", "input-required", "completed", "failed", "canceled", "rejected"]
TERMINAL_STATES = frozenset({"completed", "failed", "canceled", "rejected"})
AgentStatus = Literal["healthy", "degraded", "down"]
InvokeMode = Literal["sync", "async"]
OnOffline = Literal["fail", "queue"]
AgentEventType = Literal["progress", "artifact", "input-required"]


class _Request(BaseModel):
    """Unknown fields are kept (an AgentCard carries many) and ignored by the service."""

    model_config = ConfigDict(extra="allow")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str = ""


# -- cards and registration ------------------------------------------------------------------------


class AgentSkill(_Request):
    id: str = Field(min_length=1)
    name: str = ""
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


class AgentCard(_Request):
    """An A2A AgentCard; the fields the broker reads are typed, the rest are kept as sent."""

    name: str = Field(min_length=1, max_length=limits.MAX_AGENT_NAME_CHARS, pattern=AGENT_NAME_PATTERN)
    description: str = ""
    version: str = ""
    skills: list[AgentSkill] = Field(default_factory=list)
    capabilities: dict[str, Any] = Field(default_factory=dict)


class RegisterRequest(AgentCard):
    mailbox: str | None = None
    max_concurrency: int = Field(1, ge=1, le=limits.MAX_CONCURRENCY)
    metadata: dict[str, Any] = Field(default_factory=dict)
    heartbeat_interval_ms: int = Field(
        limits.DEFAULT_HEARTBEAT_INTERVAL_MS,
        ge=limits.MIN_HEARTBEAT_INTERVAL_MS,
        le=limits.MAX_HEARTBEAT_INTERVAL_MS,
    )

    def card(self) -> dict[str, Any]:
        """The AgentCard as registered, without the broker's own fields."""
        return self.model_dump(
            mode="json", exclude={"mailbox", "max_concurrency", "metadata", "heartbeat_interval_ms"}
        )


class RegisterReply(_Reply):
    name: str
    instance_id: str
    serve_subject: str
    heartbeat_interval_ms: int


class HeartbeatRequest(_Request):
    instance_id: str = Field(min_length=1)
    in_flight: int | None = Field(None, ge=0)
    processed: int | None = Field(None, ge=0)


class DeregisterRequest(_Request):
    instance_id: str | None = None


class ListRequest(_Request):
    limit: int = Field(limits.DEFAULT_LIST_LIMIT, ge=1, le=limits.MAX_LIST_LIMIT)
    page: int = Field(1, ge=1)
    status: AgentStatus | None = None


class DiscoverRequest(_Request):
    capability: str | None = None
    text: str | None = None
    semantic: str | None = None
    tags: list[str] | None = None
    live_only: bool = True
    limit: int = Field(limits.DEFAULT_DISCOVER_LIMIT, ge=1, le=limits.MAX_LIST_LIMIT)
    page: int = Field(1, ge=1)


class InstanceInfo(BaseModel):
    instance_id: str
    status: AgentStatus
    in_flight: int
    last_heartbeat_ms: int
    processed: int = 0
    failed: int = 0
    client_id: int | None = None


class AgentInfo(BaseModel):
    name: str
    card: dict[str, Any]
    mailbox: str | None = None
    status: AgentStatus
    instances: list[InstanceInfo]
    created_ms: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_concurrency: int = 1


class AgentInfoReply(_Reply):
    agent: AgentInfo


class AgentListReply(_Reply):
    agents: list[AgentInfo]
    total: int


class AgentStatusReply(_Reply):
    status: AgentStatus
    instances: list[InstanceInfo]
    active_tasks: int
    total_processed: int
    total_failed: int
    avg_latency_ms: float
    p99_latency_ms: float
    uptime_seconds: float


class DiscoveredAgent(BaseModel):
    name: str
    score: float
    status: AgentStatus
    card: dict[str, Any]


class DiscoverReply(_Reply):
    agents: list[DiscoveredAgent]


# -- invocation and tasks ---------------------------------------------------------------------------


class InvokeRequest(_Request):
    input: Any = None
    skill: str | None = None
    timeout_ms: int = Field(limits.DEFAULT_TIMEOUT_MS, ge=1, le=limits.MAX_TIMEOUT_MS)
    mode: InvokeMode = "sync"
    on_offline: OnOffline = "fail"
    retries: int = Field(0, ge=0, le=limits.MAX_RETRIES)
    idempotency_key: str | None = Field(None, min_length=1, max_length=limits.MAX_IDEMPOTENCY_KEY_CHARS)


class IntentInvokeRequest(InvokeRequest):
    intent: str = Field(min_length=1)


class InvokeReply(_Reply):
    task_id: str
    state: TaskState
    output: Any = None
    instance_id: str | None = None
    latency_ms: float | None = None
    agent: str | None = None


class TaskRecord(BaseModel):
    id: str
    agent: str
    skill: str | None = None
    state: TaskState
    input: Any = None
    output: Any = None
    error: str | None = None
    instance_id: str | None = None
    created_ms: int
    updated_ms: int


class TaskReply(_Reply):
    task: TaskRecord


class TaskEventsRequest(_Request):
    after_seq: int = Field(0, ge=0)


class TaskEvent(BaseModel):
    seq: int
    type: str
    data: Any = None
    ts_ms: int


class TaskEventsReply(_Reply):
    events: list[TaskEvent]
    state: TaskState


class CancelReply(_Reply):
    state: TaskState


class AgentTaskEvent(_Request):
    """What an instance publishes on ``$mq9.AI.TASK.EVENT.<task_id>`` while it works."""

    type: AgentEventType
    data: Any = None


class ErrorReply(BaseModel):
    error: str
    code: int


REQUEST_SCHEMAS: dict[str, dict[str, Any]] = {
    "AGENT.REGISTER": RegisterRequest.model_json_schema(),
    "AGENT.HEARTBEAT": HeartbeatRequest.model_json_schema(),
    "AGENT.DEREGISTER": DeregisterRequest.model_json_schema(),
    "AGENT.LIST": ListRequest.model_json_schema(),
    "AGENT.DISCOVER": DiscoverRequest.model_json_schema(),
    "AGENT.INVOKE": InvokeRequest.model_json_schema(),
    "INVOKE": IntentInvokeRequest.model_json_schema(),
    "TASK.EVENTS": TaskEventsRequest.model_json_schema(),
}


def parse_request(model: type[M], body: bytes, empty_ok: bool = True) -> M:
    """Validate a request body against ``model``; an empty body means ``{}`` when ``empty_ok``.

    Raises ``ApiError(400)`` naming the first offending field, or before parsing, when the body
    nests deeper than ``inputs.MAX_NESTING_DEPTH``.
    """
    check_nesting(body)
    if not body.strip():
        if empty_ok:
            body = b"{}"
        else:
            raise errors.ApiError(errors.BAD_REQUEST, errors.INVALID_JSON.format(detail="empty body"))
    elif body.lstrip()[:1] != b"{":
        detail = "the body must be a JSON object"
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            detail = str(exc)
        raise errors.ApiError(errors.BAD_REQUEST, errors.INVALID_JSON.format(detail=detail))
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise errors.ApiError(errors.BAD_REQUEST, describe_validation_error(exc)) from None
    if _LONG_DIGIT_RUN.search(body) is not None:  # rare: only then walk the values
        where = oversized_int_at(parsed.model_dump())
        if where is not None:
            raise errors.ApiError(errors.BAD_REQUEST, errors.INT_TOO_LARGE.format(where=where or "body"))
    return parsed


def check_nesting(body: bytes) -> None:
    """``ApiError(400)`` when ``body`` nests too deeply to be parsed (every API family calls this)."""
    if inputs.too_deep(body):
        raise errors.ApiError(
            errors.BAD_REQUEST, errors.NESTED_TOO_DEEPLY.format(max=inputs.MAX_NESTING_DEPTH)
        )


def oversized_int_at(value: Any, path: str = "") -> str | None:
    """The dotted path of the first integer JSON cannot carry here (past 64 bits), or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return path if not JSON_INT_MIN <= value <= JSON_INT_MAX else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = oversized_int_at(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return errors.INVALID_JSON.format(detail=first["msg"])
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return errors.INVALID_FIELD.format(detail=f"{where}: {first['msg']}")
