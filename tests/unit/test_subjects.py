"""Subject syntax, matching rules and the subscription trie with its match cache."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from robustmq.router import Subscription
from robustmq.subjects import (
    NO_MATCH,
    SubjectTrie,
    is_valid_publish_subject,
    is_valid_subject,
    literal_filter,
    subject_matches,
)


def test_subject_syntax():
    for good in ("foo", "foo.bar", "foo.*", "foo.>", ">", "*", "foo.*.bar", "a.b*", "_INBOX.x.*"):
        assert is_valid_subject(good), good
    for bad in ("", "foo..bar", "foo.", ".foo", "foo.>.bar", ">.foo", "foo bar", "a\tb", "a.\r"):
        assert not is_valid_subject(bad), bad
    assert is_valid_publish_subject("foo.bar")
    assert is_valid_publish_subject("foo.b*")  # a wildcard inside a token is a literal
    assert not is_valid_publish_subject("foo.*")
    assert not is_valid_publish_subject("foo.>")


def test_matching_rules():
    assert subject_matches("foo.*", "foo.bar")
    assert not subject_matches("foo.*", "foo")
    assert not subject_matches("foo.*", "foo.a.b")
    assert subject_matches("foo.>", "foo.a.b")
    assert not subject_matches("foo.>", "foo")
    assert subject_matches(">", "anything.at.all")
    assert not subject_matches("a.*.>", "a.b")
    assert subject_matches("a.*.>", "a.b.c")
    assert not subject_matches("foo.b*", "foo.bar")
    assert subject_matches("foo.b*", "foo.b*")
    assert subject_matches("foo.*", "foo.b*")


def _sub(subject: str, queue: str | None = None) -> Subscription:
    return Subscription(subject, lambda *a: None, queue)


def test_trie_collects_plain_subscriptions_and_queue_groups():
    trie = SubjectTrie()
    a, b, c = _sub("foo.bar"), _sub("foo.*"), _sub(">")
    q1, q2, q3 = _sub("foo.bar", "g"), _sub("foo.*", "g"), _sub("foo.>", "h")
    for s in (a, b, c, q1, q2, q3):
        trie.insert(s)
    result = trie.match("foo.bar")
    assert set(result.plain) == {a, b, c}
    groups = sorted(sorted(map(repr, g)) for g in result.queues)
    assert groups == sorted([sorted([repr(q1), repr(q2)]), [repr(q3)]])
    assert trie.match("nothing.here").plain == (c,)
    assert trie.match("foo").plain == (c,)


def test_match_cache_is_patched_when_subscriptions_change():
    trie = SubjectTrie()
    assert trie.match("a.b") is NO_MATCH
    s = _sub("a.*")
    trie.insert(s)
    assert trie.match("a.b").plain == (s,)
    t = _sub("a.b")
    trie.insert(t)
    assert set(trie.match("a.b").plain) == {s, t}
    trie.remove(s)
    assert trie.match("a.b").plain == (t,)
    trie.remove(t)
    assert trie.match("a.b") is NO_MATCH
    assert trie.count == 0


def test_a_cached_result_is_patched_in_place_not_matched_again():
    trie = SubjectTrie()
    walked: list[str] = []
    fresh = trie.match_uncached
    trie.match_uncached = lambda subject: walked.append(subject) or fresh(subject)  # type: ignore[method-assign]
    trie.insert(_sub("a.b"))
    assert trie.match("a.b") and walked == ["a.b"]
    q, s, t = _sub("a.*", "g"), _sub("a.>"), _sub("a.b", "g")
    for sub in (q, s, t):
        trie.insert(sub)
    result = trie.match("a.b")
    assert walked == ["a.b"]  # still the first walk: every insert patched the entry
    assert s in result.plain and sorted(map(id, result.queues[0])) == sorted([id(q), id(t)])
    assert result.one_by_one  # a queue group joined
    for sub in (q, t):
        trie.remove(sub)
    assert not trie.match("a.b").queues and not trie.match("a.b").one_by_one
    assert walked == ["a.b"]


class _AdmitsAll:
    stamps = False

    @staticmethod
    def admits(sub) -> bool:
        return True


def test_a_patch_adds_only_subscriptions_the_guard_admits():
    trie = SubjectTrie()
    trie.guard_of = lambda subject: _OwnerOnly("alice") if subject.startswith("box.") else None
    mine = Subscription("box.*", lambda *a: None, owner=_Client("alice"))
    trie.insert(mine)
    assert trie.match("box.x").plain == (mine,)
    # cached now: a snooper's wildcard and an exact subscription are patched in only if admitted
    trie.insert(Subscription(">", lambda *a: None, owner=_Client("bob")))
    trie.insert(Subscription("box.x", lambda *a: None, "q", owner=_Client("bob")))
    assert trie.match("box.x").plain == (mine,) and trie.match("box.x").queues == ()
    assert trie.match("box.x") is trie.match_cache["box.x"]
    service = Subscription("box.>", lambda *a: None)  # in process
    trie.insert(service)
    assert trie.match("box.x").plain == (mine, service)


def test_a_patched_entry_keeps_its_guard_and_a_new_one_is_asked_for():
    trie = SubjectTrie()
    asked: list[str] = []
    guard = _AdmitsAll()
    trie.guard_of = lambda subject: asked.append(subject) or guard
    assert trie.match("box.x") is NO_MATCH and asked == []
    trie.insert(_sub("box.*"))  # the NO_MATCH entry becomes a result: its guard is asked for
    assert trie.match("box.x").guard is guard and asked == ["box.x"]
    trie.insert(_sub("box.x"))
    assert trie.match("box.x").guard is guard and asked == ["box.x"]  # kept, not asked again


def test_shared_owner_follows_the_patches():
    trie = SubjectTrie()
    conn = object()
    first = Subscription("a.b", lambda *a: None, None, conn)
    trie.insert(first)
    assert not trie.match("a.b").shared_owner
    second = Subscription("a.*", lambda *a: None, "g", conn)
    trie.insert(second)
    assert trie.match("a.b").shared_owner
    trie.remove(first)
    assert not trie.match("a.b").shared_owner


def test_removing_prunes_empty_nodes():
    trie = SubjectTrie()
    subs = [_sub(f"x.{i}.>") for i in range(50)]
    for s in subs:
        trie.insert(s)
    for s in subs:
        assert trie.remove(s)
    assert trie._root.is_empty()
    assert not trie.remove(subs[0])


_token = st.sampled_from(["a", "b", "c"])
_pattern_token = st.sampled_from(["a", "b", "c", "*"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.lists(_pattern_token, min_size=1, max_size=3), st.booleans()), max_size=8),
    st.lists(st.lists(_token, min_size=1, max_size=4), max_size=8),
)
def test_trie_agrees_with_the_one_off_matcher(patterns, subjects):
    trie = SubjectTrie(cache_max_entries=4)
    subs = []
    for tokens, full in patterns:
        subject = ".".join(tokens + ([">"] if full else []))
        s = _sub(subject)
        subs.append(s)
        trie.insert(s)
    for _ in range(2):  # second pass is served from the cache
        for tokens in subjects:
            subject = ".".join(tokens)
            expected = {id(s) for s in subs if subject_matches(s.subject, subject)}
            assert {id(s) for s in trie.match(subject).plain} == expected
    for s in subs[::2]:
        trie.remove(s)
    for tokens in subjects:
        subject = ".".join(tokens)
        expected = {id(s) for s in subs[1::2] if subject_matches(s.subject, subject)}
        assert {id(s) for s in trie.match(subject).plain} == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "b*", "*", ">"]), min_size=1, max_size=4),
    st.lists(st.sampled_from(["a", "b", "b*", "ab"]), min_size=1, max_size=5),
)
def test_the_cache_scan_filter_agrees_with_the_one_off_matcher(ptokens, stokens):
    if ">" in ptokens[:-1]:
        ptokens = ptokens[: ptokens.index(">") + 1]
    pattern, subject = ".".join(ptokens), ".".join(stokens)
    assert literal_filter(pattern)(subject) == subject_matches(pattern, subject)


class _Client:
    protocol = "nats"

    def __init__(self, user: str) -> None:
        self.user = user


class _OwnerOnly:
    """A guard admitting in-process subscribers and ``owner``'s clients, stamping ``x-by``."""

    stamps = True

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def admits(self, sub) -> bool:
        return getattr(sub.owner, "protocol", None) is None or sub.owner.user == self.owner

    def stamp(self, headers, origin):
        return b"NATS/1.0\r\nx-by: " + origin.user.encode() + b"\r\n\r\n"


def test_guard_of_is_asked_once_per_cached_subject_and_forget_asks_again():
    trie = SubjectTrie()
    asked: list[str] = []
    owners = {"box.inbox": "alice"}

    def guard_of(subject):
        asked.append(subject)
        owner = owners.get(subject)
        return _OwnerOnly(owner) if owner else None

    trie.guard_of = guard_of
    trie.insert(Subscription("box.*", lambda *a: None))
    trie.insert(Subscription("other", lambda *a: None))
    assert trie.match("box.inbox").guard.owner == "alice"
    assert trie.match("box.inbox").one_by_one
    assert trie.match("other").guard is None and not trie.match("other").one_by_one
    trie.match("box.inbox")
    assert asked == ["box.inbox", "other"]
    # a guard that does not stamp filters the cached match and leaves the fast path on
    owners["other"] = "alice"
    trie.forget(["other"])
    plain_guard = _OwnerOnly("alice")
    plain_guard.stamps = False
    trie.guard_of = lambda s: plain_guard if s == "other" else guard_of(s)
    assert trie.match("other").guard is plain_guard and trie.match("other").stamper is None
    assert not trie.match("other").one_by_one
    trie.guard_of = guard_of
    assert trie.match("nobody") is NO_MATCH and "nobody" not in asked  # no subscriber, no question
    owners["box.inbox"] = "bob"
    trie.forget(["box.inbox"])
    assert trie.match("box.inbox").guard.owner == "bob"


def test_a_guarded_subject_reaches_admitted_subscribers_only_with_stamped_headers():
    from robustmq.router import Router

    router = Router()
    router.trie.guard_of = lambda s: _OwnerOnly("alice") if s.startswith("box.") else None
    got: list[tuple[str, bytes | None]] = []
    for name, owner in (("alice", _Client("alice")), ("bob", _Client("bob")), ("service", None)):
        router.subscribe("box.>", lambda s, r, h, p, n=name: got.append((n, h)), owner=owner)
    queue_members = [_Client("bob"), _Client("alice")]
    for client in queue_members:
        router.subscribe(
            "box.inbox", lambda s, r, h, p, c=client: got.append(("q-" + c.user, h)), "g", client
        )
    count = router.publish(
        "box.inbox", b"x", headers=b"NATS/1.0\r\nx-by: forged\r\n\r\n", origin=_Client("carol")
    )
    stamped = b"NATS/1.0\r\nx-by: carol\r\n\r\n"
    assert count == 3
    assert sorted(got) == [("alice", stamped), ("q-alice", stamped), ("service", stamped)]
    got.clear()
    router.publish_batch(["box.inbox", b"y", "free.topic", b"z"], origin=_Client("carol"))
    router.publish_many("box.inbox", [b"1", b"2"], origin=_Client("carol"))
    assert sorted({name for name, _ in got}) == ["alice", "q-alice", "service"]


def _same_result(cached, fresh) -> bool:
    """Equal as sets of deliveries: the order of subscribers within a result is not promised."""
    if fresh is NO_MATCH:
        return cached is NO_MATCH

    def groups(result):
        return sorted((group[0].queue, sorted(map(id, group))) for group in result.queues)

    return (
        sorted(map(id, cached.plain)) == sorted(map(id, fresh.plain))
        and groups(cached) == groups(fresh)
        and cached.guard is fresh.guard
        and cached.shared_owner == fresh.shared_owner
        and cached.one_by_one == fresh.one_by_one
    )


_OWNERS = (None, "conn-1", "conn-2")


class _NotConn2:
    """A guard that keeps one of the owners out, so patches must apply it too."""

    stamps = False

    @staticmethod
    def admits(sub) -> bool:
        return sub.owner != "conn-2"


_op = st.one_of(
    st.tuples(
        st.just("insert"),
        st.lists(_pattern_token, min_size=1, max_size=3),
        st.booleans(),
        st.sampled_from([None, "g", "h"]),
        st.sampled_from(_OWNERS),
    ),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("match"), st.lists(_token, min_size=1, max_size=4)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40), st.sampled_from([3, 64]))
def test_every_cached_result_equals_a_fresh_match_after_any_changes(ops, cache_max):
    trie = SubjectTrie(cache_max_entries=cache_max)
    guards: dict[str, _NotConn2] = {}
    trie.guard_of = lambda subject: (
        guards.setdefault(subject, _NotConn2()) if subject.startswith("a") else None
    )
    subs: list[Subscription] = []
    for op in ops:
        if op[0] == "insert":
            _, tokens, full, queue, owner = op
            sub = Subscription(".".join(tokens + ([">"] if full else [])), lambda *a: None, queue, owner)
            subs.append(sub)
            trie.insert(sub)
        elif op[0] == "remove" and subs:
            assert trie.remove(subs.pop(op[1] % len(subs)))
        elif op[0] == "match":
            trie.match(".".join(op[1]))
        for subject, cached in trie.match_cache.items():
            assert _same_result(cached, trie.match_uncached(subject)), subject
