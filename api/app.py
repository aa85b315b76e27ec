"""The FastAPI application factory: ``create_app(broker)`` wires routers, auth, limits and errors.

Routes call the broker's parts directly; OpenAPI is at ``/openapi.json`` and the docs at ``/docs``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from api.body_limit import RequestSizeLimit
from api.metrics import ApiMetrics, HttpMetricsMiddleware
from api.openapi import build_openapi
from api.problems import install_problem_handlers
from api.routers import (
    agents,
    connections,
    consumers,
    health,
    mailboxes,
    metrics,
    pipelines,
    query,
    server,
    streams,
    subscriptions,
    tasks,
    tools,
)
from api.security import AccessTable, require_access, require_admin, require_operations
from robustmq import __version__

if TYPE_CHECKING:
    from robustmq.broker import Broker

API_PREFIX = "/api/v1"
DESCRIPTION = (
    "The control plane of robustmq: agents, tasks, mailboxes, streams, connections and metrics. "
    "Errors are RFC 9457 problem documents; lists are paged with `limit` and `cursor`."
)


def create_app(broker: Broker) -> FastAPI:
    app = FastAPI(
        title="robustmq",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.broker = broker
    app.state.access = AccessTable(broker.settings)
    app.state.metrics = ApiMetrics(broker)
    app.state.closing = asyncio.Event()
    app.state.event_streams = set()  # queues of open SSE streams, ended when the server stops
    app.state.started_at = time.time()
    install_problem_handlers(app)

    # with no credentials configured the API is open: no auth dependency (and none in the OpenAPI document)
    protected = [Depends(require_access)] if app.state.access.enabled else []
    # views of the whole server: admin, or reader; SQL over every stream: admin only
    operations = [*protected, Depends(require_operations)] if protected else []
    admin_only = [*protected, Depends(require_admin)] if protected else []
    app.include_router(health.router)
    app.include_router(metrics.router, dependencies=operations)
    # routes are matched in this order: the hot ones (invoke, listings) first; these act as the
    # caller's user (the agent layer's rules, as over NATS)
    for module in (agents, tasks, mailboxes, tools, pipelines, streams, consumers):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=protected)
    app.include_router(query.router, prefix=API_PREFIX, dependencies=admin_only)
    for module in (server, connections, subscriptions):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=operations)

    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    # the last added is the outermost: metrics see every answer, a 413 from the size limit too
    app.add_middleware(RequestSizeLimit, max_bytes=broker.settings.http.max_request_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=app.state.metrics, prefix=API_PREFIX)
    return app
