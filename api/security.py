"""Who calls the control plane: bearer tokens and ``[auth]`` users from the config, with roles.

A Basic-auth user (or a token bound to one) *is* that user: REST hands the agent layer an origin
with its ``user``, as a NATS connection does, so both protocols apply the same ownership rules.
``admin`` is trusted with everything and only when configured; ``reader`` is GET only; with nothing
configured the API is open (an anonymous admin).
"""

from __future__ import annotations

import base64
import hmac
import itertools
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import (
    ADMIN_ONLY,
    OPERATIONS_ONLY,
    PUBLISH_DENIED,
    READ_ONLY_ROLE,
    SUBSCRIBE_DENIED,
    UNAUTHENTICATED,
    ProblemError,
)
from robustmq.auth import Authenticator, Permissions
from robustmq.config import Role, Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="robustmq"'}
REST_PROTOCOL = "http"

bearer_scheme = HTTPBearer(auto_error=False, description="a token from http.tokens (or auth.token)")
_origin_ids = itertools.count(1)


@dataclass(frozen=True)
class Principal:
    """A REST identity: ``user`` is the ``[auth]`` user it acts as (None: no user, as a NATS token).

    ``permissions`` are that user's publish/subscribe lists; ``name`` labels it (token0, alice).
    """

    name: str
    role: Role
    user: str | None = None
    permissions: Permissions | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_publish(self, subject: str) -> bool:
        return self.is_admin or self.permissions is None or self.permissions.may_publish(subject)

    def may_subscribe(self, pattern: str) -> bool:
        return self.is_admin or self.permissions is None or self.permissions.may_subscribe(pattern)

    def may_receive(self, subject: str) -> bool:
        """Would a delivery on this literal subject reach this user (its subscribe deny list too)?"""
        rule = self.permissions.subscribe if self.permissions is not None else None
        return self.is_admin or rule is None or rule.permits_literal(subject)

    def require_publish(self, subject: str) -> None:
        if not self.may_publish(subject):
            raise ProblemError(403, PUBLISH_DENIED.format(subject=subject))

    def require_receive(self, subject: str) -> None:
        if not self.may_receive(subject):
            raise ProblemError(403, SUBSCRIBE_DENIED.format(subject=subject))


ANONYMOUS = Principal("anonymous", "admin")


class RestOrigin:
    """The ``origin`` of one REST request in the agent layer (what ``router.current_origin`` holds).

    It offers what a front-end client does (user, protocol, client_id, name, remote); a new one per
    request, so nothing the agent layer remembers about an origin outlives the request.
    """

    __slots__ = ("user", "principal", "client_id", "name", "remote", "__weakref__")

    def __init__(self, principal: Principal, remote: str = "") -> None:
        self.principal = principal
        self.user = principal.user
        self.client_id = f"http-{next(_origin_ids)}"
        self.name = f"rest:{principal.name}"
        self.remote = remote

    protocol = REST_PROTOCOL


class AccessTable:
    """The credentials the config file grants, checked in constant time per candidate."""

    def __init__(self, settings: Settings) -> None:
        authenticator = Authenticator(settings.auth)
        users = {u.user: u for u in settings.auth.users}

        def as_user(name: str, user: str, role: Role) -> Principal:
            configured = authenticator.principal(user)
            return Principal(name, role, user, configured.permissions if configured else None)

        self._tokens: list[tuple[bytes, Principal]] = []
        for i, entry in enumerate(settings.http.tokens):
            if entry.user is not None:
                user_role = users[entry.user].role  # the config checked that the user exists
                role: Role = "reader" if entry.role == "reader" else user_role
                principal = as_user(f"token{i}", entry.user, role)
            else:
                principal = Principal(
                    f"token{i}", "admin" if entry.role == "admin" else entry.role or "reader"
                )
            self._tokens.append((entry.token.encode(), principal))
        if settings.auth.token:
            # the shared NATS token: over REST what it is over NATS, a client with no user
            self._tokens.append((settings.auth.token.encode(), Principal("auth.token", "user")))
        self._users: list[tuple[bytes, bytes, Principal]] = [
            (u.user.encode(), u.password.encode(), as_user(u.user, u.user, u.role))
            for u in settings.auth.users
        ]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens or self._users)

    def principal_for(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer":
            return self._by_token(value.encode())
        if scheme == "basic":
            return self._by_password(value)
        return None

    def _by_token(self, token: bytes) -> Principal | None:
        found = None
        for candidate, principal in self._tokens:
            if hmac.compare_digest(candidate, token) and found is None:
                found = principal
        return found

    def _by_password(self, value: str) -> Principal | None:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        found = None
        for name, secret, principal in self._users:
            ok = hmac.compare_digest(name, user.encode()) & hmac.compare_digest(secret, password.encode())
            if ok and found is None:
                found = principal
        return found


async def require_access(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The dependency every protected route has: authenticate, then check the role against the method."""
    table: AccessTable = request.app.state.access
    if not table.enabled:
        return ANONYMOUS
    principal = table.principal_for(request.headers.get("authorization"))
    if principal is None:
        raise ProblemError(401, UNAUTHENTICATED, headers=CHALLENGE)
    if principal.role == "reader" and request.method not in READ_METHODS:
        raise ProblemError(403, READ_ONLY_ROLE)
    request.state.principal = principal
    return principal


def principal_of(request: Request) -> Principal:
    """The caller of this request (``require_access`` ran first; the open API is an admin)."""
    return getattr(request.state, "principal", ANONYMOUS)


def origin_of(request: Request) -> Any:
    """The origin the agent layer sees for this request: None (trusted, in process) for an admin,
    else a ``RestOrigin`` carrying the user, the same rules as a NATS connection of that user."""
    principal = principal_of(request)
    if principal.is_admin:
        return None
    origin = getattr(request.state, "origin", None)
    if origin is None:
        client = request.client
        origin = RestOrigin(principal, f"{client.host}:{client.port}" if client else "")
        request.state.origin = origin
    return origin


async def current_principal(request: Request) -> Principal:
    return principal_of(request)


async def require_admin(request: Request) -> None:
    """Server-wide operations (SQL over every stream, ...) are for the admin role only."""
    if not principal_of(request).is_admin:
        raise ProblemError(403, ADMIN_ONLY)


async def require_operations(request: Request) -> None:
    """Views of the whole server (connections, subscriptions, metrics): admin, or reader (GET)."""
    if principal_of(request).role == "user":
        raise ProblemError(403, OPERATIONS_ONLY)


CallerDep = Annotated[Principal, Depends(current_principal)]
