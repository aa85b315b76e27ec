"""The agent API service in-process: a Router, fake connections and agents written on the router."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from helpers.agent_fakes import (
    EchoInstance,
    FakeBroker,
    FakeConnection,
    card,
    publish_as,
    request_as,
    start_service,
)
from helpers.waits import wait_for, wait_until

from robustmq.agents.api import AgentApiService
from robustmq.agents.api.journal import task_journal
from robustmq.config import Settings

API = "$mq9.AI.API."


async def register(router, conn, name: str, **extra) -> dict:
    reply = await request_as(router, conn, API + "AGENT.REGISTER", card(name, **extra))
    assert reply["error"] == "", reply
    reply["_conn"] = conn
    return reply


async def active_tasks(router, name: str) -> int:
    """Tasks of ``name`` running or waiting, as AGENT.STATUS reports them."""
    return (await request_as(router, None, API + f"AGENT.STATUS.{name}"))["active_tasks"]


def serve(router, reg: dict, **options) -> EchoInstance:
    """An instance answering on the registering connection's subscription."""
    options.setdefault("owner", reg["_conn"])
    return EchoInstance(router, reg["serve_subject"], **options)


async def test_register_replies_with_instance_and_serve_subject():
    broker, service = await start_service()
    conn = FakeConnection()
    reply = await register(broker.router, conn, "echo")
    assert reply["name"] == "echo"
    assert reply["serve_subject"] == f"$mq9.AI.INVOKE.echo.{reply['instance_id']}"
    assert reply["heartbeat_interval_ms"] == 5000
    info = await request_as(broker.router, None, API + "AGENT.INFO.echo")
    assert info["agent"]["status"] == "healthy"
    assert info["agent"]["instances"][0]["instance_id"] == reply["instance_id"]
    assert info["agent"]["card"]["skills"][0]["id"] == "echo"
    await service.stop()


async def test_sync_invoke_returns_the_agents_output():
    broker, service = await start_service()
    reg = await register(broker.router, FakeConnection(), "echo")
    agent = serve(broker.router, reg)
    reply = await request_as(
        broker.router, None, API + "AGENT.INVOKE.echo", {"input": {"x": 1}, "skill": "echo"}
    )
    assert reply["error"] == ""
    assert reply["state"] == "completed"
    assert reply["output"] == {"x": 1}
    assert reply["instance_id"] == reg["instance_id"]
    assert agent.received[0]["skill"] == "echo"
    assert agent.received[0]["deadline_ms"] > 0
    task = await request_as(broker.router, None, API + f"TASK.GET.{reply['task_id']}")
    assert task["task"]["state"] == "completed"
    assert task["task"]["output"] == {"x": 1}
    await service.stop()


async def test_no_live_instance_is_rejected_with_503():
    broker, service = await start_service()
    await register(broker.router, FakeConnection(), "echo")
    conn_gone = FakeConnection()
    await register(broker.router, conn_gone, "lonely")
    conn_gone.close()
    reply = await request_as(broker.router, None, API + "AGENT.INVOKE.lonely", {"input": 1})
    assert reply["code"] == 503
    assert reply["state"] == "rejected"
    await service.stop()


async def test_connection_close_takes_the_instance_down_at_once():
    broker, service = await start_service()
    conn = FakeConnection()
    await register(broker.router, conn, "echo")
    conn.close()
    status = await request_as(broker.router, None, API + "AGENT.STATUS.echo")
    assert status["status"] == "down"
    assert status["instances"][0]["status"] == "down"
    await service.stop()


async def test_least_loaded_instance_gets_the_next_task_and_max_concurrency_holds():
    broker, service = await start_service()
    r = broker.router
    a = await register(r, FakeConnection(), "work", max_concurrency=1)
    b = await register(r, FakeConnection(), "work", max_concurrency=1)
    ia = serve(r, a, hold=True)
    ib = serve(r, b, hold=True)
    calls = [
        asyncio.ensure_future(request_as(r, None, API + "AGENT.INVOKE.work", {"input": i})) for i in range(3)
    ]
    await wait_until(lambda: len(ia.received) == 1 and len(ib.received) == 1)
    assert await active_tasks(r, "work") == 3  # the third waits for a free slot
    assert len(ia.received) + len(ib.received) == 2
    ia.release()
    await wait_until(lambda: len(ia.received) + len(ib.received) == 3)
    ia.release()
    ib.release()
    replies = await asyncio.gather(*calls)
    assert sorted(x["output"] for x in replies) == [0, 1, 2]
    await service.stop()


async def test_queued_invocation_is_dispatched_when_an_instance_registers():
    broker, service = await start_service()
    r = broker.router
    conn = FakeConnection()
    await register(r, conn, "later")
    conn.close()
    call = asyncio.ensure_future(
        request_as(
            r, None, API + "AGENT.INVOKE.later", {"input": "hi", "on_offline": "queue", "timeout_ms": 3000}
        )
    )
    await wait_until(lambda: active_tasks(r, "later"))  # the invocation waits in the queue
    assert not call.done()
    reg = await register(r, FakeConnection(), "later")
    serve(r, reg)  # subscribes after the registration reply, as a client would
    reply = await call
    assert reply["output"] == "hi"
    await service.stop()


async def test_deadline_gives_408_and_the_instance_is_told_to_cancel():
    broker, service = await start_service()
    reg = await register(broker.router, FakeConnection(), "slow")
    agent = serve(broker.router, reg, hold=True)
    reply = await request_as(broker.router, None, API + "AGENT.INVOKE.slow", {"input": 1, "timeout_ms": 50})
    assert reply["code"] == 408
    assert reply["state"] == "failed"
    assert agent.cancels == [reply["task_id"]]
    await service.stop()


async def test_agent_error_gives_502():
    broker, service = await start_service()
    reg = await register(broker.router, FakeConnection(), "bad")
    serve(broker.router, reg, fail="boom")
    reply = await request_as(broker.router, None, API + "AGENT.INVOKE.bad", {"input": 1})
    assert reply["code"] == 502
    assert reply["state"] == "failed"
    assert "boom" in reply["error"]
    await service.stop()


async def test_instance_dying_mid_task_retries_on_another_instance():
    broker, service = await start_service()
    r = broker.router
    c1, c2 = FakeConnection(), FakeConnection()
    a = await register(r, c1, "w", max_concurrency=1)
    held = serve(r, a, hold=True)
    call = asyncio.ensure_future(request_as(r, None, API + "AGENT.INVOKE.w", {"input": 7, "retries": 1}))
    await wait_until(lambda: len(held.received) == 1)
    b = await register(r, c2, "w")
    serve(r, b)
    c1.close()
    reply = await call
    assert reply["output"] == 7
    assert reply["instance_id"] == b["instance_id"]
    await service.stop()


async def test_instance_dying_mid_task_without_retries_fails_the_task():
    broker, service = await start_service()
    r = broker.router
    c1 = FakeConnection()
    a = await register(r, c1, "w")
    held = serve(r, a, hold=True)
    call = asyncio.ensure_future(request_as(r, None, API + "AGENT.INVOKE.w", {"input": 7}))
    await wait_until(lambda: held.received)  # mid task: the instance has it
    c1.close()
    reply = await call
    assert reply["code"] == 502
    assert reply["state"] == "failed"
    await service.stop()


async def test_async_invoke_and_events_replayed_after_seq():
    broker, service = await start_service()
    r = broker.router
    conn = FakeConnection()
    reg = await register(r, conn, "a")
    agent = serve(r, reg, hold=True)
    reply = await request_as(r, None, API + "AGENT.INVOKE.a", {"input": "x", "mode": "async"})
    assert reply == {"error": "", "task_id": reply["task_id"], "state": "submitted"}
    task_id = reply["task_id"]
    updates: list[dict] = []
    r.subscribe(f"$mq9.AI.TASK.UPDATES.{task_id}", lambda s, rp, h, p: updates.append(orjson.loads(p)))
    for i in range(3):
        publish_as(r, conn, f"$mq9.AI.TASK.EVENT.{task_id}", orjson.dumps({"type": "progress", "data": i}))
    agent.release()
    events = await request_as(r, None, API + f"TASK.EVENTS.{task_id}", {"after_seq": 0})
    assert events["state"] == "completed"
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    types = [e["type"] for e in events["events"]]
    assert types == ["state", "state", "progress", "progress", "progress", "state"]
    later = await request_as(r, None, API + f"TASK.EVENTS.{task_id}", {"after_seq": 3})
    assert [e["seq"] for e in later["events"]] == seqs[3:]
    assert [u["seq"] for u in updates] == seqs[2:]  # subscribed after the first two
    await service.stop()


async def test_cancel_tells_the_instance_and_a_finished_task_gives_409():
    broker, service = await start_service()
    r = broker.router
    reg = await register(r, FakeConnection(), "c")
    agent = serve(r, reg, hold=True)
    reply = await request_as(r, None, API + "AGENT.INVOKE.c", {"input": 1, "mode": "async"})
    cancel = await request_as(r, None, API + f"TASK.CANCEL.{reply['task_id']}")
    assert cancel == {"error": "", "state": "canceled"}
    assert agent.cancels == [reply["task_id"]]
    again = await request_as(r, None, API + f"TASK.CANCEL.{reply['task_id']}")
    assert again["code"] == 409
    await service.stop()


async def test_same_idempotency_key_returns_the_first_task():
    broker, service = await start_service()
    r = broker.router
    reg = await register(r, FakeConnection(), "i")
    agent = serve(r, reg)
    body = {"input": 1, "idempotency_key": "k1"}
    first = await request_as(r, None, API + "AGENT.INVOKE.i", body)
    second = await request_as(r, None, API + "AGENT.INVOKE.i", body)
    assert first["task_id"] == second["task_id"]
    assert second["output"] == 1
    assert len(agent.received) == 1
    await service.stop()


async def test_heartbeat_expiry_takes_an_instance_down():
    broker, service = await start_service()
    r = broker.router
    reg = await register(r, FakeConnection(), "hb", heartbeat_interval_ms=50)
    ok = await request_as(
        r, None, API + "AGENT.HEARTBEAT.hb", {"instance_id": reg["instance_id"], "in_flight": 0}
    )
    assert ok["error"] == ""
    await wait_for(lambda: request_as(r, None, API + "AGENT.STATUS.hb"), lambda s: s["status"] == "down")
    late = await request_as(r, None, API + "AGENT.HEARTBEAT.hb", {"instance_id": reg["instance_id"]})
    assert late["code"] == 404
    await service.stop()


async def test_intent_invocation_fails_over_to_the_next_agent():
    broker, service = await start_service()
    r = broker.router
    t1 = await register(r, FakeConnection(), "translator", description="translate text between languages")
    t2 = await register(r, FakeConnection(), "translator2", description="translate documents into languages")
    await register(r, FakeConnection(), "weather", description="weather forecast for a city")
    serve(r, t1, fail="overloaded")
    serve(r, t2, fail="overloaded")
    reply = await request_as(r, None, API + "INVOKE", {"intent": "translate this text", "input": "hola"})
    assert reply["code"] == 502
    ok = serve(r, t2)
    ok.stop()
    # make the first choice fail and the second succeed
    r2 = await start_service()
    await service.stop()
    broker, service = r2
    r = broker.router
    t1 = await register(r, FakeConnection(), "translator", description="translate text between languages")
    t2 = await register(r, FakeConnection(), "translator2", description="translate documents into languages")
    serve(r, t1, fail="overloaded")
    serve(r, t2)
    reply = await request_as(r, None, API + "INVOKE", {"intent": "translate this text", "input": "hola"})
    assert reply["error"] == ""
    assert reply["agent"] == "translator2"
    assert reply["output"] == "hola"
    await service.stop()


async def test_srv_ping_info_stats_answer_for_each_live_instance():
    broker, service = await start_service()
    r = broker.router
    a = await register(r, FakeConnection(), "echo")
    await register(r, FakeConnection(), "echo")
    serve(r, a)
    await request_as(r, None, API + "AGENT.INVOKE.echo", {"input": 1, "skill": "echo"})
    got: list[dict] = []
    inbox = r.new_inbox()
    r.subscribe(inbox, lambda s, rp, h, p: got.append(orjson.loads(p)))
    r.publish("$SRV.PING", b"", inbox)
    assert sorted(g["type"] for g in got) == ["io.nats.micro.v1.ping_response"] * 2
    got.clear()
    r.publish(f"$SRV.STATS.echo.{a['instance_id']}", b"", inbox)
    assert len(got) == 1
    assert got[0]["endpoints"][0]["name"] == "echo"
    assert got[0]["endpoints"][0]["num_requests"] == 1
    got.clear()
    r.publish("$SRV.INFO.echo", b"", inbox)
    assert {g["id"] for g in got} == {a["instance_id"], got[1]["id"]}
    assert got[0]["endpoints"][0]["subject"] == "$mq9.AI.API.AGENT.INVOKE.echo"
    await service.stop()


async def test_isolation_other_user_cannot_register_or_heartbeat_and_sender_is_stamped():
    settings = Settings.model_validate(
        {"auth": {"users": [{"user": "alice", "password": "a"}, {"user": "bob", "password": "b"}]}}
    )
    broker, service = await start_service(FakeBroker(settings))
    r = broker.router
    alice, bob = FakeConnection("alice"), FakeConnection("bob")
    reg = await register(r, alice, "owned")
    denied = await request_as(r, bob, API + "AGENT.REGISTER", card("owned"))
    assert denied["code"] == 403
    hb = await request_as(r, bob, API + "AGENT.HEARTBEAT.owned", {"instance_id": reg["instance_id"]})
    assert hb["code"] == 403
    agent = serve(r, reg, owner=alice)
    snooper = EchoInstance(r, "$mq9.AI.INVOKE.>", hold=True, owner=bob)
    reply = await request_as(r, bob, API + "AGENT.INVOKE.owned", {"input": 1})
    assert reply["error"] == ""
    assert b"mq9-sender: bob" in agent.headers[0]
    assert snooper.received == []
    assert service.may_subscribe("bob", reg["serve_subject"]) is False
    assert service.may_subscribe("alice", reg["serve_subject"]) is True
    assert service.owner_of("owned") == "alice"
    got = await request_as(r, bob, API + f"TASK.GET.{reply['task_id']}")
    assert got["error"] == ""
    denied_task = await request_as(r, FakeConnection("carol"), API + f"TASK.GET.{reply['task_id']}")
    assert denied_task["code"] == 403
    await service.stop()


async def test_tasks_and_agents_are_recovered_from_the_journal():
    journal = task_journal(None)
    broker, service = await start_service(journal=journal)
    r = broker.router
    reg = await register(r, FakeConnection(), "p")
    serve(r, reg)
    done = await request_as(r, None, API + "AGENT.INVOKE.p", {"input": "a"})
    held_reg = await register(r, FakeConnection(), "q")
    serve(r, held_reg, hold=True)
    pending = await request_as(r, None, API + "AGENT.INVOKE.q", {"input": "b", "mode": "async"})
    await service.stop()

    broker2, service2 = await start_service(journal=journal)
    r2 = broker2.router
    got = await request_as(r2, None, API + f"TASK.GET.{done['task_id']}")
    assert got["task"]["state"] == "completed" and got["task"]["output"] == "a"
    assert (await request_as(r2, None, API + "AGENT.INFO.q"))["agent"]["status"] == "down"
    reg2 = await register(r2, FakeConnection(), "q")
    serve(r2, reg2)
    await wait_for(
        lambda: request_as(r2, None, API + f"TASK.GET.{pending['task_id']}"),
        lambda t: t["task"]["state"] == "completed",
    )
    await service2.stop()


@pytest.mark.parametrize(
    "subject, body, code",
    [
        ("AGENT.REGISTER", b"", 400),
        ("AGENT.REGISTER", b"{not json", 400),
        ("AGENT.REGISTER", b'{"name": "has space"}', 400),
        ("AGENT.REGISTER", b'{"name": "x", "max_concurrency": 0}', 400),
        ("AGENT.REGISTER", b"[1, 2]", 400),
        ("AGENT.HEARTBEAT.nobody", b'{"instance_id": "x"}', 404),
        ("AGENT.HEARTBEAT.nobody", b"{}", 400),
        ("AGENT.DEREGISTER.nobody", b"", 404),
        ("AGENT.INFO.nobody", b"", 404),
        ("AGENT.INFO", b"", 400),
        ("AGENT.STATUS.nobody", b"", 404),
        ("AGENT.LIST", b'{"limit": "ten"}', 400),
        ("AGENT.DISCOVER", b'{"live_only": "maybe"}', 400),
        ("AGENT.INVOKE.nobody", b'{"input": 1}', 404),
        ("AGENT.INVOKE.echo", b'{"mode": "later"}', 400),
        ("AGENT.INVOKE.echo", b'{"timeout_ms": 0}', 400),
        ("AGENT.INVOKE.echo", b'{"retries": -1}', 400),
        ("INVOKE", b'{"input": 1}', 400),
        ("INVOKE", b"", 400),
        ("TASK.GET.nope", b"", 404),
        ("TASK.EVENTS.nope", b'{"after_seq": -1}', 400),
        ("TASK.CANCEL.nope", b"", 404),
        ("AGENT.FLY", b"", 404),
        ("NOPE", b"", 404),
    ],
)
async def test_bad_input_gets_a_json_error_with_its_code(subject, body, code):
    broker, service = await start_service()
    await register(broker.router, FakeConnection(), "echo")
    reply = await request_as(broker.router, None, API + subject, body)
    assert reply["code"] == code, reply
    assert reply["error"]
    ok = await request_as(broker.router, None, API + "AGENT.LIST")
    assert ok["error"] == ""
    await service.stop()


async def test_idempotency_keys_expire_after_the_window():
    now = [1_000_000]
    broker = FakeBroker()
    service = AgentApiService(broker.router, journal=task_journal(None), clock_ms=lambda: now[0])
    await service.start()
    r = broker.router
    reg = await register(r, FakeConnection(), "i")
    agent = serve(r, reg)
    body = {"input": 1, "idempotency_key": "k"}
    first = await request_as(r, None, API + "AGENT.INVOKE.i", body)
    now[0] += 10 * 60 * 1000 + 1
    assert service.tasks.prune_idempotency() == 1
    second = await request_as(r, None, API + "AGENT.INVOKE.i", body)
    assert second["task_id"] != first["task_id"]
    assert len(agent.received) == 2
    await service.stop()


async def test_waiting_fail_mode_tasks_get_503_when_the_last_instance_dies():
    broker, service = await start_service()
    r = broker.router
    reg = await register(r, FakeConnection(), "busy", max_concurrency=1)
    serve(r, reg, hold=True)
    first = asyncio.ensure_future(request_as(r, None, API + "AGENT.INVOKE.busy", {"input": 1}))
    waiting = asyncio.ensure_future(request_as(r, None, API + "AGENT.INVOKE.busy", {"input": 2}))
    await wait_for(lambda: active_tasks(r, "busy"), lambda n: n == 2)
    assert not waiting.done()  # one runs, one waits for the slot
    reg["_conn"].close()
    assert (await first)["code"] == 502
    second = await waiting
    assert second["code"] == 503
    await service.stop()


async def test_cancel_of_a_queued_task_never_reaches_an_instance():
    broker, service = await start_service()
    r = broker.router
    gone = FakeConnection()
    await register(r, gone, "later")
    gone.close()
    sub = await request_as(
        r, None, API + "AGENT.INVOKE.later", {"input": 1, "mode": "async", "on_offline": "queue"}
    )
    cancel = await request_as(r, None, API + f"TASK.CANCEL.{sub['task_id']}")
    assert cancel["state"] == "canceled"
    reg = await register(r, FakeConnection(), "later")
    agent = serve(r, reg)
    # the registration drains the queue; once nothing is queued or running, the canceled task is gone
    await wait_for(lambda: active_tasks(r, "later"), lambda n: n == 0)
    assert agent.received == []
    await service.stop()


async def test_deregistering_an_instance_mid_task_retries_elsewhere():
    broker, service = await start_service()
    r = broker.router
    a = await register(r, FakeConnection(), "d")
    held = serve(r, a, hold=True)
    call = asyncio.ensure_future(request_as(r, None, API + "AGENT.INVOKE.d", {"input": 3, "retries": 2}))
    await wait_until(lambda: held.received)  # a has it before b exists
    b = await register(r, FakeConnection(), "d")
    serve(r, b)
    gone = await request_as(r, a["_conn"], API + "AGENT.DEREGISTER.d", {"instance_id": a["instance_id"]})
    assert gone["removed_instances"] == 1
    reply = await call
    assert reply["output"] == 3 and reply["instance_id"] == b["instance_id"]
    await service.stop()


async def test_list_pages_and_status_filter():
    broker, service = await start_service()
    r = broker.router
    for i in range(5):
        await register(r, FakeConnection(), f"agent{i}")
    down = FakeConnection()
    await register(r, down, "zz-down")
    down.close()
    page = await request_as(r, None, API + "AGENT.LIST", {"limit": 2, "page": 2})
    assert [a["name"] for a in page["agents"]] == ["agent2", "agent3"]
    assert page["total"] == 6
    only_down = await request_as(r, None, API + "AGENT.LIST", {"status": "down"})
    assert [a["name"] for a in only_down["agents"]] == ["zz-down"]
    await service.stop()
