"""Calls into the mq9 service, in process: mailbox reads use its Python objects directly; commands
(create, send, fetch, ack, query, delete) go through its own handler by an in-process router request
(no socket, no NATS protocol), so REST gets the same validation, durability and error texts as NATS.
A command carries the caller's origin, so the service applies that user's ownership rules too.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from api.problems import NO_MAILBOX, NO_SERVICE, ProblemError
from api.security import origin_of, principal_of
from robustmq.agents.mq9 import errors as mq9_errors
from robustmq.router import NoResponders

MQ9_PREFIX = "$mq9.AI."
DEFAULT_CALL_TIMEOUT_S = 10.0
SERVICE_SILENT = "the mq9 service did not answer in time"

_NOT_FOUND_PREFIXES = (
    mq9_errors.MAILBOX_MISSING.split("{", 1)[0],
    mq9_errors.MAILBOX_NOT_FOUND.split("{", 1)[0],
)
_NOT_FOUND_SUFFIX = mq9_errors.MAILBOX_MISSING.rsplit("}", 1)[1]
_CONFLICT_SUFFIX = mq9_errors.MAILBOX_EXISTS.rsplit("}", 1)[1]


def status_of_error(text: str) -> int:
    """mq9 replies carry a text only; its texts map onto HTTP statuses here."""
    if text.endswith(_NOT_FOUND_SUFFIX) or text.startswith(_NOT_FOUND_PREFIXES[1]):
        return 404
    if text.endswith(_CONFLICT_SUFFIX):
        return 409
    if text.startswith(mq9_errors.MAILBOX_FORBIDDEN.split("{", 1)[0]):
        return 403
    if text.startswith(mq9_errors.INTERNAL.split("{", 1)[0]):
        return 503
    if text.startswith(mq9_errors.TOO_MANY_MAILBOXES.split("{", 1)[0]):
        return 409
    return 400


async def command(
    request: Request,
    subject: str,
    body: bytes = b"",
    headers: bytes | None = None,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
) -> dict[str, Any]:
    """``$mq9.AI.<subject>`` for the caller: refused as NATS refuses its publish, else the reply."""
    full = MQ9_PREFIX + subject
    principal_of(request).require_publish(full)
    router = request.app.state.broker.router
    try:
        _, raw = await router.request(
            full, body, headers=headers, timeout=timeout_s, origin=origin_of(request)
        )
    except NoResponders:
        raise ProblemError(503, NO_SERVICE.format(name="mq9")) from None
    except TimeoutError:
        raise ProblemError(504, SERVICE_SILENT) from None
    reply = orjson.loads(raw)
    text = reply.pop("error", "")
    if text:
        status = status_of_error(text)
        raise ProblemError(status, text)
    return reply


def readable_mailbox(request: Request, service: Any, address: str) -> Any:
    """The live mailbox ``address`` if the caller may read it as over NATS (owner, subscribe rules).

    404 when there is none, 403 (mq9's own text) when another user's agent owns it.
    """
    box = service.mailboxes.get(address)
    if box is None:
        raise ProblemError(404, NO_MAILBOX.format(address=address))
    check_reader(request, service, address)
    return box


def check_reader(request: Request, service: Any, address: str) -> None:
    principal = principal_of(request)
    if principal.is_admin:
        return
    if not may_read(request, service, address):
        if service.mailbox_owner(address) not in (None, principal.user):
            raise ProblemError(403, mq9_errors.MAILBOX_FORBIDDEN.format(addr=address))
        principal.require_receive(address)


def may_read(request: Request, service: Any, address: str) -> bool:
    """Would this caller receive the mailbox's messages over NATS? (For lists: filter, no error.)"""
    principal = principal_of(request)
    if principal.is_admin:
        return True
    return service.mailbox_owner(address) in (None, principal.user) and principal.may_receive(address)
