"""RFC 9457 problem details: every error of the control plane is ``application/problem+json``.

``code`` is the number the NATS API uses for the same failure, so both transports speak alike.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("robustmq.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# error texts, one place
UNAUTHENTICATED = "a valid bearer token is required"
READ_ONLY_ROLE = "the reader role may only use GET"
ADMIN_ONLY = "this needs the admin role"
OPERATIONS_ONLY = "this needs the admin or the reader role"
PUBLISH_DENIED = "Permissions Violation for Publish to {subject}"
SUBSCRIBE_DENIED = "Permissions Violation for Subscription to {subject}"
STREAM_FORBIDDEN = "stream {name} is not readable by this user"
BODY_TOO_LARGE = "the request body exceeds {limit} bytes"
BAD_CURSOR = "cursor is not one this server issued"
BAD_TEST_SUBJECT = "test: not a valid subject: {subject!r}"
INTERNAL = "internal error"
STREAM_NAME_MISMATCH = "the body names stream {body!r} but the path {path!r}"
NO_STORE = "the store is not running"
NO_SERVICE = "the {name} service is not running"
UNKNOWN_TOOL = "tool {name} not found"
NO_MAILBOX = "mailbox {address} does not exist"
UNREPRESENTABLE = "invalid request: {reason}"
BAD_LAST_EVENT_ID = "Last-Event-ID must be a sequence number: {value!r}"
AGENT_API_SILENT = "the agent API did not answer in time"
DURATION_TOO_LONG = "{field} must be at most {max} seconds"
INTERNAL_STREAM = "stream {name} is internal to the broker and cannot be changed here"
NO_CONSUMER = "consumer not found: {name} on stream {stream}"
CONSUMER_EXISTS = "consumer already exists: {name} on stream {stream}"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem document (plus ``code`` and, for invalid input, ``errors``)."""

    type: str = Field("about:blank", description="a URI identifying the problem type")
    title: str = Field(description="the HTTP reason phrase of the status")
    status: int = Field(description="the HTTP status code")
    detail: str | None = Field(None, description="what went wrong, for a human")
    instance: str | None = Field(None, description="the request path")
    code: int = Field(description="the same error code the NATS API uses")
    errors: list[FieldError] | None = Field(None, description="per-field errors of invalid input")
    task_id: str | None = Field(None, description="the task a failed invocation created")
    state: str | None = Field(None, description="that task's state")
    details: list[dict[str, Any]] | None = Field(
        None, description="e.g. where arguments break a tool's schema"
    )


class ProblemError(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        code: int | None = None,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.code = code if code is not None else status
        self.headers = headers
        self.errors = errors
        self.extra = extra


def problem_body(status: int, detail: str | None, instance: str | None, **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": extra.pop("code", None) or status,
    }
    doc.update({k: v for k, v in extra.items() if v is not None})
    return orjson.dumps(doc)


def problem_response(
    status: int,
    detail: str | None,
    instance: str | None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    return Response(
        problem_body(status, detail, instance, **extra),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    errors = [e.model_dump() for e in exc.errors] if exc.errors else None
    return problem_response(
        exc.status, exc.detail, request.url.path, exc.headers, code=exc.code, errors=errors, **exc.extra
    )


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(exc.status_code, detail, request.url.path, exc.headers)


async def _on_invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    first = errors[0] if errors else None
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else "invalid request"
    return problem_response(400, detail, request.url.path, errors=errors)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, INTERNAL, request.url.path)


def _store_status(exc: Exception) -> int:
    """The HTTP status (and NATS API code) of a store error."""
    from robustmq.store import errors as store

    if isinstance(exc, store.StreamNotFound | store.ConsumerNotFound):
        return 404
    if isinstance(exc, store.StreamExists):
        return 409
    if isinstance(exc, store.QueryTimeout):
        return 408
    if isinstance(exc, store.QueryTooLarge):
        return 413
    if isinstance(exc, store.QueryBusy):
        return 429
    if isinstance(exc, store.InvalidStreamConfig | store.QueryError | store.RecordTooLarge):
        return 400
    if isinstance(exc, store.StoreClosed | store.StoreWriteError | store.StoreOpenError):
        return 503
    if " has no partition " in str(exc):  # store.BAD_PARTITION
        return 404
    return 400


async def _on_store_error(request: Request, exc: Exception) -> Response:
    retry_after = getattr(exc, "retry_after_s", None)  # store.QueryBusy
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return problem_response(_store_status(exc), str(exc), request.url.path, headers)


def install_problem_handlers(app: FastAPI) -> None:
    from robustmq.store import StoreError

    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StoreError, _on_store_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
    app.add_exception_handler(Exception, _on_unexpected)
