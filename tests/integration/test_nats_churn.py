"""Opening and closing 1,000 connections leaves no task, connection or subscription behind."""

from __future__ import annotations

import asyncio

import nats
from helpers.inprocess import start_inprocess_broker
from helpers.waits import wait_until

CONNECTIONS = 1000
AT_ONCE = 100


async def _raw_client(host: str, port: int, i: int, abrupt: bool) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false}\r\nSUB churn.%d 1\r\nSUB churn.* 2 q\r\nPING\r\n' % i)
    assert await reader.readline() == b"PONG\r\n"
    if abrupt:
        writer.transport.abort()
    else:
        writer.close()
        await writer.wait_closed()


async def test_a_thousand_connections_leave_nothing_behind(tmp_path):
    broker, server, url = await start_inprocess_broker(tmp_path)
    try:
        host, port = server.addresses()[0]
        tasks_before = asyncio.all_tasks()
        subs_before = broker.router.trie.count
        for start in range(0, CONNECTIONS, AT_ONCE):
            await asyncio.gather(
                *(_raw_client(host, port, i, abrupt=i % 2 == 0) for i in range(start, start + AT_ONCE))
            )
        # a few real clients too, with their request inboxes
        for _ in range(20):
            nc = await nats.connect(url)
            await nc.subscribe("churn.nats")
            await nc.flush()
            await nc.close()
        await wait_until(
            lambda: not server.connections_by_id and broker.router.trie.count == subs_before, timeout=10
        )
        assert server.connections_by_id == {}
        assert broker.router.trie.count == subs_before
        assert server.subscriptions() == []
        assert asyncio.all_tasks() - tasks_before == set()  # tasks done since start-up do not count
        assert server.total_connections == CONNECTIONS + 20
    finally:
        await broker.stop()
