"""NATS limits with nats-server's texts: slow consumers, connections, subscriptions, PINGs, payload."""

from __future__ import annotations

import asyncio

import nats
from helpers.nats_raw import RawClient
from helpers.waits import wait_until_sync

from robustmq.nats import errors


def err(text: str) -> bytes:
    return f"-ERR '{text}'\r\n".encode()


def test_slow_consumer_is_cut_off_while_everyone_else_carries_on(broker_factory):
    b = broker_factory(
        "--http-port", "off", "--mqtt-port", "off", env={"ROBUSTMQ_NATS_MAX_PENDING_BYTES": "262144"}
    )
    port = b.ports["nats"]
    body = b"s" * 4096
    batch = 32
    with RawClient(port) as stuck, RawClient(port) as good, RawClient(port) as pub:
        stuck.send(b"SUB flood 1\r\n")
        good.send(b"SUB flood 1\r\n")
        assert stuck.ping() == b"" and good.ping() == b""
        frame = b"PUB flood %d\r\n%s\r\n" % (len(body), body)
        for _ in range(300):  # about 39 MB: far past the kernel buffers and the cap
            pub.send(frame * batch)
            for f in good.read_frames(batch):
                assert f.payload == body
        assert pub.ping() == b""
        # the stuck reader gets what was already in flight, then the close
        stuck.sock.settimeout(10)
        stuck.closed_after()
        with RawClient(port) as late:
            late.send(b"SUB after 1\r\nPUB after 1\r\nx\r\n")
            assert late.ping() == b"MSG after 1 1\r\nx\r\n"


def test_max_connections(broker_factory):
    b = broker_factory("--http-port", "off", "--mqtt-port", "off", env={"ROBUSTMQ_NATS_MAX_CONNECTIONS": "2"})
    port = b.ports["nats"]
    with RawClient(port) as first, RawClient(port):
        refused = RawClient(port, connect=None)
        assert refused.closed_after() == err(errors.MAX_CONNECTIONS)
        assert first.ping() == b""

    def connects() -> bool:
        try:
            with RawClient(port) as again:
                return again.ping() == b""
        except (AssertionError, ConnectionError):
            return False

    wait_until_sync(connects, interval=0.05, what="a connection once the server noticed the two closes")


def test_max_subscriptions_per_connection_keeps_it_open(broker_factory):
    b = broker_factory(
        "--http-port", "off", "--mqtt-port", "off", env={"ROBUSTMQ_NATS_MAX_SUBSCRIPTIONS": "2"}
    )
    with RawClient(b.ports["nats"]) as c:
        c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n")
        assert c.ping() == err(errors.MAX_SUBSCRIPTIONS)
        c.send(b"UNSUB 1\r\nSUB c 3\r\nPUB c 1\r\nx\r\n")
        assert c.ping() == b"MSG c 3 1\r\nx\r\n"


async def test_stale_connection_is_closed_and_a_live_client_stays(broker_factory):
    b = broker_factory(
        "--http-port", "off", "--mqtt-port", "off",
        env={"ROBUSTMQ_NATS_PING_INTERVAL_S": "0.2", "ROBUSTMQ_NATS_MAX_PINGS_OUTSTANDING": "2"},
    )  # fmt: skip
    live = await nats.connect(b.nats_url, allow_reconnect=False)
    silent = RawClient(b.ports["nats"])
    got = await asyncio.to_thread(silent.closed_after)
    assert got == b"PING\r\nPING\r\n" + err(errors.STALE_CONNECTION)
    assert live.is_connected
    await live.flush()
    await live.close()


def test_configured_max_payload_is_advertised_and_enforced(broker_factory):
    b = broker_factory(
        "--http-port", "off", "--mqtt-port", "off", env={"ROBUSTMQ_NATS_MAX_PAYLOAD_BYTES": "1000"}
    )
    with RawClient(b.ports["nats"]) as c:
        assert c.info["max_payload"] == 1000
        c.send(b"SUB p 1\r\nPUB p 1000\r\n" + b"y" * 1000 + b"\r\n")
        assert c.read_frame().payload == b"y" * 1000
        c.send(b"PUB p 1001\r\n")
        assert c.closed_after() == err(errors.MAX_PAYLOAD)
