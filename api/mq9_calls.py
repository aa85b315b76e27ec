"""Calls into the mq9 service, in process: mailbox reads use its Python objects directly; commands
(create, send, fetch, ack, query, delete) run through its own handler (``Mq9Service.call``: no
socket, no NATS protocol), so REST gets the same validation, durability and texts as NATS.
A command carries the caller's origin, so the service applies that user's ownership rules too;
a failure comes back as an ``Mq9Error`` whose kind, never its text, picks the HTTP status.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request

from api.problems import NO_MAILBOX, ProblemError
from api.security import origin_of, principal_of
from robustmq.agents.mq9 import errors as mq9_errors
from robustmq.agents.mq9.errors import Mq9Error, Mq9ErrorKind

if TYPE_CHECKING:
    from robustmq.agents.mq9 import Mq9Service
    from robustmq.agents.mq9.mailboxes import Mailbox

MQ9_PREFIX = "$mq9.AI."
DEFAULT_CALL_TIMEOUT_S = 10.0
SERVICE_SILENT = "the mq9 service did not answer in time"

# every kind of mq9 failure has its status here (tests check that none is missing)
STATUS_OF_KIND: dict[Mq9ErrorKind, int] = {
    Mq9ErrorKind.BAD_REQUEST: 400,
    Mq9ErrorKind.FORBIDDEN: 403,
    Mq9ErrorKind.NOT_FOUND: 404,
    Mq9ErrorKind.CONFLICT: 409,
    Mq9ErrorKind.LIMIT_REACHED: 409,
    Mq9ErrorKind.INTERNAL: 503,
}


def problem_of(error: Mq9Error) -> ProblemError:
    """The problem document of an mq9 failure: its status from its kind, its detail mq9's text."""
    return ProblemError(STATUS_OF_KIND[error.kind], str(error))


async def command(
    request: Request,
    service: Mq9Service,
    subject: str,
    body: bytes = b"",
    headers: bytes | None = None,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
) -> dict[str, Any]:
    """``$mq9.AI.<subject>`` for the caller: refused as NATS refuses its publish, else the reply."""
    full = MQ9_PREFIX + subject
    principal_of(request).require_publish(full)
    try:
        raw = await asyncio.wait_for(service.call(full, body, headers, origin_of(request)), timeout_s)
    except Mq9Error as exc:
        raise problem_of(exc) from None
    except TimeoutError:
        raise ProblemError(504, SERVICE_SILENT) from None
    reply = orjson.loads(raw)
    reply.pop("error", None)
    return reply


def readable_mailbox(request: Request, service: Mq9Service, address: str) -> Mailbox:
    """The live mailbox ``address`` if the caller may read it as over NATS (owner, subscribe rules).

    404 when there is none, 403 (mq9's own text) when another user's agent owns it.
    """
    box = service.mailboxes.get(address)
    if box is None:
        raise ProblemError(404, NO_MAILBOX.format(address=address))
    check_reader(request, service, address)
    return box


def check_reader(request: Request, service: Mq9Service, address: str) -> None:
    principal = principal_of(request)
    if principal.is_admin:
        return
    if not may_read(request, service, address):
        if service.mailbox_owner(address) not in (None, principal.user):
            raise ProblemError(403, mq9_errors.MAILBOX_FORBIDDEN.format(addr=address))
        principal.require_receive(address)


def may_read(request: Request, service: Mq9Service, address: str) -> bool:
    """Would this caller receive the mailbox's messages over NATS? (For lists: filter, no error.)"""
    principal = principal_of(request)
    if principal.is_admin:
        return True
    return service.mailbox_owner(address) in (None, principal.user) and principal.may_receive(address)
