"""Inbox claims and delivery guards (robustmq/isolation.py), on a router without a network."""

from __future__ import annotations

from robustmq.isolation import ONLY_IN_PROCESS, inbox_token
from robustmq.router import Router, Subscription


class Client:
    protocol = "test"

    def __init__(self, user: str | None) -> None:
        self.user = user


def sub(router: Router, subject: str, user: str | None, got: list, protocol: bool = True) -> Subscription:
    owner = Client(user) if protocol else None
    s = router.subscribe(subject, lambda sj, r, h, p: got.append((user, sj, p)), owner=owner)
    return s


def test_inbox_token():
    assert inbox_token("_INBOX.abc.1") == "abc"
    assert inbox_token("_INBOX.abc") == "abc"
    assert inbox_token("_INBOX.") is None and inbox_token("x._INBOX.a") is None


def test_the_first_user_under_a_token_owns_its_replies_until_their_last_subscription_goes():
    router = Router()
    router.isolate()
    got: list = []
    alice = sub(router, "_INBOX.tok.*", "alice", got)
    sub(router, ">", "bob", got)
    sub(router, "_INBOX.tok.*", "bob", got)  # claims nothing: alice holds the token
    router.publish("_INBOX.tok.1", b"r1")
    assert got == [("alice", "_INBOX.tok.1", b"r1")]
    got.clear()
    router.unsubscribe(alice)
    router.publish("_INBOX.tok.2", b"r2")
    assert got == []  # alice's claim is gone, bob's exact subscription never claimed it


def test_an_unclaimed_inbox_and_the_brokers_own_inboxes_reach_in_process_subscribers_only():
    router = Router()
    guards = router.isolate()
    got: list = []
    sub(router, "_INBOX.>", "bob", got)
    sub(router, "_INBOX.>", None, got, protocol=False)
    router.publish("_INBOX.nobody.1", b"x")
    assert got == [(None, "_INBOX.nobody.1", b"x")]
    assert guards.guard_for(router.new_inbox()) is ONLY_IN_PROCESS


def test_a_reply_matched_before_the_inbox_was_claimed_reaches_the_claimant_afterwards():
    router = Router()
    router.isolate()
    got: list = []
    sub(router, ">", "bob", got)
    router.publish("_INBOX.late.1", b"early")  # cached with nobody entitled
    assert got == []
    sub(router, "_INBOX.late.1", "alice", got)
    router.publish("_INBOX.late.1", b"again")
    assert got == [("alice", "_INBOX.late.1", b"again")]


def test_services_add_sources_and_the_first_guard_decides():
    router = Router()
    guards = router.isolate()
    got: list = []
    guards.add_source(lambda s: ONLY_IN_PROCESS if s.startswith("svc.") else None)
    sub(router, ">", "bob", got)
    sub(router, "svc.*", None, got, protocol=False)
    router.publish("svc.call", b"input")
    router.publish("public.news", b"news")
    assert got == [(None, "svc.call", b"input"), ("bob", "public.news", b"news")]


def test_with_a_shared_token_only_inboxes_are_not_private():
    router = Router()
    router.isolate(private_inboxes=False)
    got: list = []
    sub(router, "_INBOX.>", None, got)
    router.publish("_INBOX.tok.1", b"x")
    assert got == [(None, "_INBOX.tok.1", b"x")]


def test_streams_are_read_whole_only_by_whom_nats_would_deliver_them_to():
    from robustmq.stream_access import may_read_stream

    class Owners:
        @staticmethod
        def may_subscribe(user, subject):
            return subject != "vault.inbox" or user == "alice"

    assert may_read_stream("$mq9.AI.API.tasks", ["x"], "bob", None, False, Owners) is False
    assert may_read_stream("journal", [], "bob", None, False, Owners) is False
    assert may_read_stream("$mq9.AI.API.tasks", [], "root", None, True, Owners) is True
    assert may_read_stream("vault.inbox", ["vault.inbox"], "bob", None, False, Owners) is False
    assert may_read_stream("vault.inbox", ["vault.inbox"], "alice", None, False, Owners) is True
    assert may_read_stream("metrics", ["metrics.>"], "bob", None, False, None) is True


def test_a_source_added_after_a_subject_was_cached_guards_it_from_then_on():
    router = Router()
    guards = router.isolate()
    got: list = []
    sub(router, ">", "bob", got)
    router.publish("svc.call", b"before")  # cached without a guard
    guards.add_source(lambda s: ONLY_IN_PROCESS if s.startswith("svc.") else None)
    router.publish("svc.call", b"after")
    assert got == [("bob", "svc.call", b"before")]
