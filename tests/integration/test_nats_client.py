"""nats-py against the broker: publish/subscribe, wildcards, queue groups, request/reply, headers."""

from __future__ import annotations

import asyncio
from collections import Counter

import nats
import pytest
from brokerproc import start_broker
from helpers.waits import QUIET_S, wait_until
from nats.errors import MaxPayloadError, NoRespondersError

WAIT_S = 5.0


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("nats-client"), "--http-port", "off", "--mqtt-port", "off")
    yield b.nats_url
    b.stop()


async def collect(nc, subject, queue="", n=1):
    """Subscribe; returns (subscription, list that fills, event set when n messages arrived)."""
    got: list = []
    done = asyncio.Event()

    async def cb(msg):
        got.append(msg)
        if len(got) >= n:
            done.set()

    sub = await nc.subscribe(subject, queue=queue, cb=cb)
    return sub, got, done


async def test_publish_subscribe_round_trip(url):
    nc = await nats.connect(url, name="roundtrip")
    _, got, done = await collect(nc, "greet.world")
    await nc.publish("greet.world", b"hello")
    await asyncio.wait_for(done.wait(), WAIT_S)
    assert got[0].subject == "greet.world" and got[0].data == b"hello"
    await nc.close()


async def test_wildcard_subscriptions(url):
    nc = await nats.connect(url)
    _, star, _ = await collect(nc, "w.*")
    _, full, done = await collect(nc, "w.>", n=3)
    for subject in ("w.a", "w.a.b", "w.b"):
        await nc.publish(subject, b"x")
    await asyncio.wait_for(done.wait(), WAIT_S)
    await nc.flush()
    assert sorted(m.subject for m in star) == ["w.a", "w.b"]
    assert sorted(m.subject for m in full) == ["w.a", "w.a.b", "w.b"]
    await nc.close()


async def test_queue_group_gives_each_message_to_one_member_and_every_plain_subscriber(url):
    pub = await nats.connect(url)
    members = [await nats.connect(url) for _ in range(3)]
    plain = await nats.connect(url)
    received: Counter = Counter()
    all_done = asyncio.Event()
    total = 300

    def handler(i):
        async def cb(msg):
            received[i] += 1
            if sum(v for k, v in received.items() if k != "plain") >= total and received["plain"] >= total:
                all_done.set()

        return cb

    for i, m in enumerate(members):
        await m.subscribe("work.items", queue="workers", cb=handler(i))
        await m.flush()
    await plain.subscribe("work.items", cb=handler("plain"))
    await plain.flush()
    for i in range(total):
        await pub.publish("work.items", str(i).encode())
    await pub.flush()
    await asyncio.wait_for(all_done.wait(), WAIT_S)
    for c in (plain, *members):
        await c.flush()
    await asyncio.sleep(QUIET_S)  # a second copy, if the broker sent one, would have come by now
    assert received["plain"] == total
    assert sum(received[i] for i in range(3)) == total  # exactly once across the group
    assert sum(1 for i in range(3) if received[i]) >= 2  # spread over members
    for c in (pub, plain, *members):
        await c.close()


async def test_order_from_one_publisher_is_kept(url):
    pub, sub = await nats.connect(url), await nats.connect(url)
    _, got, done = await collect(sub, "ordered", n=2000)
    await sub.flush()
    for i in range(2000):
        await pub.publish("ordered", str(i).encode())
    await asyncio.wait_for(done.wait(), WAIT_S)
    assert [int(m.data) for m in got] == list(range(2000))
    await pub.close()
    await sub.close()


async def test_request_reply(url):
    requester, responder = await nats.connect(url), await nats.connect(url)

    async def serve(msg):
        await msg.respond(b"re:" + msg.data)

    await responder.subscribe("svc.echo", cb=serve)
    await responder.flush()
    for i in range(20):
        reply = await requester.request("svc.echo", str(i).encode(), timeout=WAIT_S)
        assert reply.data == b"re:" + str(i).encode()
    await requester.close()
    await responder.close()


async def test_old_style_request_with_its_own_inbox(url):
    requester, responder = await nats.connect(url), await nats.connect(url)

    async def serve(msg):
        await msg.respond(b"ok")

    await responder.subscribe("svc.old", cb=serve)
    await responder.flush()
    reply = await requester.request("svc.old", b"", timeout=WAIT_S, old_style=True)
    assert reply.data == b"ok"
    await requester.close()
    await responder.close()


async def test_no_responders(url):
    nc = await nats.connect(url)
    with pytest.raises(NoRespondersError):
        await nc.request("nobody.home", b"?", timeout=WAIT_S)
    await nc.close()


async def test_headers_round_trip_with_repeated_keys(url):
    nc = await nats.connect(url)
    _, got, done = await collect(nc, "with.headers")
    await nc.publish("with.headers", b"body", headers={"Trace-Id": "abc", "X-Num": "1"})
    await asyncio.wait_for(done.wait(), WAIT_S)
    assert got[0].headers == {"Trace-Id": "abc", "X-Num": "1"}
    assert got[0].data == b"body"
    await nc.close()


async def test_echo_false(url):
    nc = await nats.connect(url, no_echo=True)
    other = await nats.connect(url)
    _, mine, _ = await collect(nc, "echo.test")
    _, theirs, done = await collect(other, "echo.test")
    await other.flush()
    await nc.publish("echo.test", b"x")
    await asyncio.wait_for(done.wait(), WAIT_S)
    await nc.flush()
    assert mine == [] and len(theirs) == 1
    await nc.close()
    await other.close()


async def test_unsubscribe_after_max_messages(url):
    nc = await nats.connect(url)
    sub, got, _ = await collect(nc, "limited")
    await sub.unsubscribe(limit=3)
    for _ in range(10):
        await nc.publish("limited", b"x")
    await nc.flush()
    await wait_until(lambda: len(got) >= 3)
    await asyncio.sleep(QUIET_S)  # a fourth message, if the broker sent one, would have come by now
    assert len(got) == 3
    await nc.close()


async def test_client_refuses_oversize_payload_from_info(url):
    nc = await nats.connect(url)
    assert nc.max_payload == 1024 * 1024
    with pytest.raises(MaxPayloadError):
        await nc.publish("too.big", b"x" * (1024 * 1024 + 1))
    await nc.close()


async def test_verbose_client_connects_and_works(url):
    nc = await nats.connect(url, verbose=True)
    _, got, done = await collect(nc, "verbose.on")
    await nc.publish("verbose.on", b"v")
    await asyncio.wait_for(done.wait(), WAIT_S)
    assert got[0].data == b"v"
    await nc.close()


async def test_client_info_is_exposed(url):
    nc = await nats.connect(url)
    assert nc.client_id is not None
    assert nc.connected_server_version.major == 2
    await nc.close()
