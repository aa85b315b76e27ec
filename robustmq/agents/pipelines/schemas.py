"""Requests and replies of ``$mq9.AI.API.PIPELINE.*`` as pydantic models (shared with the control plane).

CREATE bodies are checked by ``spec.compile_pipeline`` (it reports every problem at once); the
other requests are validated with these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from robustmq.agents.pipelines import limits

RunState = Literal["running", "completed", "failed", "canceled"]
StepState = Literal["pending", "running", "completed", "failed", "skipped", "canceled"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str = ""


class RunRequest(_Request):
    input: Any = None
    mode: Literal["sync", "async"] = "sync"
    timeout_ms: int = Field(limits.DEFAULT_RUN_TIMEOUT_MS, ge=1, le=limits.MAX_RUN_TIMEOUT_MS)


class StepView(BaseModel):
    state: StepState
    task_id: str | None = None
    task_ids: list[str] | None = None
    latency_ms: float | None = None
    output: Any = None
    error: str | None = None


class RunReply(_Reply):
    run_id: str
    pipeline: str
    state: RunState
    output: Any = None
    steps: dict[str, StepView]
    latency_ms: float | None = None
    code: int | None = None


class PipelineSummary(BaseModel):
    name: str
    description: str = ""
    steps: int
    created_ms: int
    updated_ms: int


class PipelineListReply(_Reply):
    pipelines: list[PipelineSummary]
    total: int


class PipelineGetReply(_Reply):
    pipeline: dict[str, Any]


class SchemaProblem(BaseModel):
    path: str
    message: str


class CreateErrorReply(_Reply):
    code: int
    details: list[SchemaProblem] = Field(default_factory=list)


REQUEST_SCHEMAS: dict[str, dict[str, Any]] = {
    "PIPELINE.RUN": RunRequest.model_json_schema(),
}
