"""Pure parts of the control plane, no broker needed: cursor paging never loses or repeats an item,
cursors survive any key, foreign cursors are refused, and credentials resolve to the right role."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.paging import decode_cursor, encode_cursor, paginate
from api.problems import ProblemError
from api.security import AccessTable
from robustmq.config import load_settings

keys = st.one_of(st.text(max_size=20), st.tuples(st.text(max_size=8), st.integers(-(2**40), 2**40)))


@given(st.lists(st.text(max_size=12), unique=True, max_size=60), st.integers(1, 25))
def test_following_next_cursor_visits_every_item_once_in_order(items, limit):
    seen: list[str] = []
    cursor = None
    for _ in range(len(items) + 2):
        page, cursor = paginate(items, lambda x: x, limit, cursor)
        assert len(page) <= limit
        seen += page
        if cursor is None:
            break
    assert seen == sorted(items)


@given(keys)
def test_a_cursor_decodes_to_the_key_it_was_made_from(key):
    decoded = decode_cursor(encode_cursor(key))
    assert (tuple(decoded) if isinstance(decoded, list) else decoded) == key


@given(st.binary(max_size=40))
def test_a_foreign_cursor_is_a_400_or_a_key(raw):
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    try:
        paginate(["a", "b"], lambda x: x, 1, cursor)
    except ProblemError as exc:
        assert exc.status == 400


def access(**auth) -> AccessTable:
    return AccessTable(load_settings(environ={}, overrides=auth))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_credentials_configured_means_open():
    assert access().enabled is False


@pytest.mark.parametrize(
    ("header", "role"),
    [
        ("Bearer admin-t", "admin"),
        ("bearer reader-t", "reader"),
        ("Bearer plain-t", "reader"),
        ("Bearer nats-t", "user"),  # the shared NATS token: a client with no user, as over NATS
        ("Bearer alice-t", "user"),
        (basic("ops", "pw"), "reader"),
        (basic("alice", "alicepw"), "user"),  # no role: an ordinary user, never an admin implicitly
        (basic("root", "rootpw"), "admin"),
        ("Bearer wrong", None),
        (basic("ops", "wrong"), None),
        ("Token admin-t", None),
        ("Basic !!!", None),
        ("", None),
        (None, None),
    ],
)
def test_credentials_resolve_to_their_role(header, role):
    table = access(
        http={
            "tokens": [
                {"token": "admin-t", "role": "admin"},
                {"token": "reader-t", "role": "reader"},
                {"token": "plain-t"},
                {"token": "alice-t", "user": "alice"},
            ]
        },
        auth={
            "token": "nats-t",
            "users": [
                {"user": "ops", "password": "pw", "role": "reader"},
                {"user": "alice", "password": "alicepw"},
                {"user": "root", "password": "rootpw", "role": "admin"},
            ],
        },
    )
    assert table.enabled
    principal = table.principal_for(header)
    assert (principal.role if principal else None) == role


def test_a_token_bound_to_a_user_carries_that_user_and_its_permissions():
    perms = {"subscribe": {"deny": [">"]}}
    table = access(
        http={
            "tokens": [
                {"token": "s-t", "user": "sensor"},
                {"token": "r-t", "user": "sensor", "role": "reader"},
            ]
        },
        auth={"users": [{"user": "sensor", "password": "pw", "permissions": perms}]},
    )
    for header, role in (("Bearer s-t", "user"), ("Bearer r-t", "reader")):
        principal = table.principal_for(header)
        assert principal is not None and (principal.user, principal.role) == ("sensor", role)
        assert not principal.may_receive("anything") and principal.may_publish("anything")
