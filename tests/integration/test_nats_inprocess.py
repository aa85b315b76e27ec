"""In-process services and network clients share one subject space through the router.

The broker runs in the test's own event loop, so the test can look at the router and the server.
"""

from __future__ import annotations

import asyncio

import nats
import pytest
from helpers.inprocess import start_inprocess_broker
from helpers.waits import wait_until

from robustmq.headers import encode_headers, get_header
from robustmq.router import NoResponders

WAIT_S = 5.0


@pytest.fixture
async def running(tmp_path):
    broker, server, url = await start_inprocess_broker(tmp_path)
    yield broker, server, url
    await broker.stop()


async def test_network_publish_reaches_an_in_process_callback_with_its_origin(running):
    broker, _, url = running
    got: list = []
    arrived = asyncio.Event()

    def deliver(subject, reply, headers, payload):
        origin = broker.router.current_origin
        got.append((subject, reply, headers, payload, origin))
        arrived.set()

    broker.router.subscribe("inproc.>", deliver)
    nc = await nats.connect(url, name="agent-7")
    await nc.publish("inproc.a.b", b"data", reply="r.1", headers={"K": "v"})
    await asyncio.wait_for(arrived.wait(), WAIT_S)
    subject, reply, headers, payload, origin = got[0]
    assert (subject, reply, payload) == ("inproc.a.b", "r.1", b"data")
    assert get_header(headers, "K") == "v"
    assert origin.protocol == "nats"
    assert origin.name == "agent-7"
    assert origin.user is None
    assert origin.client_id == nc.client_id
    assert origin.remote.startswith("127.0.0.1:")
    assert broker.router.current_origin is None  # restored after delivery
    await nc.close()


async def test_python_publish_reaches_a_network_subscriber(running):
    broker, _, url = running
    nc = await nats.connect(url)
    got: list = []
    arrived = asyncio.Event()

    async def cb(msg):
        got.append(msg)
        arrived.set()

    await nc.subscribe("to.client", cb=cb)
    await nc.flush()
    count = broker.router.publish(
        "to.client", b"from python", headers=encode_headers([("A", "1"), ("A", "2")])
    )
    assert count == 1
    await asyncio.wait_for(arrived.wait(), WAIT_S)
    assert got[0].data == b"from python"
    assert got[0].header is not None
    await nc.close()


async def test_python_request_answered_by_a_network_responder(running):
    broker, _, url = running
    nc = await nats.connect(url)

    async def serve(msg):
        await msg.respond(b"answer:" + msg.data)

    await nc.subscribe("svc.inproc", cb=serve)
    await nc.flush()
    headers, payload = await broker.router.request("svc.inproc", b"q", timeout=WAIT_S)
    assert payload == b"answer:q"
    with pytest.raises(NoResponders):
        await broker.router.request("svc.nobody", b"q", timeout=WAIT_S)
    await nc.close()


async def test_network_request_answered_by_an_in_process_service(running):
    broker, _, url = running

    def serve(subject, reply, headers, payload):
        broker.router.publish(reply, payload.upper())

    broker.router.subscribe("svc.upper", serve)
    nc = await nats.connect(url)
    reply = await nc.request("svc.upper", b"shout", timeout=WAIT_S)
    assert reply.data == b"SHOUT"
    await nc.close()


async def test_close_callback_runs_once_when_the_client_goes(running):
    broker, _, url = running
    origins: list = []
    broker.router.subscribe("hello.origin", lambda *a: origins.append(broker.router.current_origin))
    nc = await nats.connect(url)
    await nc.publish("hello.origin", b"")
    await nc.flush()
    calls: list = []
    origins[0].add_close_callback(lambda: calls.append(1))
    await nc.close()
    await wait_until(lambda: calls)
    assert calls == [1]
    origins[0].add_close_callback(lambda: calls.append(2))  # already closed: called at once
    assert calls == [1, 2]


async def test_connection_and_subscription_introspection(running):
    _, server, url = running
    nc = await nats.connect(url, name="inspect-me")

    async def cb(msg):
        pass

    await nc.subscribe("look.here", queue="q", cb=cb)
    await nc.publish("look.here", b"12345")
    await nc.flush()
    await wait_until(
        lambda: any(s["subject"] == "look.here" and s["msgs"] == 1 for s in server.subscriptions())
    )
    (info,) = [c for c in server.connections() if c["name"] == "inspect-me"]
    assert info["cid"] == nc.client_id
    assert info["lang"] == "python3" and info["version"]
    assert info["subscriptions"] == 1
    assert info["in_msgs"] >= 1 and info["in_bytes"] >= 5
    assert info["out_msgs"] >= 1
    assert info["ip"] == "127.0.0.1" and info["port"] > 0
    assert info["start"] > 0
    subs = [s for s in server.subscriptions() if s["cid"] == nc.client_id]
    assert any(s["subject"] == "look.here" and s["queue"] == "q" and s["msgs"] == 1 for s in subs)
    await nc.close()


async def test_authenticated_user_is_stamped_on_the_origin(tmp_path):
    broker, _, url = await start_inprocess_broker(tmp_path, users=[{"user": "alice", "password": "pw"}])
    try:
        origins: list = []
        arrived = asyncio.Event()

        def deliver(*args):
            origins.append(broker.router.current_origin)
            arrived.set()

        broker.router.subscribe("who.am.i", deliver)
        host_port = url.removeprefix("nats://")
        nc = await nats.connect(f"nats://alice:pw@{host_port}")
        await nc.publish("who.am.i", b"")
        await asyncio.wait_for(arrived.wait(), WAIT_S)
        assert origins[0].user == "alice"
        await nc.close()
    finally:
        await broker.stop()


async def test_a_failing_in_process_subscriber_does_not_break_the_client(running):
    broker, server, url = running

    def broken(*args):
        raise RuntimeError("service bug")

    broker.router.subscribe("fragile", broken)
    nc = await nats.connect(url)
    for _ in range(3):
        await nc.publish("fragile", b"x")
    await nc.flush()
    # counted per failed delivery call; a run of publishes in one read is delivered in one call
    assert 1 <= server.delivery_errors <= 3
    reply_seen = asyncio.Event()

    async def cb(msg):
        reply_seen.set()

    await nc.subscribe("fine", cb=cb)
    await nc.publish("fine", b"y")
    await asyncio.wait_for(reply_seen.wait(), WAIT_S)
    await nc.close()
