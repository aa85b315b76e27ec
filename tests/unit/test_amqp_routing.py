"""Exchange and binding routing by RabbitMQ's rules, and the binding key -> subject cover of amq.topic."""

from __future__ import annotations

import pytest

from robustmq.bridges.amqp.routing import Binding, Exchange, Exchanges, headers_match, topic_matches
from robustmq.bridges.amqp.subject_bridge import covering_patterns
from robustmq.subjects import subject_matches


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("a.#", "a", True), ("a.#", "a.b.c", True), ("a.*.c", "a.b.c", True), ("a.*.c", "a.c", False),
        ("a.#.c", "a.c", True), ("a.#.c", "a.x.y.c", True), ("#", "anything.at.all", True),
        ("*", "a.b", False), ("#.c", "c", True), ("a.b", "a.b", True), ("a.b", "a.b.c", False),
    ],
)  # fmt: skip
def test_topic_star_is_one_word_and_hash_zero_or_more(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


def test_headers_match_all_and_any() -> None:
    assert headers_match({"x-match": "all", "a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3})
    assert not headers_match({"x-match": "all", "a": 1, "b": 2}, {"a": 1})
    assert headers_match({"x-match": "any", "a": 1, "b": 2}, {"b": 2})
    assert not headers_match({"x-match": "any", "a": 1}, None)


def test_default_direct_fanout_and_exchange_to_exchange_routes() -> None:
    queues = {"q1", "q2", "q3"}
    xs = Exchanges(queues.__contains__)
    assert xs.route("", "q1", None) == {"q1"}
    assert xs.route("", "missing", None) == set()
    xs.declare(Exchange("fan", "fanout"))
    xs.get("fan").add(Binding("fan", ("q", "q1"), ""))
    xs.get("fan").add(Binding("fan", ("q", "q2"), ""))
    xs.get("amq.direct").add(Binding("amq.direct", ("e", "fan"), "k"))
    xs.get("amq.direct").add(Binding("amq.direct", ("q", "q1"), "k"))
    assert xs.route("amq.direct", "k", None) == {"q1", "q2"}  # q1 once, though reached twice
    assert xs.route("amq.direct", "other", None) == set()


def test_alternate_exchange_takes_what_routed_nowhere() -> None:
    xs = Exchanges({"lost"}.__contains__)
    xs.declare(Exchange("main", "direct", arguments={"alternate-exchange": "alt"}))
    xs.declare(Exchange("alt", "fanout"))
    xs.get("alt").add(Binding("alt", ("q", "lost"), ""))
    assert xs.route("main", "nobody", None) == {"lost"}


def test_unbinding_and_deleting_an_exchange_drop_its_routes() -> None:
    xs = Exchanges({"q"}.__contains__)
    b = Binding("amq.topic", ("q", "q"), "a.*")
    xs.get("amq.topic").add(b)
    assert xs.route("amq.topic", "a.b", None) == {"q"}
    xs.get("amq.topic").remove(Binding("amq.topic", ("q", "q"), "a.*"))
    assert xs.route("amq.topic", "a.b", None) == set()


@pytest.mark.parametrize("key", ["a.#", "a.*.c", "#", "a.#.c", "*.b", "a.b", "#.z", "a.*.#"])
def test_covering_patterns_cover_every_key_the_binding_matches(key: str) -> None:
    patterns = covering_patterns(key)
    for routing_key in ["a", "a.b", "a.b.c", "a.c", "x.b", "a.x.y.c", "z", "q.z", "a.b.z"]:
        if topic_matches(key, routing_key):
            assert any(subject_matches(p, routing_key) for p in patterns), (key, routing_key, patterns)
