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
