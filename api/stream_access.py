"""Which streams and records a REST caller may read: what its user could receive over NATS.

An admin reads everything. Any other caller sees a stream only when a NATS subscription of its user
to every subject of the stream would be accepted (its subscribe permissions and the agent layer's
ownership of mailbox and serve subjects); records are filtered one by one too, by subject, so a
wide stream never hands over another user's mailbox messages. Broker-internal streams (``$...``,
or without subjects: journals, sessions) are for admins only.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from api.problems import STREAM_FORBIDDEN, ProblemError
from api.security import Principal, principal_of
from robustmq.store import StreamConfig
from robustmq.stream_access import may_read_stream as stream_rule


def _agent_api(request: Request) -> Any:
    api = getattr(request.app.state.broker, "agent_api", None)
    return api if api is not None and getattr(api, "directory", None) is not None else None


def may_read_stream(request: Request, config: StreamConfig) -> bool:
    principal = principal_of(request)
    return stream_rule(
        config.name, list(config.subjects), principal.user, principal.permissions, principal.is_admin,
        _agent_api(request),
    )  # fmt: skip


def require_readable(request: Request, store: Any, name: str) -> StreamConfig:
    """The stream's definition (404 from the store when missing), or 403 when hidden from the caller."""
    config = store.stream_config(name)
    if not may_read_stream(request, config):
        raise ProblemError(403, STREAM_FORBIDDEN.format(name=name))
    return config


def record_filter(request: Request) -> Any:
    """A predicate on a record's subject, or None when every record is readable (an admin)."""
    principal: Principal = principal_of(request)
    if principal.is_admin:
        return None
    api = _agent_api(request)
    user = principal.user

    def readable(subject: str) -> bool:
        if subject and not principal.may_receive(subject):
            return False
        return api is None or not subject or api.mailbox_owner(subject) in (None, user)

    return readable
