"""Checks every agent-layer family (mq9, agent API, tools, pipelines) runs on what it is sent.

A subject must be text and a JSON body at most ``MAX_NESTING_DEPTH`` deep *before* it is parsed:
deeper values break the JSON encoder of the store and of replies (254 levels) and recursive code.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Any

import orjson

MAX_NESTING_DEPTH = 64

# a JSON string, escapes included (the unrolled form: no backtracking)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# every byte that is not a bracket, deleted before the depth is measured
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# an opening bracket becomes 1, a closing one -1 (as a signed byte); a mismatch of kinds is the
# parser's problem, not ours
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")
_PAIR = b"\x01\xff"
_EXACT_CHUNK_BRACKETS = 1 << 16


def too_deep(body: bytes | str, max_depth: int = MAX_NESTING_DEPTH) -> bool:
    """Does ``body`` nest arrays and objects more than ``max_depth`` levels (outside strings)?

    Exact for valid JSON; for invalid JSON the answer does not matter (the parser refuses it).
    Ordinary bodies cost two ``count`` calls. Others lose their strings (a regex) and all but
    their brackets (a translate); then each ``replace`` pass removes the innermost pairs, so a
    pair left after ``max_depth`` passes nests too deep. When a pass removes little (a deep,
    narrow shape) the depth is summed instead, chunk by chunk: about 50 ms for 1 MB of brackets.
    """
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    if b'"' in raw:
        raw = _JSON_STRING.sub(b"", raw)
    shape = original = raw.translate(_STEPS, _NOT_BRACKETS)
    for _ in range(max_depth):
        shorter = shape.replace(_PAIR, b"")
        if len(shorter) == len(shape):
            return False  # only unmatched brackets are left: no pair is deeper than the passes
        if len(shorter) * 4 > len(shape) * 3:  # under a quarter removed: summing is cheaper
            return _max_level(original, max_depth) > max_depth
        shape = shorter
    return _PAIR in shape


def _max_level(steps: bytes, enough: int) -> int:
    """The highest running sum of ``steps`` (signed bytes), or one past ``enough`` found first."""
    level = top = 0
    for start in range(0, len(steps), _EXACT_CHUNK_BRACKETS):
        chunk = steps[start : start + _EXACT_CHUNK_BRACKETS]
        top = max(top, max(accumulate(array("b", chunk), initial=level)))
        if top > enough:
            break
        level += chunk.count(1) - chunk.count(255)
    return top


def subject_is_text(subject: str) -> bool:
    """Was the subject valid UTF-8 on the wire? Front-ends decode bytes with surrogateescape,
    so undecodable bytes arrive as lone surrogates, which no JSON reply can carry."""
    if subject.isascii():
        return True
    try:
        subject.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """``text`` safe to put in a JSON reply or a log line: undecodable bytes become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unencodable(value: Any) -> str | None:
    """Why the store's JSON encoder would refuse ``value`` (None: it would not).

    Services encode a record before changing memory, so nothing is kept that the store refused.
    """
    try:
        orjson.dumps(value)
    except TypeError as exc:
        return str(exc)
    return None
