"""Authentication and allow/deny permissions with wildcards, shared by every front-end."""

from __future__ import annotations

from robustmq.auth import Authenticator, pattern_covers, patterns_overlap
from robustmq.config import AuthSettings


def _auth(**kw) -> Authenticator:
    return Authenticator(AuthSettings.model_validate(kw))


def test_no_auth_configured_lets_everyone_in():
    auth = _auth()
    assert not auth.required
    assert auth.authenticate().user is None


def test_token():
    auth = _auth(token="s3cret")
    assert auth.required
    assert auth.authenticate(token="s3cret") is not None
    assert auth.authenticate(token="wrong") is None
    assert auth.authenticate() is None


def test_users_and_passwords():
    auth = _auth(users=[{"user": "alice", "password": "pw"}])
    principal = auth.authenticate("alice", "pw")
    assert principal is not None and principal.user == "alice" and principal.permissions is None
    assert auth.authenticate("alice", "nope") is None
    assert auth.authenticate("bob", "pw") is None
    assert auth.authenticate("alice") is None


def test_publish_allow_and_deny_with_wildcards():
    auth = _auth(
        users=[
            {
                "user": "u",
                "password": "p",
                "permissions": {"publish": {"allow": ["orders.>", "_INBOX.>"], "deny": ["orders.secret.*"]}},
            }
        ]
    )
    perms = auth.authenticate("u", "p").permissions
    assert perms.may_publish("orders.new")
    assert perms.may_publish("orders.a.b")
    assert not perms.may_publish("orders.secret.x")
    assert not perms.may_publish("billing.x")
    assert perms.may_subscribe("anything")  # no subscribe rule


def test_subscribe_allow_covers_the_whole_pattern_and_deny_filters_deliveries():
    auth = _auth(
        users=[
            {
                "user": "u",
                "password": "p",
                "permissions": {"subscribe": {"allow": ["public.>"], "deny": ["public.secret"]}},
            }
        ]
    )
    perms = auth.authenticate("u", "p").permissions
    assert perms.may_subscribe("public.news")
    assert perms.may_subscribe("public.*")
    assert not perms.may_subscribe(">")
    assert not perms.may_subscribe("public.secret")
    rule = perms.delivery_filter("public.*")
    assert rule is not None
    assert rule.permits_literal("public.news") and not rule.permits_literal("public.secret")
    assert perms.delivery_filter("public.news") is None


def test_pattern_relations():
    assert pattern_covers("a.>", "a.b.*")
    assert pattern_covers("a.*", "a.b")
    assert not pattern_covers("a.*", "a.>")
    assert not pattern_covers("a.b", "a.*")
    assert pattern_covers(">", ">")
    assert patterns_overlap("a.*", "a.b")
    assert patterns_overlap("a.>", "*.b.c")
    assert not patterns_overlap("a.*", "b.*")
    assert not patterns_overlap("a.*", "a.b.c")
