"""Who may receive a delivery when users are configured: the guards the router asks per subject.

Isolation is decided by the message's subject, never by the pattern a subscriber used, so a
wildcard (``>``, ``_INBOX.>``, MQTT ``#``) receives nothing a literal subscription of the same user
could not. The trie asks ``DeliveryGuards.guard_for`` once per cached subject; subjects no source
claims keep the unguarded fast path.

Replies: a subject under ``_INBOX.<token>`` belongs to the user whose connection first subscribed
under that prefix (every client library's request inbox lives there); only that user's
connections and in-process subscribers receive it. The broker's own inboxes reach only in-process
subscribers. An ``_INBOX`` subject nobody claims reaches no network client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

INBOX_PREFIX = "_INBOX."
_INBOX_TOKEN_AT = len(INBOX_PREFIX)
# remembered tokens whose subjects were matched before anyone claimed them (a reply that came
# first); past this many the oldest are forgotten at once, as the trie's cache does
UNCLAIMED_TOKENS_MAX = 4096


class Guard(Protocol):
    """What the trie asks for each subscription a guarded subject matched, and whether (and how)
    the router rewrites the headers of each delivery on it."""

    stamps: bool

    def admits(self, sub: Any) -> bool: ...

    def stamp(self, headers: bytes | None, origin: Any) -> bytes | None: ...


GuardSource = Callable[[str], Guard | None]


def client_user(sub: Any) -> tuple[bool, str | None]:
    """``(held by a network client, its user)``: a client owner has a ``protocol`` (NATS, MQTT)."""
    owner = sub.owner
    if getattr(owner, "protocol", None) is None:
        return False, None
    return True, getattr(owner, "user", None)


class OnlyInProcess:
    """Requests to the broker's services and its own inboxes: no network client receives them."""

    __slots__ = ()
    stamps = False

    @staticmethod
    def admits(sub: Any) -> bool:
        return getattr(sub.owner, "protocol", None) is None

    @staticmethod
    def stamp(headers: bytes | None, origin: Any) -> bytes | None:
        return headers


ONLY_IN_PROCESS = OnlyInProcess()


class OnlyUsers:
    """A subject that belongs to some users: their connections and in-process subscribers only.

    ``None`` among the users stands for connections without a user (a shared token).
    """

    __slots__ = ("users",)
    stamps = False

    def __init__(self, users: frozenset[str | None]) -> None:
        self.users = users

    def admits(self, sub: Any) -> bool:
        is_client, user = client_user(sub)
        return not is_client or user in self.users

    @staticmethod
    def stamp(headers: bytes | None, origin: Any) -> bytes | None:
        return headers

    def __repr__(self) -> str:
        return f"<OnlyUsers {sorted(self.users)}>"


def only_users(*users: str | None) -> Guard:
    """The guard for these users; none at all means in-process subscribers only."""
    return OnlyUsers(frozenset(users)) if users else ONLY_IN_PROCESS


def inbox_token(subject: str) -> str | None:
    """``<token>`` of ``_INBOX.<token>[.…]``, or None when the subject is not under ``_INBOX.``."""
    if not subject.startswith(INBOX_PREFIX):
        return None
    end = subject.find(".", _INBOX_TOKEN_AT)
    token = subject[_INBOX_TOKEN_AT:] if end < 0 else subject[_INBOX_TOKEN_AT:end]
    return token or None


class InboxClaims:
    """``_INBOX.<token>`` prefixes and the user who claimed each by subscribing under it.

    The first user to subscribe under a literal token holds it while any of their subscriptions
    there lives; another user's subscription under the same token claims nothing.
    """

    def __init__(self, broker_inbox_prefix: str, match_cache: dict[str, Any]) -> None:
        self.broker_inbox_prefix = broker_inbox_prefix
        self._claims: dict[str, list[Any]] = {}  # token -> [user, live subscription count]
        self._guards: dict[str | None, Guard] = {}
        # the trie's cache: subjects under a token guarded while nobody claimed it are dropped
        # from it when someone does (the trie patches cached results, keeping their guard)
        self._cache = match_cache
        self._guarded_unclaimed: set[str] = set()

    def added(self, sub: Any) -> None:
        token = self._claimable(sub)
        if token is None:
            return
        is_client, user = client_user(sub)
        if not is_client:
            return
        claim = self._claims.get(token)
        if claim is None:
            self._claims[token] = [user, 1]
            if token in self._guarded_unclaimed:
                self._guarded_unclaimed.discard(token)
                prefix = INBOX_PREFIX + token
                for subject in [s for s in self._cache if s.startswith(prefix)]:
                    if inbox_token(subject) == token:
                        del self._cache[subject]
        elif claim[0] == user:
            claim[1] += 1

    def removed(self, sub: Any) -> None:
        token = self._claimable(sub)
        if token is None:
            return
        claim = self._claims.get(token)
        if claim is None or client_user(sub)[1] != claim[0]:
            return
        claim[1] -= 1
        if claim[1] <= 0:
            del self._claims[token]

    def guard_for(self, subject: str) -> Guard | None:
        token = inbox_token(subject)
        if token is None:
            return None
        if subject.startswith(self.broker_inbox_prefix):
            return ONLY_IN_PROCESS
        claim = self._claims.get(token)
        if claim is None:
            if len(self._guarded_unclaimed) >= UNCLAIMED_TOKENS_MAX:
                self._guarded_unclaimed.clear()
            self._guarded_unclaimed.add(token)
            return ONLY_IN_PROCESS
        user = claim[0]
        guard = self._guards.get(user)
        if guard is None:
            guard = self._guards[user] = OnlyUsers(frozenset((user,)))
        return guard

    @staticmethod
    def _claimable(sub: Any) -> str | None:
        token = inbox_token(sub.subject)
        if token is None or token in ("*", ">"):
            return None
        return token


class DeliveryGuards:
    """The trie's ``guard_of`` with authentication on: the first source with a guard decides.

    Services add a source for the subjects they own (mq9 its mailboxes, the agent API its
    subjects); inbox claims come first, so a reply is private whatever else its subject looks like.
    """

    def __init__(self, inboxes: InboxClaims | None, on_change: Callable[[], Any] | None = None) -> None:
        self.inboxes = inboxes
        self._sources: list[GuardSource] = [inboxes.guard_for] if inboxes is not None else []
        self._on_change = on_change  # the router drops every cached guard

    def add_source(self, source: GuardSource) -> None:
        self._sources.append(source)
        if self._on_change is not None:
            self._on_change()

    def remove_source(self, source: GuardSource) -> None:
        if source in self._sources:
            self._sources.remove(source)
            if self._on_change is not None:
                self._on_change()

    def guard_for(self, subject: str) -> Guard | None:
        for source in self._sources:
            guard = source(subject)
            if guard is not None:
                return guard
        return None
