"""Subject syntax and the subscription trie with its match cache.

Subjects are dot-separated tokens; in a subscription ``*`` matches one token and a final ``>``
one or more. A wildcard character inside a longer token is a literal. Every protocol front-end
maps its own names onto these subjects at its edge (DESIGN section 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

MATCH_CACHE_MAX_ENTRIES = 4096
_EMPTY: tuple = ()


def is_valid_subject(subject: str) -> bool:
    """A subscription subject (wildcards allowed): no empty token, ``>`` only last, no whitespace."""
    if not subject or subject[0] == "." or subject[-1] == ".":
        return False
    tokens = subject.split(".")
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if not token or (token == ">" and i != last):
            return False
        if " " in token or "\t" in token or "\r" in token or "\n" in token:
            return False
    return True


def is_valid_publish_subject(subject: str) -> bool:
    """A literal subject: valid and without ``*`` or ``>`` tokens."""
    if not is_valid_subject(subject):
        return False
    return not any(token == "*" or token == ">" for token in subject.split("."))


def has_wildcards(subject: str) -> bool:
    return any(token == "*" or token == ">" for token in subject.split("."))


def subject_matches(pattern: str, subject: str) -> bool:
    """Does the literal ``subject`` match the subscription ``pattern``? (No trie, for one-off checks.)"""
    ptoks = pattern.split(".")
    stoks = subject.split(".")
    for i, p in enumerate(ptoks):
        if p == ">":
            return len(stoks) > i
        if i >= len(stoks):
            return False
        if p != "*" and p != stoks[i]:
            return False
    return len(ptoks) == len(stoks)


class _Node:
    __slots__ = ("children", "star", "full", "plain", "queues")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None  # the "*" child
        self.full: _Node | None = None  # the ">" child
        self.plain: list[Any] = []
        self.queues: dict[str, list[Any]] = {}

    def is_empty(self) -> bool:
        return not (self.children or self.star or self.full or self.plain or self.queues)


class MatchResult:
    """What a literal subject matched: plain subscriptions, and one member list per queue group.

    The trie returns the ``NO_MATCH`` singleton for no match, so hot paths test identity.
    ``guard`` is set when deliveries on the subject must have their headers stamped (a mailbox's
    sender, see ``SubjectTrie.guard_of``); ``one_by_one`` says a batch must publish such a subject
    one message at a time through ``Router.publish`` (queue groups or a stamping guard).
    """

    __slots__ = ("plain", "queues", "shared_owner", "guard", "one_by_one")

    def __init__(self, plain: tuple, queues: tuple, guard: Any = None) -> None:
        self.plain = plain
        self.queues = queues  # tuple of member tuples, one per queue group name
        self.guard = guard
        self.one_by_one = bool(queues) or guard is not None
        # Does one owner (a connection) hold more than one of these? Then a run of messages must
        # be delivered message by message to keep the interleaving on that connection's stream.
        seen: set[int] = set()
        shared = False
        for sub in (*plain, *(m for group in queues for m in group)):
            owner = sub.owner
            if owner is None:
                continue
            if id(owner) in seen:
                shared = True
                break
            seen.add(id(owner))
        self.shared_owner = shared

    def __bool__(self) -> bool:
        return bool(self.plain or self.queues)


NO_MATCH = MatchResult(_EMPTY, _EMPTY)


class SubjectTrie:
    """Subscriptions by pattern. Items are any objects with ``subject`` and ``queue`` attributes.

    ``match`` results are cached per literal subject; adding or removing a subscription drops only
    the cached subjects its pattern can match, as nats-server's sublist does.

    ``guard_of(subject)``, when set, is asked once per cached subject that has subscribers: a guard
    (``admits(sub)``, ``stamps``, ``stamp(headers, origin)``; see robustmq/isolation.py) keeps only
    the subscriptions it admits in the cached result, and one that ``stamps`` rides along so the
    router stamps each delivery's headers. Whoever changes what it answers for a subject calls
    ``forget`` with that subject.
    """

    def __init__(self, cache_max_entries: int = MATCH_CACHE_MAX_ENTRIES) -> None:
        self._root = _Node()
        self._cache: dict[str, MatchResult] = {}
        self._cache_max = cache_max_entries
        self.match_cache = self._cache  # literal subject -> MatchResult; read-only for callers
        self.count = 0
        self.guard_of: Callable[[str], Any] | None = None

    def forget(self, subjects: Iterable[str]) -> None:
        """Drop the cached results of these literal subjects (their guard changed)."""
        cache = self._cache
        for subject in subjects:
            cache.pop(subject, None)

    def insert(self, sub: Any) -> None:
        node = self._root
        for token in sub.subject.split("."):
            if token == "*":
                if node.star is None:
                    node.star = _Node()
                node = node.star
            elif token == ">":
                if node.full is None:
                    node.full = _Node()
                node = node.full
            else:
                child = node.children.get(token)
                if child is None:
                    child = node.children[token] = _Node()
                node = child
        if sub.queue is None:
            node.plain.append(sub)
        else:
            node.queues.setdefault(sub.queue, []).append(sub)
        self.count += 1
        self._invalidate(sub.subject)

    def remove(self, sub: Any) -> bool:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for token in sub.subject.split("."):
            if token == "*":
                nxt = node.star
            elif token == ">":
                nxt = node.full
            else:
                nxt = node.children.get(token)
            if nxt is None:
                return False
            path.append((node, token))
            node = nxt
        try:
            if sub.queue is None:
                node.plain.remove(sub)
            else:
                members = node.queues[sub.queue]
                members.remove(sub)
                if not members:
                    del node.queues[sub.queue]
        except (ValueError, KeyError):
            return False
        self.count -= 1
        # prune empty nodes bottom-up so long-lived tries do not grow with churn
        for parent, token in reversed(path):
            child = parent.star if token == "*" else parent.full if token == ">" else parent.children[token]
            if not child.is_empty():
                break
            if token == "*":
                parent.star = None
            elif token == ">":
                parent.full = None
            else:
                del parent.children[token]
        self._invalidate(sub.subject)
        return True

    def _invalidate(self, pattern: str) -> None:
        if not self._cache:
            return
        if pattern in self._cache and len(self._cache) == 1:
            self._cache.clear()
            return
        wild = has_wildcards(pattern)
        if not wild:
            self._cache.pop(pattern, None)
            return
        # only cached subjects that share the pattern's literal prefix can match it
        star = pattern.find("*")
        full = pattern.find(">")
        cut = min(i for i in (star, full, len(pattern)) if i >= 0)
        prefix = pattern[:cut]
        for subject in [s for s in self._cache if s.startswith(prefix) and subject_matches(pattern, s)]:
            del self._cache[subject]

    def match(self, subject: str) -> MatchResult:
        result = self._cache.get(subject)
        if result is not None:
            return result
        plain: list[Any] = []
        queues: dict[str, list[Any]] = {}
        self._collect(self._root, subject.split("."), 0, plain, queues)
        guard = None
        if (plain or queues) and self.guard_of is not None:
            guard = self.guard_of(subject)
            if guard is not None:
                # isolation is decided here, once per cached subject: the result holds only the
                # subscriptions the guard admits, so delivering it checks nothing per message
                admits = guard.admits
                plain = [sub for sub in plain if admits(sub)]
                queues = {name: kept for name, ms in queues.items() if (kept := [m for m in ms if admits(m)])}
                if not guard.stamps:
                    guard = None
        if plain or queues:
            result = MatchResult(tuple(plain), tuple(tuple(m) for m in queues.values()), guard)
        else:
            result = NO_MATCH
        if len(self._cache) >= self._cache_max:
            # a new generation: clearing is O(1) per entry added, where evicting the oldest key of a
            # dict slows down as deleted slots pile up at its front (every request has a new reply
            # subject); the hot subjects come back on their next publish
            self._cache.clear()
        self._cache[subject] = result
        return result

    def _collect(self, node: _Node, tokens: list[str], i: int, plain: list, queues: dict) -> None:
        n = len(tokens)
        while True:
            if node.full is not None and i < n:
                self._add(node.full, plain, queues)
            if i == n:
                self._add(node, plain, queues)
                return
            if node.star is not None:
                self._collect(node.star, tokens, i + 1, plain, queues)
            child = node.children.get(tokens[i])
            if child is None:
                return
            node = child
            i += 1

    @staticmethod
    def _add(node: _Node, plain: list, queues: dict) -> None:
        if node.plain:
            plain.extend(node.plain)
        # members of one queue group name form one group across every matching pattern
        for name, members in node.queues.items():
            group = queues.get(name)
            if group is None:
                queues[name] = list(members)
            else:
                group.extend(members)

    def all(self) -> Iterable[Any]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from node.plain
            for members in node.queues.values():
                yield from members
            stack.extend(node.children.values())
            if node.star is not None:
                stack.append(node.star)
            if node.full is not None:
                stack.append(node.full)
