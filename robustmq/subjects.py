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


def literal_filter(pattern: str) -> Callable[[str], bool]:
    """``subject_matches(pattern, ·)`` with the pattern taken apart once, for scanning many subjects.

    The common shapes (a literal prefix, then one ``*`` or ``>``) are a string test without a split.
    """
    ptoks = pattern.split(".")
    cut = next((i for i, t in enumerate(ptoks) if t == "*" or t == ">"), len(ptoks))
    prefix = "".join(t + "." for t in ptoks[:cut])
    n = len(prefix)
    rest = ptoks[cut:]
    if rest == [">"]:
        return lambda s: len(s) > n and s.startswith(prefix)
    if rest == ["*"]:
        return lambda s: len(s) > n and s.startswith(prefix) and s.find(".", n) < 0
    if not rest:
        return pattern.__eq__
    count, full = len(ptoks), ptoks[-1] == ">"

    def matches(subject: str) -> bool:
        if not subject.startswith(prefix):
            return False
        stoks = subject.split(".")
        if len(stoks) < count if full else len(stoks) != count:
            return False
        for p, t in zip(ptoks, stoks, strict=False):
            if p == ">":
                return True
            if p != "*" and p != t:
                return False
        return True

    return matches


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
    ``guard`` is the subject's isolation guard (see ``SubjectTrie.guard_of``): the subscriptions
    here are those it admits. ``stamper`` is the guard when deliveries must have their headers
    stamped (a mailbox's sender); ``one_by_one`` says a batch must publish such a subject one
    message at a time through ``Router.publish`` (queue groups or a stamper).
    """

    __slots__ = ("plain", "queues", "shared_owner", "guard", "stamper", "one_by_one")

    def __init__(self, plain: tuple, queues: tuple, guard: Any = None) -> None:
        self.plain = plain
        self.queues = queues  # tuple of member tuples, one per queue group name
        self.guard = guard
        self.stamper = guard if guard is not None and guard.stamps else None
        self.one_by_one = bool(queues) or self.stamper is not None
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


def _without(old: MatchResult, sub: Any) -> MatchResult:
    """``old`` less one occurrence of ``sub`` (``NO_MATCH`` once nothing is left), same guard."""
    plain, queues = old.plain, old.queues
    if sub.queue is None:
        if not queues and len(plain) == 1 and plain[0] is sub:
            return NO_MATCH  # its last subscriber: the common case of a reply subject
        plain = _drop(plain, sub)
    else:
        kept = []
        for group in queues:
            if group[0].queue == sub.queue:
                group = _drop(group, sub)
            if group:
                kept.append(group)
        queues = tuple(kept)
    if not (plain or queues):
        return NO_MATCH
    return MatchResult(plain, queues, old.guard)


def _drop(subs: tuple, sub: Any) -> tuple:
    for i, member in enumerate(subs):
        if member is sub:
            return subs[:i] + subs[i + 1 :]
    return subs


class SubjectTrie:
    """Subscriptions by pattern. Items are any objects with ``subject`` and ``queue`` attributes.

    ``match`` results are cached per literal subject; adding or removing a subscription patches
    the cached results of the subjects its pattern matches, as nats-server's sublist does.

    ``guard_of(subject)``, when set, is asked once per cached subject that has subscribers: a guard
    (``admits(sub)``, ``stamps``, ``stamp(headers, origin)``; see robustmq/isolation.py) keeps only
    the subscriptions it admits in the cached result, patches included, and one that ``stamps``
    makes the router stamp each delivery's headers. Whoever changes what it answers for a subject
    calls ``forget`` with that subject.
    """

    def __init__(self, cache_max_entries: int = MATCH_CACHE_MAX_ENTRIES) -> None:
        self._root = _Node()
        self._cache: dict[str, MatchResult] = {}
        self._cache_max = cache_max_entries
        self.match_cache = self._cache  # literal subject -> MatchResult; read-only for callers
        self.count = 0
        self._guard_of: Callable[[str], Any] | None = None

    @property
    def guard_of(self) -> Callable[[str], Any] | None:
        return self._guard_of

    @guard_of.setter
    def guard_of(self, fn: Callable[[str], Any] | None) -> None:
        """A new guard function may answer differently for any subject: no cached guard holds."""
        self._guard_of = fn
        self._cache.clear()  # in place: the router reads this very dict

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
        self._patch(sub, added=True)

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
        self._patch(sub, added=False)
        return True

    def _patch(self, sub: Any, added: bool) -> None:
        """Bring every cached result the subscription's pattern matches up to date in place.

        As nats-server's sublist does: a hot subject keeps its entry through subscription churn
        instead of being matched again on its next publish.
        """
        cache = self._cache
        if not cache:
            return
        pattern = sub.subject
        if has_wildcards(pattern):
            matches = literal_filter(pattern)
            hits = [s for s in cache if matches(s)]
        else:
            hits = [pattern] if pattern in cache else []
        for subject in hits:
            old = cache[subject]
            cache[subject] = self._with(old, sub, subject) if added else _without(old, sub)

    def _with(self, old: MatchResult, sub: Any, subject: str) -> MatchResult:
        """``old`` plus ``sub``; the guard is the subject's, so an entry that had one keeps it."""
        if old is NO_MATCH:
            guard = self._guard_of(subject) if self._guard_of is not None else None
        else:
            guard = old.guard
        if guard is not None and not guard.admits(sub):
            return old  # not entitled to this subject's deliveries (robustmq/isolation.py)
        if sub.queue is None:
            return MatchResult((*old.plain, sub), old.queues, guard)
        queues = list(old.queues)
        for i, group in enumerate(queues):
            if group[0].queue == sub.queue:
                queues[i] = (*group, sub)
                break
        else:
            queues.append((sub,))
        return MatchResult(old.plain, tuple(queues), guard)

    def match(self, subject: str) -> MatchResult:
        result = self._cache.get(subject)
        if result is not None:
            return result
        result = self.match_uncached(subject)
        if len(self._cache) >= self._cache_max:
            # a new generation: clearing is O(1) per entry added, where evicting the oldest key of a
            # dict slows down as deleted slots pile up at its front (every request has a new reply
            # subject); the hot subjects come back on their next publish
            self._cache.clear()
        self._cache[subject] = result
        return result

    def match_uncached(self, subject: str) -> MatchResult:
        """What ``subject`` matches now, walking the trie (the cache neither read nor filled)."""
        plain: list[Any] = []
        queues: dict[str, list[Any]] = {}
        self._collect(self._root, subject.split("."), 0, plain, queues)
        if not (plain or queues):
            return NO_MATCH
        guard = self._guard_of(subject) if self._guard_of is not None else None
        if guard is not None:
            # isolation is decided here, once per cached subject: the result holds only the
            # subscriptions the guard admits, so delivering it checks nothing per message
            admits = guard.admits
            plain = [sub for sub in plain if admits(sub)]
            queues = {name: kept for name, ms in queues.items() if (kept := [m for m in ms if admits(m)])}
            if not (plain or queues):
                return NO_MATCH
        return MatchResult(tuple(plain), tuple(tuple(m) for m in queues.values()), guard)

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
