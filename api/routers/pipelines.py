"""``/api/v1/pipelines`` and ``/api/v1/runs``: pipeline definitions and their runs.

Create, list, get, delete; run sync or async, status with every started step, cancel.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api import agent_calls
from api.dependencies import PipelinesDep
from api.limits import PAGE_LIMIT_DEFAULT
from api.paging import CursorParam, Limit, Page, paginate
from api.problems import Problem
from api.security import origin_of
from robustmq.agents.pipelines.schemas import PipelineSummary, RunReply, RunRequest, RunState

router = APIRouter(tags=["pipelines"])

Pipelines = PipelinesDep
PipelineName = Annotated[str, Path(min_length=1, max_length=128)]
RunId = Annotated[str, Path(min_length=1, max_length=128)]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such pipeline or run"},
    408: {"model": Problem, "description": "the run's deadline passed"},
    409: {"model": Problem, "description": "exists already, or the run has ended"},
    502: {"model": Problem, "description": "a step failed"},
    503: {"model": Problem, "description": "the pipeline service is not running"},
    504: {"model": Problem, "description": "the agent API did not answer"},
}


class PipelineCreated(BaseModel):
    name: str
    pipeline: dict[str, Any]
    replaced: bool


class PipelineDeleted(BaseModel):
    name: str
    deleted: bool


class RunSummary(BaseModel):
    run_id: str
    pipeline: str
    state: RunState
    created_ms: int
    finished_ms: int | None = None


class RunStarted(BaseModel):
    run_id: str
    state: RunState


@router.post(
    "/pipelines",
    status_code=201,
    response_model=PipelineCreated,
    summary='create a pipeline (replace an existing one with "replace": true)',
    responses={409: PROBLEMS[409], 503: PROBLEMS[503], 504: PROBLEMS[504]},
)
async def create_pipeline(
    request: Request,
    service: Pipelines,
    body: Annotated[dict[str, Any], Body(description="the definition: name, description, steps")],
) -> dict[str, Any]:
    return await agent_calls.call(request, "PIPELINE.CREATE", body)


@router.get("/pipelines", response_model=Page[PipelineSummary], summary="list pipelines")
async def list_pipelines(service: Pipelines, limit: Limit = PAGE_LIMIT_DEFAULT, cursor: CursorParam = None):
    page, next_cursor = paginate(service.pipelines(), lambda p: p["name"], limit, cursor)
    return Page[PipelineSummary](
        items=[PipelineSummary.model_validate(p) for p in page], next_cursor=next_cursor
    )


@router.get(
    "/pipelines/{name}",
    response_model=dict[str, Any],
    summary="a pipeline's definition",
    responses={404: PROBLEMS[404], 503: PROBLEMS[503], 504: PROBLEMS[504]},
)
async def get_pipeline(name: PipelineName, request: Request, service: Pipelines) -> dict[str, Any]:
    return (await agent_calls.call(request, f"PIPELINE.GET.{name}"))["pipeline"]


@router.delete(
    "/pipelines/{name}",
    response_model=PipelineDeleted,
    summary="delete a pipeline (its runs go on)",
    responses={404: PROBLEMS[404], 503: PROBLEMS[503], 504: PROBLEMS[504]},
)
async def delete_pipeline(name: PipelineName, request: Request, service: Pipelines) -> dict[str, Any]:
    return await agent_calls.call(request, f"PIPELINE.DELETE.{name}")


@router.post(
    "/pipelines/{name}/run",
    response_model=RunReply,
    response_model_exclude={"error"},
    summary="run a pipeline (sync: waits for the output; async: 202 with the run)",
    responses={202: {"model": RunStarted, "description": "async: the run started"}, **PROBLEMS},
    openapi_extra=agent_calls.json_request_body(RunRequest),
)
async def run_pipeline(name: PipelineName, request: Request, service: Pipelines) -> Response:
    return await agent_calls.invoke(request, RunRequest, f"PIPELINE.RUN.{name}", "/api/v1/runs/", "run_id")


@router.get("/runs", response_model=Page[RunSummary], summary="runs held by the broker, newest last")
async def list_runs(
    request: Request,
    service: Pipelines,
    pipeline: Annotated[str | None, Query(max_length=128, description="only runs of this pipeline")] = None,
    limit: Limit = PAGE_LIMIT_DEFAULT,
    cursor: CursorParam = None,
) -> Page[RunSummary]:
    runs = service.list_runs(pipeline)
    origin = origin_of(request)
    if origin is not None:  # only the runs STATUS would show this caller (its own, or unowned)
        runs = [r for r in runs if service.may_see_run(r["run_id"], origin)]
    page, next_cursor = paginate(runs, lambda r: [r["created_ms"], r["run_id"]], limit, cursor)
    return Page[RunSummary](items=[RunSummary.model_validate(r) for r in page], next_cursor=next_cursor)


@router.get(
    "/runs/{run_id}",
    response_model=RunReply,
    response_model_exclude={"error"},
    summary="a run's state and every started step",
    responses={404: PROBLEMS[404], 503: PROBLEMS[503], 504: PROBLEMS[504]},
)
async def run_status(run_id: RunId, request: Request, service: Pipelines) -> Response:
    reply = await agent_calls.call(request, f"PIPELINE.STATUS.{run_id}")
    return Response(orjson.dumps(reply), media_type="application/json")


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunStarted,
    summary="cancel a run and its running steps",
    responses={404: PROBLEMS[404], 409: PROBLEMS[409], 503: PROBLEMS[503], 504: PROBLEMS[504]},
)
async def cancel_run(run_id: RunId, request: Request, service: Pipelines) -> dict[str, Any]:
    return await agent_calls.call(request, f"PIPELINE.CANCEL.{run_id}")
