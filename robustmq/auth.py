"""Authentication (a token, or users with passwords) and per-user publish/subscribe permissions.

Protocol-neutral, so every front-end applies the same users and subject permissions from one config.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from robustmq.config import AuthSettings, PermissionList
from robustmq.config import Permissions as PermissionSettings
from robustmq.subjects import subject_matches

PERMISSION_CACHE_MAX_ENTRIES = 1024


def pattern_covers(pattern: str, subject: str) -> bool:
    """Is every subject matched by ``subject`` (which may hold wildcards) also matched by ``pattern``?"""
    ptoks = pattern.split(".")
    stoks = subject.split(".")
    for i, p in enumerate(ptoks):
        if p == ">":
            return len(stoks) > i
        if i >= len(stoks):
            return False
        s = stoks[i]
        if s == ">":
            return False
        if p != "*" and (s == "*" or p != s):
            return False
    return len(ptoks) == len(stoks)


def patterns_overlap(a: str, b: str) -> bool:
    """Can some literal subject match both patterns?"""
    atoks = a.split(".")
    btoks = b.split(".")
    for i in range(max(len(atoks), len(btoks))):
        x = atoks[i] if i < len(atoks) else None
        y = btoks[i] if i < len(btoks) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True


class SubjectRule:
    """One allow/deny list. An empty allow list allows everything not denied."""

    __slots__ = ("allow", "deny", "_cache")

    def __init__(self, allow: list[str], deny: list[str]) -> None:
        self.allow = tuple(allow)
        self.deny = tuple(deny)
        self._cache: dict[str, bool] = {}

    @classmethod
    def from_settings(cls, lists: PermissionList | None) -> SubjectRule | None:
        if lists is None or not (lists.allow or lists.deny):
            return None
        return cls(lists.allow, lists.deny)

    def permits_literal(self, subject: str) -> bool:
        """For a publish (and a delivery): the literal subject matches an allow and no deny entry."""
        verdict = self._cache.get(subject)
        if verdict is None:
            verdict = (not self.allow or any(subject_matches(p, subject) for p in self.allow)) and not any(
                subject_matches(p, subject) for p in self.deny
            )
            if len(self._cache) >= PERMISSION_CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[subject] = verdict
        return verdict

    def permits_pattern(self, subject: str) -> bool:
        """For a subscription: an allow entry covers the whole pattern and no deny entry does."""
        if self.allow and not any(pattern_covers(p, subject) for p in self.allow):
            return False
        return not any(pattern_covers(p, subject) for p in self.deny)

    def needs_delivery_check(self, subject: str) -> bool:
        """A wildcard subscription that overlaps a deny entry must have each delivery checked."""
        return any(patterns_overlap(p, subject) for p in self.deny)


class Permissions:
    __slots__ = ("publish", "subscribe")

    def __init__(self, publish: SubjectRule | None, subscribe: SubjectRule | None) -> None:
        self.publish = publish
        self.subscribe = subscribe

    @classmethod
    def from_settings(cls, perms: PermissionSettings | None) -> Permissions | None:
        if perms is None:
            return None
        publish = SubjectRule.from_settings(perms.publish)
        subscribe = SubjectRule.from_settings(perms.subscribe)
        if publish is None and subscribe is None:
            return None
        return cls(publish, subscribe)

    def may_publish(self, subject: str) -> bool:
        return self.publish is None or self.publish.permits_literal(subject)

    def may_subscribe(self, subject: str) -> bool:
        return self.subscribe is None or self.subscribe.permits_pattern(subject)

    def delivery_filter(self, subject: str) -> SubjectRule | None:
        """The rule each delivered subject must pass for a subscription to ``subject``, if any."""
        rule = self.subscribe
        if rule is not None and rule.deny and rule.needs_delivery_check(subject):
            return rule
        return None


@dataclass(frozen=True)
class Principal:
    """Who a connection authenticated as: ``user`` is None for token or anonymous access."""

    user: str | None
    permissions: Permissions | None = None
    role: str = "user"  # on the control plane; admin only when the config says so


ANONYMOUS = Principal(None)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Authenticator:
    """Checks credentials against ``settings.auth``: a shared token, or users with passwords."""

    def __init__(self, settings: AuthSettings) -> None:
        self.token = settings.token
        self._users = {
            u.user: (u.password, Principal(u.user, Permissions.from_settings(u.permissions), u.role))
            for u in settings.users
        }

    @property
    def required(self) -> bool:
        return bool(self.token or self._users)

    def authenticate(
        self, user: str | None = None, password: str | None = None, token: str | None = None
    ) -> Principal | None:
        """The principal for these credentials, or None when they are refused."""
        if not self.required:
            return ANONYMOUS
        if user is not None and user in self._users:
            expected, principal = self._users[user]
            if password is not None and _same(password, expected):
                return principal
            return None
        if self.token is not None and token is not None and _same(token, self.token):
            return ANONYMOUS
        return None

    def principal(self, user: str) -> Principal | None:
        """The configured principal of ``user`` (no password check), e.g. for an in-process caller."""
        entry = self._users.get(user)
        return entry[1] if entry else None
