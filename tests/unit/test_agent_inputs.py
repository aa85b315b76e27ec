"""The agent layer's input checks (robustmq.agents.inputs), without a network."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from robustmq.agents.inputs import MAX_NESTING_DEPTH, shown, subject_is_text, too_deep, unencodable


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"k":' * depth + b"1" + b"}" * depth


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


def random_value(rng: random.Random, level: int, budget: int) -> Any:
    """Mostly one-child chains (so depth reaches the budget), brackets and escapes in strings."""
    roll = rng.random()
    if level >= budget or roll < 0.1:
        return rng.choice([1, None, 'a[{"', '\\"]}', "", {}, []])
    width = 1 if rng.random() < 0.8 else 2
    if roll < 0.55:
        return [random_value(rng, level + 1, budget) for _ in range(width)]
    return {f"k{i}[": random_value(rng, level + 1, budget) for i in range(width)}


def test_the_limit_is_64_levels_of_arrays_or_objects():
    assert MAX_NESTING_DEPTH == 64
    for shape in (arrays, objects):
        assert not too_deep(shape(64))
        assert too_deep(shape(65))
        assert too_deep(shape(1000))


def test_mixed_arrays_and_objects_count_together():
    body = b'{"a": [' * 33 + b"1" + b"]}" * 33  # 66 levels
    assert too_deep(body)
    assert not too_deep(body, max_depth=66)


def test_brackets_inside_strings_do_not_count():
    assert not too_deep(json.dumps({"text": "[" * 5000 + "{" * 5000}).encode())
    assert not too_deep(json.dumps(['\\"[[[' * 100] * 3).encode())  # escaped quotes stay inside
    assert too_deep(json.dumps({"s": "]]]]"}).encode()[:-1] + b"," + arrays(65)[1:] + b"}")


def test_wide_shallow_bodies_are_not_too_deep():
    assert not too_deep(b"[" + b",".join([b"{}"] * 100_000) + b"]")
    assert not too_deep(b"[" + b",".join([arrays(63)] * 2000) + b"]")


def test_a_deep_pair_after_many_shallow_ones_is_found():
    assert too_deep(b"[" + b"[]," * 100_000 + arrays(64) + b"]")
    assert not too_deep(b"[" + b"[]," * 100_000 + arrays(63) + b"]")


def test_text_bodies_are_checked_like_bytes():
    assert too_deep(arrays(65).decode())
    assert not too_deep('{"é": "ü"}')


def test_the_answer_matches_the_parsed_depth_of_random_json():
    rng = random.Random(22)
    for _ in range(1500):
        value = random_value(rng, 0, rng.randint(1, 90))
        if rng.random() < 0.3:
            value = [value] * rng.randint(2, 20)
        body = json.dumps(value).encode()
        depth = depth_of(value)
        for limit in (3, 30, 64):
            assert too_deep(body, limit) == (depth > limit), (depth, limit)


@pytest.mark.parametrize(
    "body", [b"", b"[", b"]]]]", b"}" * 100 + b"{" * 100, b'"unterminated [[[', b"\xff\xfe[[", b"[" * 70]
)
def test_invalid_json_never_raises(body: bytes):
    too_deep(body)  # either answer is fine: the parser refuses the body next


def test_subjects_decoded_with_surrogateescape_are_not_text():
    assert subject_is_text("$mq9.AI.MSG.SEND.inbox")
    assert subject_is_text("$mq9.AI.MSG.SEND.boîte")
    bad = b"$mq9.AI.MSG.SEND.a\xff".decode("utf-8", "surrogateescape")
    assert not subject_is_text(bad)
    assert shown(bad) == "$mq9.AI.MSG.SEND.a\\xff"
    assert shown("boîte") == "boîte"


def test_unencodable_says_why_the_store_would_refuse_a_value():
    assert unencodable({"a": [1, "x", None]}) is None
    assert unencodable({"n": 2**70}) is not None
    assert unencodable({"s": "\udcff"}) is not None
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    assert unencodable(deep) is not None
