"""MQTT topic <-> subject mapping and MQTT's own matching rules."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from robustmq.bridges.mqtt.topics import (
    filter_to_subjects,
    is_valid_topic_filter,
    split_shared,
    subject_to_topic,
    topic_matches,
    topic_to_subject,
)
from robustmq.subjects import is_valid_publish_subject, is_valid_subject, subject_matches

topic_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#")
topics = st.text(topic_chars, min_size=1, max_size=30)


def test_plain_topic_is_the_dotted_subject() -> None:
    assert topic_to_subject("agent/translator/inbox") == "agent.translator.inbox"
    assert subject_to_topic("agent.translator.inbox") == "agent/translator/inbox"


@pytest.mark.parametrize(
    "topic, subject",
    [
        ("a.b/c", "a%2Eb.c"),
        ("a//b", "a.%.b"),
        ("/a", "%.a"),
        ("a/", "a.%"),
        ("a/*/>", "a.%2A.%3E"),
        ("50%/x y", "50%25.x%20y"),
    ],
)
def test_special_characters_are_escaped_reversibly(topic: str, subject: str) -> None:
    assert topic_to_subject(topic) == subject
    assert subject_to_topic(subject) == topic


@given(topics)
def test_every_topic_maps_to_a_valid_subject_and_back(topic: str) -> None:
    subject = topic_to_subject(topic)
    assert is_valid_publish_subject(subject)
    assert subject_to_topic(subject) == topic


@given(topics, st.lists(st.sampled_from(["+", "#", "x", "", "a.b"]), min_size=1, max_size=4))
def test_filter_subjects_match_what_mqtt_matches(topic: str, levels: list[str]) -> None:
    if "#" in levels:
        levels = levels[: levels.index("#") + 1]
    topic_filter = "/".join(levels)
    assume(topic_filter)
    assert is_valid_topic_filter(topic_filter)
    subjects = filter_to_subjects(topic_filter)
    assert all(is_valid_subject(s) for s in subjects)
    by_subject = any(subject_matches(s, topic_to_subject(topic)) for s in subjects)
    # the router does not apply the '$' rule (the MQTT subscription does): compare without it
    dollar_under_wildcard = topic.startswith("$") and topic_filter[0] in "+#"
    by_mqtt = topic_matches(topic_filter, "_" + topic[1:] if dollar_under_wildcard else topic)
    assert by_subject == by_mqtt


def test_hash_also_matches_the_parent_level() -> None:
    assert filter_to_subjects("a/#") == ["a.>", "a"]
    assert topic_matches("a/#", "a")


def test_leading_wildcard_does_not_match_dollar_topics() -> None:
    assert not topic_matches("#", "$SYS/x")
    assert not topic_matches("+/x", "$SYS/x")
    assert topic_matches("$SYS/#", "$SYS/x")


@pytest.mark.parametrize("bad", ["", "a/b#", "a/#/b", "a+/b", "#/a"])
def test_invalid_filters(bad: str) -> None:
    assert not is_valid_topic_filter(bad)


def test_shared_subscription_filter_is_split() -> None:
    assert split_shared("$share/g1/a/+") == ("g1", "a/+")
    assert split_shared("a/b") == (None, "a/b")
    with pytest.raises(ValueError):
        split_shared("$share/g1")
