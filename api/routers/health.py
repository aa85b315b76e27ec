"""Liveness and readiness probes: ``/healthz`` (the process answers) and ``/readyz`` (fully started).

Both are open (no credentials), as orchestrators probe them; neither reveals more than part names.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.dependencies import BrokerDep

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "starting"]
    components: dict[str, Literal["started", "starting"]]


@router.get("/healthz", response_model=Health, summary="the process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="the store has recovered and every listener is bound",
    responses={503: {"model": Readiness, "description": "still starting (or stopping)"}},
)
async def readyz(broker: BrokerDep) -> JSONResponse:
    components: dict[str, Literal["started", "starting"]] = {}
    for component in broker.components:
        # this listener is answering, so it is bound; the others report through the broker
        started = component.name == "http" or broker.is_started(component)
        components[component.name] = "started" if started else "starting"
    ready = all(state == "started" for state in components.values())
    body = Readiness(status="ready" if ready else "starting", components=components)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
