"""Request body limits: a body over ``http.max_request_bytes`` is refused with 413, and a JSON
body nested deeper than the agent layer's limit with 400, before any route parses it.

A declared length is answered at once; a chunked body fails as soon as it passes the limit. The
nesting is checked on the last chunk, before the route receives it (stdlib ``json``, which
FastAPI parses bodies with, recurses per level: 1000 levels were a RecursionError and a 500).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import BODY_TOO_LARGE, problem_body
from robustmq.agents import inputs
from robustmq.agents.api.errors import NESTED_TOO_DEEPLY

PROBLEM_HEADERS = [(b"content-type", b"application/problem+json"), (b"connection", b"close")]


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, BODY_TOO_LARGE.format(limit=limit), headers={"Connection": "close"})


class BodyNestedTooDeeply(HTTPException):
    def __init__(self) -> None:
        super().__init__(400, NESTED_TOO_DEEPLY.format(max=inputs.MAX_NESTING_DEPTH))


def is_json_media_type(content_type: bytes | None) -> bool:
    """Might a route read this body as JSON? ``application/json``, ``*+json``, or no type at all
    (the invoke routes read their raw body whatever its type)."""
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class RequestSizeLimit:
    """Pure ASGI middleware (no per-request task; only a chunked JSON body is buffered, once)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        content_type: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    body = problem_body(413, BODY_TOO_LARGE.format(limit=limit), scope.get("path"))
                    headers = [*PROBLEM_HEADERS, (b"content-length", str(len(body)).encode())]
                    await send({"type": "http.response.start", "status": 413, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        received = 0
        # the earlier chunks of a JSON body (None: not JSON, its nesting is not ours to check)
        chunks: list[bytes] | None = [] if is_json_media_type(content_type) else None

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(limit)
                if chunks is not None:
                    if message.get("more_body", False):
                        chunks.append(chunk)
                    elif inputs.too_deep(b"".join((*chunks, chunk)) if chunks else chunk):
                        raise BodyNestedTooDeeply()
            return message

        await self.app(scope, counted_receive, send)
