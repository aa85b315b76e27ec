"""Request validation and the NATS micro subject parser: pure functions, no network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustmq.agents.api import errors
from robustmq.agents.api.micro import parse_srv_subject
from robustmq.agents.api.schemas import (
    REQUEST_SCHEMAS,
    IntentInvokeRequest,
    InvokeRequest,
    RegisterRequest,
    parse_request,
)


def test_invoke_defaults_follow_the_contract():
    req = parse_request(InvokeRequest, b"")
    assert (req.timeout_ms, req.mode, req.on_offline, req.retries) == (30000, "sync", "fail", 0)


def test_register_keeps_unknown_card_fields_and_separates_broker_fields():
    req = parse_request(
        RegisterRequest,
        b'{"name": "a", "defaultInputModes": ["text"], "max_concurrency": 3, "mailbox": "agent.a.inbox"}',
    )
    card = req.card()
    assert card["defaultInputModes"] == ["text"]
    assert "max_concurrency" not in card and "mailbox" not in card
    assert req.max_concurrency == 3 and req.heartbeat_interval_ms == 5000


@pytest.mark.parametrize(
    "model, body, fragment",
    [
        (RegisterRequest, b"", "empty body"),
        (RegisterRequest, b'{"name": "a.b"}', "name"),
        (InvokeRequest, b'{"timeout_ms": "x"}', "timeout_ms"),
        (IntentInvokeRequest, b'{"input": 1}', "intent"),
        (InvokeRequest, b"[]", "JSON object"),
        (InvokeRequest, b"{", "invalid request"),
    ],
)
def test_bad_requests_name_what_is_wrong(model, body, fragment):
    with pytest.raises(errors.ApiError) as info:
        parse_request(model, body, empty_ok=model is not RegisterRequest)
    assert info.value.code == errors.BAD_REQUEST
    assert fragment in info.value.text


@given(st.binary(max_size=200))
def test_any_bytes_give_a_request_or_a_400(body):
    for model in (InvokeRequest, RegisterRequest, IntentInvokeRequest):
        try:
            parse_request(model, body)
        except errors.ApiError as exc:
            assert exc.code == errors.BAD_REQUEST
            assert exc.reply()["error"]


def test_every_request_schema_is_a_json_schema_object():
    for schema in REQUEST_SCHEMAS.values():
        assert schema["type"] == "object"
        assert "properties" in schema


@pytest.mark.parametrize(
    "subject, expected",
    [
        ("$SRV.PING", ("PING", None, None)),
        ("$SRV.INFO.translator", ("INFO", "translator", None)),
        ("$SRV.STATS.translator.abc", ("STATS", "translator", "abc")),
        ("$SRV.OTHER", None),
        ("$SRV.PING.a.b.c", None),
        ("SRV.PING", None),
    ],
)
def test_srv_subjects(subject, expected):
    got = parse_srv_subject(subject)
    assert (tuple(got) if got else None) == expected


def test_task_table_forgets_the_oldest_finished_tasks_and_keeps_running_ones():
    from robustmq.agents.api.journal import task_journal
    from robustmq.agents.api.tasks import Task, TaskTable

    table = TaskTable(task_journal(None), lambda: 1000, max_tasks=3)
    running = Task("running", "a", None, created_ms=1000, deadline_ms=5000)
    table.add(running)
    for i in range(5):
        task = Task(f"t{i}", "a", i, created_ms=1000, deadline_ms=5000)
        table.add(task)
        table.set_state(task, "completed", output=i)
        table.archive(task)
    assert len(table.tasks) == 3
    assert table.get("running") is running
    assert table.get("t0") is None and table.get("t2") is None
    restored = table.get("t4")
    assert restored.state == "completed" and restored.output == 4
    assert [e["seq"] for e in restored.events] == [1, 2]


def test_task_snapshot_holds_exactly_the_persisted_fields():
    from robustmq.agents.api.tasks import Task

    task = Task("x", "a", {"k": 1}, created_ms=1, deadline_ms=2)
    assert tuple(task.snapshot()) == Task._PERSISTED
    again = Task.from_snapshot(task.snapshot())
    assert again.snapshot() == task.snapshot()
