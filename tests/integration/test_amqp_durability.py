"""Durable AMQP state across a SIGKILL: exchanges, queues, bindings and persistent messages come
back; unacknowledged ones are redelivered with the flag; transient ones are gone."""

from __future__ import annotations

import pika
import pytest
from brokerproc import start_broker

pytestmark = pytest.mark.timeout(90)


def _connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1))


def test_durable_queues_survive_sigkill_with_persistent_and_unacked_messages(tmp_path) -> None:
    data = tmp_path / "data"
    b = start_broker(data, "--http-port", "off", "--fsync", "always")
    try:
        conn = _connect(b.ports["amqp"])
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare("orders", "topic", durable=True)
        ch.queue_declare("billing", durable=True, arguments={"x-max-priority": 3})
        ch.queue_bind("billing", "orders", "order.#")
        ch.queue_declare("scratch", durable=False)
        ch.exchange_declare("temp-ex", "fanout", durable=False)
        persistent = pika.BasicProperties(delivery_mode=2, headers={"id": 1}, priority=0)
        for i in range(5):
            ch.basic_publish("orders", f"order.{i}", f"p{i}".encode(), persistent)  # confirmed = stored
        ch.basic_publish("orders", "order.t", b"transient", pika.BasicProperties(delivery_mode=1))
        ch.basic_publish("", "scratch", b"s", persistent)
        # take three, ack the first: the other two stay unacked when the broker dies
        got = [ch.basic_get("billing") for _ in range(3)]
        assert [g[2] for g in got] == [b"p0", b"p1", b"p2"]
        ch.basic_ack(got[0][0].delivery_tag)
        ch.queue_declare("sync", durable=True)
        ch.basic_publish("", "sync", b"", persistent)  # confirmed: committed with the ack before it
        b.kill()

        b = start_broker(data, "--http-port", "off", "--fsync", "always")
        conn = _connect(b.ports["amqp"])
        ch = conn.channel()
        ch.exchange_declare("orders", passive=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.queue_declare("scratch", passive=True)
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.exchange_declare("temp-ex", passive=True)
        ch = conn.channel()
        ok = ch.queue_declare("billing", durable=True, arguments={"x-max-priority": 3}).method
        assert ok.message_count == 4  # p1..p4; the transient message is gone
        out = []
        while True:
            m, props, body = ch.basic_get("billing")
            if m is None:
                break
            out.append((body, m.redelivered, props.headers))
            ch.basic_ack(m.delivery_tag)
        assert [(body, redelivered) for body, redelivered, _h in out] == [
            (b"p1", True), (b"p2", True), (b"p3", False), (b"p4", False),
        ]  # fmt: skip
        assert out[0][2] == {"id": 1}
        ch.basic_publish("orders", "order.after", b"again", persistent)  # the binding is back
        assert ch.basic_get("billing", auto_ack=True)[2] == b"again"
        ch.confirm_delivery()
        ch.basic_publish("", "billing", b"marker", persistent)  # confirmed: committed with the acks before it
        b.kill()

        b = start_broker(data, "--http-port", "off", "--fsync", "always")
        conn = _connect(b.ports["amqp"])
        ch = conn.channel()
        assert ch.queue_declare("billing", passive=True).method.message_count == 1  # every ack was kept
        assert ch.basic_get("billing", auto_ack=True)[2] == b"marker"
        conn.close()
    finally:
        b.stop()


def test_a_broker_shutdown_closes_connections_with_320_and_keeps_durable_messages(tmp_path) -> None:
    import socket

    from pamqp import commands as C
    from pamqp import frame

    data = tmp_path / "data"
    b = start_broker(data, "--http-port", "off")
    conn = _connect(b.ports["amqp"])
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("kept", durable=True)
    ch.basic_publish("", "kept", b"m", pika.BasicProperties(delivery_mode=2))
    conn.close()
    s = socket.create_connection(("127.0.0.1", b.ports["amqp"]))
    s.sendall(b"AMQP\x00\x00\x09\x01")
    s.sendall(frame.marshal(C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"), 0))
    s.sendall(frame.marshal(C.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0), 0))
    s.sendall(frame.marshal(C.Connection.Open(virtual_host="/"), 0))
    s.settimeout(5)
    buf = b""
    while b"\x00\x0a\x00\x29" not in buf:  # wait for Connection.OpenOk (class 10, method 41)
        buf += s.recv(4096)
    assert b.stop() == 0
    rest = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
    _n, _ch, close = frame.unmarshal(rest)
    assert close.name == "Connection.Close" and close.reply_code == 320
    b = start_broker(data, "--http-port", "off")
    try:
        conn = _connect(b.ports["amqp"])
        assert conn.channel().basic_get("kept", auto_ack=True)[2] == b"m"
        conn.close()
    finally:
        b.stop()
