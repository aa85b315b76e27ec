"""The router's one delivery loop and its variants: echo, queue groups, guards, durable writes, runs, batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from robustmq.isolation import OnlyUsers
from robustmq.router import Router, Subscription


class Client:
    """A stand-in for a front-end connection: what guards and echo checks look at."""

    protocol = "test"

    def __init__(self, user: str | None) -> None:
        self.user = user


class Recording(Subscription):
    """A front-end style subscription that records what it was handed, and the origin at the time."""

    def __init__(self, router: Router, subject: str, owner: Any = None, queue: str | None = None) -> None:
        super().__init__(subject, None, queue, owner)
        self.router = router
        self.got: list[tuple[str, str | None, bytes | None, bytes]] = []
        self.origins: list[Any] = []
        self.runs: list[list[bytes]] = []

    def deliver(self, subject, reply, headers, payload):  # type: ignore[override]
        self.got.append((subject, reply, headers, payload))
        self.origins.append(self.router.current_origin)

    def deliver_many(self, subject, payloads):  # type: ignore[override]
        self.runs.append(list(payloads))


def make(router: Router, subject: str, owner: Any = None, queue: str | None = None) -> Recording:
    sub = Recording(router, subject, owner, queue)
    router.add(sub)
    return sub


def test_plain_subscriptions_all_receive_and_the_origin_is_visible_during_delivery_only():
    router = Router()
    a, b = make(router, "a.b"), make(router, "a.*")
    origin = Client("alice")
    assert router.publish("a.b", b"x", "r", b"NATS/1.0\r\n\r\n", origin=origin) == 2
    assert a.got == b.got == [("a.b", "r", b"NATS/1.0\r\n\r\n", b"x")]
    assert a.origins == [origin]
    assert router.current_origin is None
    assert router.publish("nothing", b"x") == 0


def test_echo_off_skips_the_publishers_own_subscriptions():
    router = Router()
    me, other = Client("a"), Client("b")
    mine, theirs = make(router, "s", owner=me), make(router, "s", owner=other)
    assert router.publish("s", b"x", skip_owner=me) == 1
    assert mine.got == [] and len(theirs.got) == 1


def test_a_queue_group_gives_each_message_to_one_member_never_the_skipped_one():
    router = Router()
    me = Client("a")
    members = [make(router, "q", owner=me, queue="g")] + [make(router, "q", queue="g") for _ in range(2)]
    for _ in range(30):
        assert router.publish("q", b"x", skip_owner=me) == 1
    assert members[0].got == []
    assert sum(len(m.got) for m in members) == 30


class StampingGuard(OnlyUsers):
    stamps = True

    def stamp(self, headers, origin):  # type: ignore[override]
        return b"stamped"


def test_a_guard_admits_its_users_and_in_process_subscribers_and_stamps_once():
    """The trie keeps only admitted subscriptions in the cached match; the router stamps."""
    router = Router()
    router.trie.guard_of = lambda subject: StampingGuard(frozenset({"alice"})) if subject == "g.s" else None
    alice, bob = make(router, "g.s", owner=Client("alice")), make(router, ">", owner=Client("bob"))
    service = make(router, "g.*")  # in process: no protocol on its owner
    q_bob, q_alice = (
        make(router, "g.s", owner=Client("bob"), queue="w"),
        make(router, "g.s", owner=Client("alice"), queue="w"),
    )
    for _ in range(10):
        router.publish("g.s", b"x", headers=b"orig")
    assert bob.got == [] and q_bob.got == []
    assert len(alice.got) == len(service.got) == len(q_alice.got) == 10
    assert {h for _, _, h, _ in alice.got} == {b"stamped"}
    # bulk entries take the guarded path too
    router.publish_many("g.s", [b"1", b"2"])
    router.publish_batch(["g.s", b"3"])
    assert bob.got == [] and alice.runs == [] and [p for *_, p in alice.got[-3:]] == [b"1", b"2", b"3"]


async def test_durable_publishes_return_the_writes_they_caused():
    router = Router()
    done = asyncio.get_running_loop().create_future()
    router.subscribe("d", lambda s, r, h, p: done)
    plain = make(router, "d")
    count, pending = router.publish_durable("d", b"x")
    assert count == 2 and pending == [done] and len(plain.got) == 1
    assert router.publish_durable("none", b"x") == (0, [])


def test_a_run_goes_whole_to_plain_subscribers_and_one_by_one_to_queue_groups():
    router = Router()
    plain = make(router, "r")
    members = [make(router, "r", queue="g") for _ in range(2)]
    assert router.publish_many("r", [b"1", b"2", b"3"]) == 2
    assert plain.runs == [[b"1", b"2", b"3"]]
    assert sorted(p for m in members for *_, p in m.got) == [b"1", b"2", b"3"]


def test_a_run_to_a_connection_holding_two_matches_keeps_the_interleaving():
    router = Router()
    conn = Client("a")
    first, second = make(router, "r.x", owner=conn), make(router, "r.*", owner=conn)
    router.publish_many("r.x", [b"1", b"2"])
    assert first.runs == second.runs == []
    assert [p for *_, p in first.got] == [p for *_, p in second.got] == [b"1", b"2"]


def test_a_batch_delivers_in_order_and_reports_a_failing_delivery_without_stopping():
    router = Router()
    got: list[tuple[str, bytes]] = []

    class Plain(Subscription):
        def deliver_plain(self, subject, payload):  # type: ignore[override]
            if payload == b"boom":
                raise RuntimeError("slow consumer")
            got.append((subject, payload))

    router.add(Plain("b.*"))
    failed: list[str] = []
    router.publish_batch(["b.1", b"a", "b.2", b"boom", "b.3", b"c"], on_error=failed.append)
    assert got == [("b.1", b"a"), ("b.3", b"c")] and failed == ["b.2"]
    with pytest.raises(RuntimeError):
        router.publish_batch(["b.2", b"boom"])
