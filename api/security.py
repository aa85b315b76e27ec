"""Who may call the control plane: bearer tokens and user/password from the config, with roles.

``admin`` may do everything, ``reader`` only GET; with nothing configured the API is open.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import READ_ONLY_ROLE, UNAUTHENTICATED, ProblemError
from robustmq.config import Settings

Role = Literal["admin", "reader"]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="robustmq"'}

bearer_scheme = HTTPBearer(auto_error=False, description="a token from http.tokens (or auth.token)")


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


ANONYMOUS = Principal("anonymous", "admin")


class AccessTable:
    """The credentials the config file grants, checked in constant time per candidate."""

    def __init__(self, settings: Settings) -> None:
        self._tokens: list[tuple[bytes, Principal]] = []
        for i, entry in enumerate(settings.http.tokens):
            self._tokens.append((entry.token.encode(), Principal(f"token{i}", entry.role)))
        if settings.auth.token:
            self._tokens.append((settings.auth.token.encode(), Principal("auth.token", "admin")))
        self._users: list[tuple[bytes, bytes, Principal]] = [
            (u.user.encode(), u.password.encode(), Principal(u.user, u.role)) for u in settings.auth.users
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
    if principal.role != "admin" and request.method not in READ_METHODS:
        raise ProblemError(403, READ_ONLY_ROLE)
    request.state.principal = principal
    return principal
