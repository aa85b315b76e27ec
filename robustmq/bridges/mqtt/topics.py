"""MQTT topic names and filters <-> subjects of the shared subject space, and MQTT's own rules.

``a/b/c`` is ``a.b.c``; ``+`` and ``#`` are ``*`` and ``>``. Characters a subject token cannot
hold are escaped with ``%XX`` (``.`` -> ``%2E``, ``%`` -> ``%25``, whitespace, a level that is
exactly ``*`` or ``>``), and an empty level is the token ``%``, so the mapping is reversible.
"""

from __future__ import annotations

import re

SHARE_PREFIX = "$share/"
_CACHE_MAX_ENTRIES = 8192
_NEEDS_ESCAPE = re.compile(r"[.% \t\r\n]|(?:^|/)[*>](?:/|$)|^/|/$|//|^$")
_ESCAPES = {".": "%2E", "%": "%25", " ": "%20", "\t": "%09", "\r": "%0D", "\n": "%0A"}
_ESCAPE_CHARS = re.compile(r"[.% \t\r\n]")
_UNESCAPE = re.compile(r"%(2E|25|20|09|0D|0A|2A|3E)")
_UNESCAPES = {"2E": ".", "25": "%", "20": " ", "09": "\t", "0D": "\r", "0A": "\n", "2A": "*", "3E": ">"}

_topic_to_subject: dict[str, str] = {}
_subject_to_topic: dict[str, str] = {}


def _escape_level(level: str) -> str:
    if not level:
        return "%"
    if level == "*":
        return "%2A"
    if level == ">":
        return "%3E"
    return _ESCAPE_CHARS.sub(lambda m: _ESCAPES[m.group()], level)


def topic_to_subject(topic: str) -> str:
    """The subject of a topic name (no wildcards)."""
    subject = _topic_to_subject.get(topic)
    if subject is not None:
        return subject
    if _NEEDS_ESCAPE.search(topic):
        subject = ".".join(_escape_level(level) for level in topic.split("/"))
    else:
        subject = topic.replace("/", ".")
    if len(_topic_to_subject) >= _CACHE_MAX_ENTRIES:
        _topic_to_subject.clear()
    _topic_to_subject[topic] = subject
    return subject


def subject_to_topic(subject: str) -> str:
    """The topic name of a subject (the inverse of ``topic_to_subject``)."""
    topic = _subject_to_topic.get(subject)
    if topic is not None:
        return topic
    if "%" in subject:
        topic = "/".join(_unescape_token(t) for t in subject.split("."))
    else:
        topic = subject.replace(".", "/")
    if len(_subject_to_topic) >= _CACHE_MAX_ENTRIES:
        _subject_to_topic.clear()
    _subject_to_topic[subject] = topic
    return topic


def _unescape_token(token: str) -> str:
    if token == "%":
        return ""
    return _UNESCAPE.sub(lambda m: _UNESCAPES[m.group(1)], token) if "%" in token else token


def is_valid_topic_name(topic: str) -> bool:
    """A PUBLISH topic: not empty, no wildcard characters."""
    return bool(topic) and "+" not in topic and "#" not in topic


def is_valid_topic_filter(topic_filter: str) -> bool:
    """``+`` alone in its level, ``#`` alone and last."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "+" in level and level != "+":
            return False
        if "#" in level and (level != "#" or i != last):
            return False
    return True


def filter_to_subjects(topic_filter: str) -> list[str]:
    """The subject patterns of a (valid, non-shared) filter: ``a/#`` is ``a.>`` and ``a`` too."""
    levels = topic_filter.split("/")
    tokens = ["*" if lv == "+" else ">" if lv == "#" else _escape_level(lv) for lv in levels]
    subjects = [".".join(tokens)]
    if levels[-1] == "#" and len(levels) > 1:
        subjects.append(".".join(tokens[:-1]))
    return subjects


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """``$share/g/a/b`` -> ``("g", "a/b")``; a plain filter -> ``(None, filter)``.

    Raises ``ValueError`` for a malformed shared filter (empty or wildcard group, no filter).
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    group, sep, rest = topic_filter[len(SHARE_PREFIX) :].partition("/")
    if not sep or not group or not rest or "+" in group or "#" in group:
        raise ValueError(topic_filter)
    return group, rest


def starts_with_wildcard(topic_filter: str) -> bool:
    return topic_filter[:1] in ("+", "#")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching of one topic against one filter (used for retained messages)."""
    if topic.startswith("$") and starts_with_wildcard(topic_filter):
        return False
    flv = topic_filter.split("/")
    tlv = topic.split("/")
    for i, f in enumerate(flv):
        if f == "#":
            return True
        if i >= len(tlv):
            return False
        if f != "+" and f != tlv[i]:
            return False
    return len(flv) == len(tlv)
