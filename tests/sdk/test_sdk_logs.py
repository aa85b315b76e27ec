"""Unit tests: structured log records keep their fields as data."""

from __future__ import annotations

import json
import logging

from mq9.logs import JsonFormatter, TextFormatter


def record(**extra) -> logging.LogRecord:
    rec = logging.LogRecord("mq9.agent", logging.INFO, __file__, 1, "agent %s", ("started",), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_extra_fields():
    line = json.loads(JsonFormatter().format(record(agent="translator", task_id="t1")))
    assert line["msg"] == "agent started"
    assert line["level"] == "info"
    assert line["logger"] == "mq9.agent"
    assert line["agent"] == "translator" and line["task_id"] == "t1"
    assert line["ts"].endswith("Z")


def test_text_lines_end_with_key_value_pairs():
    text = TextFormatter().format(record(agent="translator"))
    assert text.endswith("mq9.agent agent started agent=translator")
