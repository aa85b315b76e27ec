"""Hostile JSON and subjects on every agent-layer family: each request gets an error reply in its
family's shape, nothing the store refused stays in memory, and the broker logs no traceback.

Subjects that are not UTF-8 are sent over a raw socket (nats-py only sends text); JSON nested past
the limit (64 levels) goes over NATS and REST.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import nats
import pytest
from brokerproc import BrokerProcess, start_broker

API = "$mq9.AI.API."
MQ9 = "$mq9.AI."
NESTED = "request nested too deeply (max 64)"
DEPTHS = (65, 300, 1000)


def nested(depth: int, inner: str = "1") -> str:
    """JSON arrays ``depth`` levels deep (built as text: ``json.dumps`` itself recurses)."""
    return "[" * depth + inner + "]" * depth


def card(name: str, extra: str = "") -> bytes:
    head = f'{{"name": "{name}", "description": "echo", "skills": [{{"id": "echo"}}]'
    return (head + (f", {extra}" if extra else "") + "}").encode()


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[IO[str]]:
    with open(tmp_path / "broker.log", "w+") as f:
        yield f


@pytest.fixture
def logged_broker(tmp_path: Path, log_file: IO[str]) -> Iterator[BrokerProcess]:
    """A broker whose stderr (its log) is kept: no test here may leave a traceback in it."""
    b = start_broker(tmp_path / "data", stderr=log_file)
    yield b
    b.stop()
    assert_clean_log(log_file)


def assert_clean_log(log_file: IO[str]) -> None:
    log_file.flush()
    log_file.seek(0)
    text = log_file.read()
    assert "Traceback" not in text, text[-4000:]
    assert " ERROR " not in text, text[-4000:]


@pytest.fixture
async def nc(logged_broker: BrokerProcess) -> AsyncIterator[Any]:
    conn = await nats.connect(logged_broker.nats_url)
    yield conn
    await conn.close()


async def ask(nc: Any, subject: str, body: bytes = b"", timeout: float = 5.0) -> dict[str, Any]:
    msg = await nc.request(subject, body, timeout=timeout)
    return json.loads(msg.data)


def raw_request(port: int, subject: bytes, body: bytes = b"{}", timeout_s: float = 5.0) -> bytes:
    """PUB on ``subject`` over a plain socket; the payload of the reply (b"" when none came).

    The socket then still answers PING: a bad subject never breaks the connection.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.recv(65536)  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.bad 1\r\n')
        s.sendall(b"PUB %s _INBOX.bad %d\r\n%s\r\nPING\r\n" % (subject, len(body), body))
        data = b""
        while True:  # the reply comes before the PONG: the service answers as it is delivered
            chunk = s.recv(65536)
            assert chunk, f"connection closed: {data!r}"
            data += chunk
            if b"PONG\r\n" in data:
                break
        assert b"-ERR" not in data, data
        start = data.find(b"MSG _INBOX.bad 1 ")
        if start < 0:
            return b""
        line_end = data.index(b"\r\n", start)
        size = int(data[start:line_end].rsplit(b" ", 1)[1])
        payload = data[line_end + 2 : line_end + 2 + size]
        s.sendall(b"PING\r\n")
        assert s.recv(65536).endswith(b"PONG\r\n")
        return payload


# -- subjects that are not UTF-8 --------------------------------------------------------------------

MQ9_BAD_SUBJECTS = [
    b"$mq9.AI.MSG.SEND.inbox\xff",
    b"$mq9.AI.MSG.FETCH.\xc3(",
    b"$mq9.AI.MSG.QUERY.box\xfe",
    b"$mq9.AI.MSG.DELETE.box.\xff",
]
API_BAD_SUBJECTS = [
    b"$mq9.AI.API.AGENT.INFO.a\xff",
    b"$mq9.AI.API.AGENT.INVOKE.\xc3(",
    b"$mq9.AI.API.\xff",
    b"$mq9.AI.API.TASK.GET.\xfe",
    b"$mq9.AI.API.TOOL.INVOKE.t\xff",
    b"$mq9.AI.API.PIPELINE.GET.p\xff",
    b"$mq9.AI.API.PIPELINE.RUN.\xff",
    b"$mq9.AI.TASK.EVENT.\xff",
]


async def test_a_subject_that_is_not_utf8_gets_an_mq9_error_reply(logged_broker):
    for subject in MQ9_BAD_SUBJECTS:
        reply = json.loads(raw_request(logged_broker.ports["nats"], subject))
        shown = subject.decode("utf-8", "backslashreplace")
        assert reply == {"error": f"invalid subject: not valid UTF-8: {shown}"}, subject


async def test_a_subject_that_is_not_utf8_gets_an_agent_api_error_reply(logged_broker):
    for subject in API_BAD_SUBJECTS:
        reply = json.loads(raw_request(logged_broker.ports["nats"], subject))
        assert reply["code"] == 400, (subject, reply)
        assert reply["error"].startswith("invalid subject: not valid UTF-8: $mq9.AI."), reply
        assert "\\x" in reply["error"]


# -- nesting over NATS --------------------------------------------------------------------------------


async def test_json_nested_past_64_levels_is_refused_by_mq9(nc):
    await ask(nc, MQ9 + "MAILBOX.CREATE", b'{"name": "deep.box"}')
    for depth in DEPTHS:
        deep = nested(depth)
        for subject, body in (
            ("MAILBOX.CREATE", f'{{"name": "x", "desc": {deep}}}'),
            ("MSG.FETCH.deep.box", f'{{"group_name": {deep}}}'),
            ("MSG.QUERY.deep.box", f'{{"tags": {deep}}}'),
            ("MSG.ACK.deep.box", deep),
            ("AGENT.REGISTER", card("deep", f'"x": {deep}').decode()),
            (
                "AGENT.REGISTER",
                json.dumps({"name": "deep", "payload": card("deep", f'"x": {deep}').decode()}),
            ),
            ("AGENT.DISCOVER", f'{{"text": {deep}}}'),
            ("AGENT.REPORT", f'{{"name": "deep", "report_info": {deep}}}'),
        ):
            reply = await ask(nc, MQ9 + subject, body.encode())
            assert reply == {"error": NESTED}, (depth, subject, reply)
    # 64 levels are parsed: the schema answers, not the limit
    reply = await ask(nc, MQ9 + "MAILBOX.CREATE", f'{{"desc": {nested(63)}}}'.encode())
    assert reply["error"] and reply["error"] != NESTED
    sent = await ask(nc, MQ9 + "MSG.SEND.deep.box", nested(1000).encode())  # a message body is opaque
    assert sent["error"] == "" and sent["msg_id"] >= 0


async def test_json_nested_past_64_levels_is_refused_by_the_agent_api_tools_and_pipelines(nc):
    reg = await ask(nc, API + "AGENT.REGISTER", card("known"))
    assert reg["error"] == "", reg
    for depth in DEPTHS:
        deep = nested(depth)
        for subject, body in (
            ("AGENT.REGISTER", card("deep", f'"metadata": {{"x": {deep}}}').decode()),
            ("AGENT.INVOKE.known", f'{{"input": {deep}}}'),
            ("AGENT.DISCOVER", f'{{"text": {deep}}}'),
            ("AGENT.HEARTBEAT.known", deep),
            ("INVOKE", f'{{"intent": "echo", "input": {deep}}}'),
            ("TOOL.REGISTER", f'{{"name": "deep", "input_schema": {{"x": {deep}}}}}'),
            ("TOOL.INVOKE.deep", f'{{"arguments": {deep}}}'),
            (
                "PIPELINE.CREATE",
                f'{{"name": "deep", "steps": [{{"id": "a", "agent": "known", "input": {deep}}}]}}',
            ),
            ("PIPELINE.RUN.deep", f'{{"input": {deep}}}'),
        ):
            reply = await ask(nc, API + subject, body.encode())
            assert reply == {"error": NESTED, "code": 400}, (depth, subject, reply)
        event = await nc.request(
            "$mq9.AI.TASK.EVENT.t1", f'{{"type": "progress", "data": {deep}}}'.encode(), timeout=5
        )
        assert json.loads(event.data) == {"error": NESTED, "code": 400}
    # 64 levels in all are fine: the body, "metadata", "x" and 61 levels of arrays
    ok = await ask(nc, API + "AGENT.REGISTER", card("deep", f'"metadata": {{"x": {nested(62)}}}'))
    assert ok["error"] == "", ok


async def test_a_pipeline_refused_at_depth_300_is_not_kept_not_even_after_a_restart(tmp_path, log_file):
    data_dir = tmp_path / "data"
    b = start_broker(data_dir, stderr=log_file)
    try:
        nc = await nats.connect(b.nats_url)
        await ask(nc, API + "AGENT.REGISTER", card("known"))
        spec = f'{{"name": "deep", "steps": [{{"id": "a", "agent": "known", "input": {nested(300)}}}]}}'
        created = await ask(nc, API + "PIPELINE.CREATE", spec.encode())
        assert created == {"error": NESTED, "code": 400}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.ports['http']}", timeout=10) as http:
            over_rest = await http.post(
                "/api/v1/pipelines",
                content=spec.replace('"deep"', '"deep2"', 1),
                headers={"content-type": "application/json"},
            )
            assert over_rest.status_code == 400 and over_rest.json()["detail"] == NESTED
        for name in ("deep", "deep2"):
            got = await ask(nc, API + f"PIPELINE.GET.{name}")
            assert got["code"] == 404, got
        listed = await ask(nc, API + "PIPELINE.LIST")
        assert listed["pipelines"] == [] and listed["total"] == 0
        await nc.close()
    finally:
        b.stop()
    b = start_broker(data_dir, stderr=log_file)
    try:
        nc = await nats.connect(b.nats_url)
        assert (await ask(nc, API + "PIPELINE.GET.deep"))["code"] == 404
        assert (await ask(nc, API + "PIPELINE.LIST"))["total"] == 0
        await nc.close()
    finally:
        b.stop()
    assert_clean_log(log_file)


# -- what agents and tools send back --------------------------------------------------------------


async def serve(nc: Any, subject: str, answer: bytes) -> None:
    async def respond(msg: Any) -> None:
        await msg.respond(answer)

    await nc.subscribe(subject, cb=respond)
    await nc.flush()


async def test_an_agent_or_tool_output_nested_too_deeply_fails_its_task_and_the_api_keeps_answering(nc):
    deep = nested(300)
    reg = await ask(nc, API + "AGENT.REGISTER", card("deep-agent"))
    await serve(nc, reg["serve_subject"], f'{{"output": {deep}}}'.encode())
    out = await ask(nc, API + "AGENT.INVOKE.deep-agent", b'{"input": 1}')
    assert out["code"] == 502 and out["error"] == "agent sent an invalid reply: nested too deeply (max 64)", (
        out
    )
    task = await ask(nc, API + f"TASK.GET.{out['task_id']}")
    assert task["task"]["state"] == "failed"

    tool = await ask(nc, API + "TOOL.REGISTER", b'{"name": "deep-tool", "input_schema": {"type": "object"}}')
    assert tool["error"] == "", tool
    await serve(nc, tool["serve_subject"], f'{{"result": {deep}}}'.encode())
    called = await ask(nc, API + "TOOL.INVOKE.deep-tool", b'{"arguments": {}}')
    assert called["code"] == 502 and "nested too deeply (max 64)" in called["error"], called

    # an integer past 64 bits in an output is read as a number JSON can carry: the task completes
    big = await ask(nc, API + "AGENT.REGISTER", card("big-agent"))
    await serve(nc, big["serve_subject"], b'{"output": {"n": 123456789012345678901234567890}}')
    done = await ask(nc, API + "AGENT.INVOKE.big-agent", b'{"input": 1}')
    assert done["state"] == "completed" and done["output"]["n"] == pytest.approx(1.2345678901234568e29), done
    # and the registry, tasks and journal still work
    await asyncio.sleep(0.2)  # past a journal flush
    listed = await ask(nc, API + "AGENT.LIST")
    assert {"deep-agent", "big-agent"} <= {a["name"] for a in listed["agents"]}


# -- nesting over REST -------------------------------------------------------------------------------


async def test_json_nested_past_64_levels_is_a_400_over_rest(logged_broker):
    base = f"http://127.0.0.1:{logged_broker.ports['http']}/api/v1"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (await http.post("/mailboxes", json={"name": "rest.box"})).status_code in (200, 201)
        json_type = {"content-type": "application/json"}
        assert (await http.post("/agents", content=card("known"), headers=json_type)).status_code in (
            200,
            201,
        )
        for depth in DEPTHS:
            deep = nested(depth)
            for path, body in (
                ("/agents", card("deep", f'"metadata": {{"x": {deep}}}').decode()),
                ("/agents/known/invoke", f'{{"input": {deep}}}'),
                ("/invoke", f'{{"intent": "echo", "input": {deep}}}'),
                ("/discover", f'{{"text": {deep}}}'),
                ("/tools", f'{{"name": "deep", "input_schema": {{"x": {deep}}}}}'),
                ("/tools/deep/invoke", f'{{"arguments": {deep}}}'),
                (
                    "/pipelines",
                    f'{{"name": "deep", "steps": [{{"id": "a", "agent": "known", "input": {deep}}}]}}',
                ),
                ("/pipelines/deep/run", f'{{"input": {deep}}}'),
                ("/mailboxes", f'{{"name": "x", "desc": {deep}}}'),
                ("/mailboxes/rest.box/messages", f'{{"payload": "p", "headers": {deep}}}'),
                ("/mailboxes/rest.box/fetch", f'{{"group_name": {deep}}}'),
            ):
                for headers in ({"content-type": "application/json"}, {}):
                    r = await http.post(path, content=body, headers=headers)
                    assert r.status_code == 400, (depth, path, r.status_code, r.text[:300])
                    problem = r.json()
                    assert problem["detail"] == NESTED and problem["code"] == 400, problem

        # a chunked body is checked as a whole
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"input": ' + b"[" * 40
            yield b"[" * 40 + b"]" * 80 + b"}"

        r = await http.post(
            "/agents/known/invoke", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["detail"] == NESTED
        # brackets inside strings do not count, and 64 levels pass the limit
        r = await http.post("/mailboxes/rest.box/messages", json={"payload": "[" * 1000})
        assert r.status_code in (200, 201), r.text
        r = await http.post("/mailboxes", content=f'{{"name": "y", "desc": {nested(63)}}}', headers=json_type)
        assert r.status_code == 400 and r.json()["detail"] != NESTED
