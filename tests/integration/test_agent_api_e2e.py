"""The agent API end to end: agents and callers written directly on nats-py against a real broker."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from helpers.agents import API, Agent, call, card, wait_down
from helpers.waits import QUIET_S, wait_for, wait_until


@pytest.fixture
async def nc(broker):
    conn = await nats.connect(broker.nats_url)
    yield conn
    await conn.close()


async def test_two_instances_share_the_load(broker, nc):
    a = await Agent(broker.nats_url, "pair").start(max_concurrency=4)
    b = await Agent(broker.nats_url, "pair").start(max_concurrency=4)
    replies = await asyncio.gather(*(call(nc, API + "AGENT.INVOKE.pair", {"input": i}) for i in range(40)))
    assert sorted(r["output"] for r in replies) == list(range(40))
    assert {r["state"] for r in replies} == {"completed"}
    assert len(a.received) > 0 and len(b.received) > 0
    assert len(a.received) + len(b.received) == 40
    status = await call(nc, API + "AGENT.STATUS.pair")
    assert status["status"] == "healthy"
    assert status["total_processed"] == 40
    assert len(status["instances"]) == 2
    await a.close()
    await b.close()


async def test_max_concurrency_one_serialises_work_on_one_instance(broker, nc):
    a = await Agent(broker.nats_url, "single", hold=True).start()
    calls = [asyncio.ensure_future(call(nc, API + "AGENT.INVOKE.single", {"input": i})) for i in range(3)]
    await wait_until(lambda: len(a.received) == 1)
    await nc.flush()  # the broker has all three invocations
    await a.nc.flush()  # and whatever it sent the instance has arrived
    await asyncio.sleep(QUIET_S)  # a second dispatch, if one was made, would have been handled by now
    assert len(a.received) == 1  # the others wait within their deadline
    for _ in range(3):
        await wait_until(lambda: len(a.pending) == 1)
        await a.release()
    replies = await asyncio.gather(*calls)
    assert sorted(r["output"] for r in replies) == [0, 1, 2]
    await a.close()


async def test_instance_dying_mid_task_is_retried_on_another_instance(broker, nc):
    dying = await Agent(broker.nats_url, "r", hold=True).start()
    pending = asyncio.ensure_future(call(nc, API + "AGENT.INVOKE.r", {"input": "x", "retries": 1}))
    await wait_until(lambda: len(dying.received) == 1)
    healthy = await Agent(broker.nats_url, "r").start()
    await dying.close()
    reply = await pending
    assert reply["state"] == "completed"
    assert reply["instance_id"] == healthy.instance_id
    events = await call(nc, API + f"TASK.EVENTS.{reply['task_id']}", {"after_seq": 0})
    assert "retry" in [e["type"] for e in events["events"]]
    await healthy.close()


async def test_instance_dying_mid_task_without_retries_fails_with_502(broker, nc):
    dying = await Agent(broker.nats_url, "nr", hold=True).start()
    spare = Agent(broker.nats_url, "nr")
    pending = asyncio.ensure_future(call(nc, API + "AGENT.INVOKE.nr", {"input": "x"}))
    await wait_until(lambda: len(dying.received) == 1)
    await spare.start()
    await dying.close()
    reply = await pending
    assert reply["code"] == 502
    assert reply["state"] == "failed"
    assert spare.received == []
    await spare.close()


async def test_no_live_instance_gives_503_rejected_not_a_timeout(broker, nc):
    gone = await Agent(broker.nats_url, "offline").start()
    await gone.close()
    await wait_down(nc, "offline")
    started = time.monotonic()
    reply = await call(nc, API + "AGENT.INVOKE.offline", {"input": 1, "timeout_ms": 30000}, timeout=10)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert reply["code"] == 503
    assert reply["state"] == "rejected"
    print(f"503 answered in {elapsed_ms:.1f} ms")
    task = await call(nc, API + f"TASK.GET.{reply['task_id']}")
    assert task["task"]["state"] == "rejected"


async def test_queued_invocation_is_dispatched_when_an_instance_appears(broker, nc):
    first = await Agent(broker.nats_url, "q").start()
    await first.close()
    await wait_down(nc, "q")
    pending = asyncio.ensure_future(
        call(
            nc,
            API + "AGENT.INVOKE.q",
            {"input": "later", "on_offline": "queue", "timeout_ms": 10000},
            timeout=12,
        )
    )
    await wait_for(lambda: call(nc, API + "AGENT.STATUS.q"), lambda s: s["active_tasks"] == 1)
    assert not pending.done()  # the broker holds it for an instance
    second = await Agent(broker.nats_url, "q").start()
    reply = await pending
    assert reply.get("output") == "later", reply
    assert reply["instance_id"] == second.instance_id
    await second.close()


async def test_deadline_gives_408_and_cancels_on_the_instance(broker, nc):
    slow = await Agent(broker.nats_url, "slow", hold=True).start()
    reply = await call(nc, API + "AGENT.INVOKE.slow", {"input": 1, "timeout_ms": 200})
    assert reply["code"] == 408
    assert reply["state"] == "failed"
    await wait_until(lambda: slow.cancels == [reply["task_id"]])
    await slow.close()


async def test_agent_error_gives_502_failed(broker, nc):
    bad = await Agent(broker.nats_url, "bad", fail="cannot do that").start()
    reply = await call(nc, API + "AGENT.INVOKE.bad", {"input": 1})
    assert reply["code"] == 502
    assert reply["state"] == "failed"
    assert "cannot do that" in reply["error"]
    await bad.close()


async def test_cancel_reaches_the_instance_and_finished_tasks_give_409(broker, nc):
    worker = await Agent(broker.nats_url, "cx", hold=True).start()
    sub = await call(nc, API + "AGENT.INVOKE.cx", {"input": 1, "mode": "async"})
    assert sub["state"] == "submitted"
    await wait_until(lambda: len(worker.received) == 1)
    canceled = await call(nc, API + f"TASK.CANCEL.{sub['task_id']}")
    assert canceled == {"error": "", "state": "canceled"}
    await wait_until(lambda: worker.cancels == [sub["task_id"]])
    again = await call(nc, API + f"TASK.CANCEL.{sub['task_id']}")
    assert again["code"] == 409
    task = await call(nc, API + f"TASK.GET.{sub['task_id']}")
    assert task["task"]["state"] == "canceled"
    await worker.close()


async def test_async_task_events_are_live_and_replayed_from_after_seq(broker, nc):
    worker = await Agent(broker.nats_url, "ev", hold=True).start()
    sub = await call(nc, API + "AGENT.INVOKE.ev", {"input": "doc", "mode": "async", "skill": "echo"})
    task_id = sub["task_id"]
    live: list[dict] = []

    async def on_update(msg):
        live.append(json.loads(msg.data))

    await nc.subscribe(f"$mq9.AI.TASK.UPDATES.{task_id}", cb=on_update)
    await nc.flush()
    await wait_until(lambda: len(worker.received) == 1)
    await worker.event(task_id, "progress", {"pct": 50})
    await worker.event(task_id, "artifact", {"part": "a"})
    await worker.nc.flush()
    await wait_until(lambda: len(live) == 2)
    await worker.release()
    await wait_until(lambda: live and live[-1]["state"] == "completed")
    replay = await call(nc, API + f"TASK.EVENTS.{task_id}", {"after_seq": 0})
    assert replay["state"] == "completed"
    seqs = [e["seq"] for e in replay["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [e["type"] for e in replay["events"]] == ["state", "state", "progress", "artifact", "state"]
    assert [u["seq"] for u in live] == seqs[2:]
    tail = await call(nc, API + f"TASK.EVENTS.{task_id}", {"after_seq": live[0]["seq"]})
    assert [e["seq"] for e in tail["events"]] == seqs[3:]
    task = await call(nc, API + f"TASK.GET.{task_id}")
    assert task["task"]["output"] == "doc"
    assert task["task"]["skill"] == "echo"
    await worker.close()


async def test_input_required_event_sets_the_task_state(broker, nc):
    worker = await Agent(broker.nats_url, "ask", hold=True).start()
    sub = await call(nc, API + "AGENT.INVOKE.ask", {"input": 1, "mode": "async"})
    await wait_until(lambda: len(worker.received) == 1)
    await worker.event(sub["task_id"], "input-required", {"question": "which language?"})
    await worker.nc.flush()
    await wait_for(
        lambda: call(nc, API + f"TASK.GET.{sub['task_id']}"), lambda t: t["task"]["state"] == "input-required"
    )
    await worker.release()
    await worker.close()


async def test_same_idempotency_key_returns_the_first_task(broker, nc):
    worker = await Agent(broker.nats_url, "idem").start()
    body = {"input": "once", "idempotency_key": "order-42"}
    first = await call(nc, API + "AGENT.INVOKE.idem", body)
    second = await call(nc, API + "AGENT.INVOKE.idem", body)
    third = await call(nc, API + "AGENT.INVOKE.idem", {**body, "mode": "async"})
    assert first["task_id"] == second["task_id"] == third["task_id"]
    assert second["output"] == "once"
    assert len(worker.received) == 1
    other = await call(nc, API + "AGENT.INVOKE.idem", {"input": "again", "idempotency_key": "order-43"})
    assert other["task_id"] != first["task_id"]
    await worker.close()


async def test_missed_heartbeats_take_an_instance_down(broker, nc):
    worker = await Agent(broker.nats_url, "hb").start(heartbeat_interval_ms=100)
    ok = await call(
        nc, API + "AGENT.HEARTBEAT.hb", {"instance_id": worker.instance_id, "in_flight": 0, "processed": 0}
    )
    assert ok["error"] == ""
    # the connection stays open: only the missing heartbeats can take the instance down
    await wait_for(lambda: call(nc, API + "AGENT.STATUS.hb"), lambda s: s["status"] == "down")
    reply = await call(nc, API + "AGENT.INVOKE.hb", {"input": 1})
    assert reply["code"] == 503
    assert worker.received == []
    await worker.close()


BEAT_EVERY_S = 0.1


async def test_heartbeats_keep_an_instance_live(broker, nc):
    # beats at a third of the interval: a loaded machine's scheduling delays do not look like a miss
    worker = await Agent(broker.nats_url, "beat").start(heartbeat_interval_ms=300)
    for _ in range(12):
        await call(worker.nc, API + "AGENT.HEARTBEAT.beat", {"instance_id": worker.instance_id})
        # wall clock on purpose: 12 beats outlast the 3 x 300 ms an instance lives without one
        await asyncio.sleep(BEAT_EVERY_S)
    reply = await call(nc, API + "AGENT.INVOKE.beat", {"input": 5})
    assert reply["output"] == 5
    await worker.close()


async def test_intent_invocation_picks_a_live_agent_and_fails_over(broker, nc):
    weather = await Agent(broker.nats_url, "weather").start(
        card("weather", "weather forecast: temperature and rain for a city")
    )
    broken = await Agent(broker.nats_url, "translator", fail="model crashed").start(
        card("translator", "translate text from one language into another language")
    )
    backup = await Agent(broker.nats_url, "translator-backup").start(
        card("translator-backup", "translate text between languages, slower backup translator")
    )
    reply = await call(
        nc, API + "INVOKE", {"intent": "translate this text into another language", "input": "hola"}
    )
    assert reply["error"] == "", reply
    assert reply["agent"] == "translator-backup"
    assert reply["output"] == "hola"
    assert len(broken.received) == 1
    assert weather.received == []
    nobody = await call(nc, API + "INVOKE", {"intent": "zzqx unknown capability", "input": 1})
    assert nobody["code"] == 503
    for agent in (weather, broken, backup):
        await agent.close()


async def test_register_info_list_discover_deregister(broker, nc):
    a = await Agent(broker.nats_url, "cards").start(
        card(
            "cards", "summarize long documents", [{"id": "summarize", "name": "summarize", "tags": ["text"]}]
        ),
        metadata={"team": "docs"},
        mailbox="agent.cards.inbox",
    )
    info = await call(nc, API + "AGENT.INFO.cards")
    agent = info["agent"]
    assert agent["name"] == "cards" and agent["status"] == "healthy"
    assert agent["mailbox"] == "agent.cards.inbox"
    assert agent["instances"][0]["instance_id"] == a.instance_id
    assert agent["card"]["skills"][0]["id"] == "summarize"
    listed = await call(nc, API + "AGENT.LIST", {"limit": 10, "page": 1})
    assert "cards" in [x["name"] for x in listed["agents"]]
    assert listed["total"] >= 1
    healthy = await call(nc, API + "AGENT.LIST", {"status": "down"})
    assert "cards" not in [x["name"] for x in healthy["agents"]]
    by_cap = await call(nc, API + "AGENT.DISCOVER", {"capability": "summarize"})
    assert [x["name"] for x in by_cap["agents"]] == ["cards"]
    by_tag = await call(nc, API + "AGENT.DISCOVER", {"capability": "text"})
    assert [x["name"] for x in by_tag["agents"]] == ["cards"]
    by_text = await call(nc, API + "AGENT.DISCOVER", {"text": "summarize documents"})
    assert by_text["agents"][0]["name"] == "cards"
    assert by_text["agents"][0]["score"] > 0
    one = await call(nc, API + "AGENT.DEREGISTER.cards", {"instance_id": a.instance_id})
    assert one["removed_instances"] == 1
    down = await call(nc, API + "AGENT.DISCOVER", {"capability": "summarize"})
    assert down["agents"] == []
    offline = await call(nc, API + "AGENT.DISCOVER", {"capability": "summarize", "live_only": False})
    assert offline["agents"][0]["status"] == "down"
    gone = await call(nc, API + "AGENT.DEREGISTER.cards")
    assert gone["error"] == ""
    missing = await call(nc, API + "AGENT.INFO.cards")
    assert missing["code"] == 404
    await a.close()


async def test_connection_close_marks_the_instance_down_at_once(broker, nc):
    a = await Agent(broker.nats_url, "bye").start()
    await a.close()
    await wait_down(nc, "bye")
    status = await call(nc, API + "AGENT.STATUS.bye")
    assert status["instances"][0]["status"] == "down"


async def test_srv_ping_info_stats_list_registered_agents(broker, nc):
    a = await Agent(broker.nats_url, "micro").start()
    b = await Agent(broker.nats_url, "micro").start()
    await call(nc, API + "AGENT.INVOKE.micro", {"input": 1, "skill": "echo"})

    async def collect(subject: str) -> list[dict]:
        inbox = nc.new_inbox()
        got: list[dict] = []
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, b"", reply=inbox)
        try:
            while True:
                msg = await sub.next_msg(timeout=0.3)
                got.append(json.loads(msg.data))
        except nats.errors.TimeoutError:
            pass
        await sub.unsubscribe()
        return got

    pings = await collect("$SRV.PING.micro")
    assert {p["id"] for p in pings} == {a.instance_id, b.instance_id}
    assert {p["type"] for p in pings} == {"io.nats.micro.v1.ping_response"}
    assert pings[0]["name"] == "micro" and pings[0]["version"] == "1.0.0"
    infos = await collect(f"$SRV.INFO.micro.{a.instance_id}")
    assert len(infos) == 1
    assert infos[0]["type"] == "io.nats.micro.v1.info_response"
    assert infos[0]["endpoints"][0]["name"] == "echo"
    stats = await collect("$SRV.STATS.micro")
    assert len(stats) == 2
    assert sum(s["endpoints"][0]["num_requests"] for s in stats) == 1
    everyone = await collect("$SRV.PING")
    assert {a.instance_id, b.instance_id} <= {p["id"] for p in everyone}
    await a.close()
    await b.close()


BAD_INPUT = [
    ("AGENT.REGISTER", b"", 400),
    ("AGENT.REGISTER", b"{not json", 400),
    ("AGENT.REGISTER", b'"a string"', 400),
    ("AGENT.REGISTER", b'{"name": "bad.name"}', 400),
    ("AGENT.REGISTER", b'{"name": "ok", "heartbeat_interval_ms": "soon"}', 400),
    ("AGENT.DEREGISTER.ghost", b"", 404),
    ("AGENT.DEREGISTER.ghost", b"{oops", 400),
    ("AGENT.HEARTBEAT.ghost", b'{"instance_id": "x"}', 404),
    ("AGENT.HEARTBEAT.ghost", b'{"in_flight": -1}', 400),
    ("AGENT.INFO.ghost", b"", 404),
    ("AGENT.LIST", b'{"limit": 0}', 400),
    ("AGENT.STATUS.ghost", b"", 404),
    ("AGENT.DISCOVER", b'{"limit": "all"}', 400),
    ("AGENT.INVOKE.ghost", b'{"input": 1}', 404),
    ("AGENT.INVOKE.ghost", b'{"on_offline": "wait"}', 400),
    ("AGENT.INVOKE", b'{"input": 1}', 400),
    ("INVOKE", b'{"input": 1}', 400),
    ("INVOKE", b"[]", 400),
    ("TASK.GET.none", b"", 404),
    ("TASK.EVENTS.none", b'{"after_seq": "x"}', 400),
    ("TASK.EVENTS.none", b"", 404),
    ("TASK.CANCEL.none", b"", 404),
    ("AGENT.UNKNOWN", b"", 404),
    ("TOTALLY.UNKNOWN.x", b"", 404),
]


async def test_bad_input_on_every_subject_gets_a_json_error_and_the_connection_survives(broker, nc):
    for subject, body, code in BAD_INPUT:
        reply = await call(nc, API + subject, body)
        assert reply["code"] == code, (subject, body, reply)
        assert isinstance(reply["error"], str) and reply["error"]
    assert nc.is_connected
    listed = await call(nc, API + "AGENT.LIST")
    assert listed["error"] == ""


async def test_one_registry_serves_mq9_and_the_agent_api(broker, nc):
    api_agent = await Agent(broker.nats_url, "forecaster").start(
        card("forecaster", "weather forecast with temperature and rain for any city")
    )
    await Agent(broker.nats_url, "polyglot").start(card("polyglot", "translate text between human languages"))
    mq9_card = card("legacy-summarizer", "summarize long reports into short notes")
    registered = await call(nc, "$mq9.AI.AGENT.REGISTER", mq9_card)
    assert registered["error"] == ""
    listed = await call(nc, "$mq9.AI.AGENT.DISCOVER", {})
    assert {"forecaster", "polyglot", "legacy-summarizer"} <= {a["name"] for a in listed["agents"]}
    info = await call(nc, API + "AGENT.INFO.legacy-summarizer")
    assert info["agent"]["status"] == "down" and info["agent"]["instances"] == []
    semantic = await call(nc, API + "AGENT.DISCOVER", {"semantic": "will it rain tomorrow in Oslo?"})
    assert semantic["agents"][0]["name"] == "forecaster"
    assert semantic["agents"][0]["status"] == "healthy"
    everyone = await call(nc, API + "AGENT.DISCOVER", {"semantic": "shorten this report", "live_only": False})
    assert everyone["agents"][0]["name"] == "legacy-summarizer"
    await api_agent.close()
