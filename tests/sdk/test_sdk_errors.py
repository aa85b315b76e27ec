"""Unit tests: broker error replies become the right exception classes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mq9 import (
    BadRequest,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    Mq9Error,
    NoLiveAgent,
    NotFound,
    TaskCanceled,
    TaskFailed,
)
from mq9.errors import error_from_reply
from mq9.task import failure


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, BadRequest),
        (403, Forbidden),
        (404, NotFound),
        (408, DeadlineExceeded),
        (409, Conflict),
        (502, TaskFailed),
        (503, NoLiveAgent),
    ],
)
def test_agent_api_codes_map_to_classes(code, cls):
    exc = error_from_reply({"error": "something", "code": code, "task_id": "t1"})
    assert type(exc) is cls
    assert isinstance(exc, Mq9Error)
    assert exc.code == code
    assert exc.text == "something"
    assert exc.task_id == "t1"
    assert str(exc) == f"something (code {code})"


@pytest.mark.parametrize(
    ("text", "cls", "code"),
    [
        ("mailbox a.b does not exist", NotFound, 404),
        ("mailbox not found: a.b", NotFound, 404),
        ("mailbox a.b already exists", Conflict, 409),
        ("name may only contain lowercase letters, digits, and dots", BadRequest, 400),
        ("invalid FETCH payload: expected value", BadRequest, 400),
    ],
)
def test_mq9_texts_without_code_map_to_classes(text, cls, code):
    exc = error_from_reply({"error": text})
    assert type(exc) is cls
    assert exc.code == code


def test_unknown_code_stays_a_plain_mq9_error():
    exc = error_from_reply({"error": "teapot", "code": 418})
    assert type(exc) is Mq9Error
    assert exc.code == 418


def test_validation_details_are_kept():
    exc = error_from_reply({"error": "bad", "code": 400, "details": [{"path": "/x", "message": "m"}]})
    assert exc.details == [{"path": "/x", "message": "m"}]


def test_finished_task_states_map_to_exceptions():
    assert type(failure({"id": "t", "state": "failed", "error": "agent error: boom"})) is TaskFailed
    assert type(failure({"id": "t", "state": "failed", "error": "deadline exceeded"})) is DeadlineExceeded
    assert type(failure({"id": "t", "state": "canceled"})) is TaskCanceled
    assert type(failure({"id": "t", "state": "rejected", "error": "no live instance"})) is NoLiveAgent
    assert failure({"id": "t", "state": "failed", "error": "boom"}).task_id == "t"


async def test_connecting_to_nothing_fails_fast_with_a_503():
    from mq9 import Client

    with pytest.raises(Mq9Error, match="cannot connect") as info:
        await Client("nats://127.0.0.1:1").connect()
    assert info.value.code == 503


def test_mq9_run_says_in_one_line_why_an_agent_cannot_start(tmp_path):
    import os
    import subprocess
    import sys

    sdk_src = Path(__file__).resolve().parents[2] / "sdk" / "src"
    (tmp_path / "lonely.py").write_text("from mq9 import Agent\nagent = Agent('lonely')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mq9", "run", "lonely:agent", "--servers", "nats://127.0.0.1:1"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(sdk_src)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("mq9: agent lonely could not start: cannot connect")
    )
