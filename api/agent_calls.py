"""Calls into the agent, tool and pipeline services in process, with their validation and error codes.

Answers that may come later go through ``router.request`` in process (no socket, no NATS protocol),
with the caller's origin, so the services apply that user's ownership rules as over NATS.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from api.problems import AGENT_API_SILENT, NO_SERVICE, UNREPRESENTABLE, FieldError, ProblemError
from api.security import origin_of, principal_of
from robustmq.agents.api.errors import ApiError
from robustmq.router import NoResponders

M = TypeVar("M", bound=BaseModel)
API_PREFIX = "$mq9.AI.API."
# how long past an invocation's own deadline we wait for the service to answer it
ANSWER_MARGIN_S = 2.0
DEFAULT_CALL_TIMEOUT_S = 10.0


def problem_of_reply(reply: dict[str, Any]) -> ProblemError:
    code = reply.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    extra: dict[str, Any] = {k: reply[k] for k in ("task_id", "state") if isinstance(reply.get(k), str)}
    if isinstance(reply.get("details"), list):
        extra["details"] = [d for d in reply["details"] if isinstance(d, dict)]
    return ProblemError(status, str(reply.get("error") or "error"), code=code or status, **extra)


def task_of(request: Request, service: Any, task_id: str, verb: str = "GET") -> Any:
    """The task if the caller may see it, as ``TASK.<verb>`` over NATS would answer (404, 403)."""
    principal_of(request).require_publish(f"{API_PREFIX}TASK.{verb}.{task_id}")
    try:
        return service.task_for(task_id, origin_of(request))
    except ApiError as exc:
        raise problem_of_reply(exc.reply()) from None


def json_bytes(value: Any) -> bytes:
    """``value`` as JSON; 400 when it holds what JSON cannot carry here (e.g. integers past 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise ProblemError(400, UNREPRESENTABLE.format(reason=exc)) from None


async def call(
    request: Request, verb: str, body: dict[str, Any] | None = None, timeout_s: float = DEFAULT_CALL_TIMEOUT_S
) -> dict[str, Any]:
    """``$mq9.AI.API.<verb>`` with ``body``; returns the reply, or raises its problem."""
    payload = json_bytes(body) if body is not None else b""
    return await call_raw(request, verb, payload, timeout_s)


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate a JSON body against one of the agent API's models (the hot routes read it raw)."""
    try:
        parsed = model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = [
            FieldError(loc=["body", *(p if isinstance(p, int) else str(p) for p in e["loc"])], msg=e["msg"])
            for e in exc.errors(include_url=False)
        ]
        first = errors[0]
        detail = f"{'.'.join(str(p) for p in first.loc)}: {first.msg}"
        raise ProblemError(400, detail, errors=errors) from None
    json_bytes(parsed.model_dump())  # the task journal must be able to write it back
    return parsed


async def call_raw(request: Request, verb: str, payload: bytes, timeout_s: float) -> dict[str, Any]:
    """Like ``call`` with a body already encoded (and validated) by the caller."""
    subject = API_PREFIX + verb
    principal_of(request).require_publish(subject)
    router = request.app.state.broker.router
    try:
        _, raw = await router.request(subject, payload, timeout=timeout_s, origin=origin_of(request))
    except NoResponders:
        raise ProblemError(503, NO_SERVICE.format(name="agent API")) from None
    except TimeoutError:
        raise ProblemError(504, AGENT_API_SILENT) from None
    reply = orjson.loads(raw)
    if reply.get("error"):
        raise problem_of_reply(reply)
    reply.pop("error", None)
    return reply


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its JSON itself (the invoke and run hot paths)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def invoke(request: Request, model: type[M], verb: str, location: str, id_key: str) -> Response:
    """Validate the raw body against ``model``, call ``verb`` and answer with the service's own reply.

    Sync mode answers 200 with the reply; async mode 202 with ``Location: <location><reply[id_key]>``.
    """
    raw = await request.body()
    body = parse_body(model, raw)
    timeout_s = body.timeout_ms / 1000 + ANSWER_MARGIN_S  # type: ignore[attr-defined]
    reply = await call_raw(request, verb, raw or b"{}", timeout_s)
    encoded = orjson.dumps(reply)  # the service's own reply, without its empty "error"
    if body.mode == "async":  # type: ignore[attr-defined]
        headers = {"Location": f"{location}{reply[id_key]}"}
        return Response(encoded, status_code=202, media_type="application/json", headers=headers)
    return Response(encoded, media_type="application/json")
