"""Raw-socket bad input: each offender is closed with RabbitMQ's code and text while another
client's connection carries on."""

from __future__ import annotations

import socket
import struct
import time

import pika
import pytest
from brokerproc import start_broker
from pamqp import commands as C
from pamqp import frame

pytestmark = pytest.mark.timeout(60)

HEADER = b"AMQP\x00\x00\x09\x01"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("amqp-bad") / "data", "--http-port", "off")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def bystander(broker):
    """A well-behaved client that must keep working through every bad one."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.ports["amqp"]))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    yield ch, q
    conn.close()


def _read_frames(sock: socket.socket, timeout: float = 2.0) -> list:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    out = []
    while data:
        n, channel, f = frame.unmarshal(data)
        out.append((channel, f))
        data = data[n:]
    return out


def _open(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(HEADER)
    s.sendall(frame.marshal(C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"), 0))
    s.sendall(frame.marshal(C.Connection.TuneOk(channel_max=100, frame_max=131072, heartbeat=0), 0))
    s.sendall(frame.marshal(C.Connection.Open(virtual_host="/"), 0))
    s.sendall(frame.marshal(C.Channel.Open(), 1))
    return s


def _close_of(frames: list) -> tuple:
    closes = [f for _ch, f in frames if f.name in ("Connection.Close", "Channel.Close")]
    assert closes, frames
    c = closes[-1]
    return c.name, c.reply_code, c.reply_text, c.class_id, c.method_id


def _bystander_works(bystander) -> None:
    ch, q = bystander
    ch.basic_publish("", q, b"still here")
    assert ch.basic_get(q, auto_ack=True)[2] == b"still here"


def test_wrong_protocol_header_is_answered_with_ours_then_closed(broker, bystander) -> None:
    s = socket.create_connection(("127.0.0.1", broker.ports["amqp"]))
    s.sendall(b"GET / HTTP/1.1\r\n\r\n")
    s.settimeout(2)
    assert s.recv(100) == HEADER
    assert s.recv(100) == b""
    _bystander_works(bystander)


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("frame end", frame.marshal(C.Basic.Qos(prefetch_count=1), 1)[:-1] + b"\x00",
         ("Connection.Close", 501, "FRAME_ERROR - type 1, all octets", 0, 0)),
        ("over frame_max", struct.pack(">BHI", 1, 1, 200_000) + b"x" * 64,
         ("Connection.Close", 501, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,200000,131064}", 0, 0)),
        ("closed channel", frame.marshal(C.Queue.Declare(queue="x"), 7),
         ("Connection.Close", 504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10)),
        ("unknown method", struct.pack(">BHIHH", 1, 1, 4, 60, 250) + b"\xce",
         ("Connection.Close", 540, "NOT_IMPLEMENTED - unknown method class 60 method 250", 60, 250)),
        ("unknown class", struct.pack(">BHIHH", 1, 1, 4, 99, 10) + b"\xce",
         ("Connection.Close", 540, "NOT_IMPLEMENTED - unknown method class 99 method 10", 99, 10)),
        ("body without header", struct.pack(">BHI", 3, 1, 3) + b"abc\xce",
         ("Connection.Close", 505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)),
        ("method instead of header",
         frame.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1) + frame.marshal(C.Basic.Qos(), 1),
         ("Connection.Close", 505, "UNEXPECTED_FRAME - expected content header for class 60", 60, 40)),
        ("second channel open", frame.marshal(C.Channel.Open(), 1),
         ("Connection.Close", 504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)),
        ("unknown exchange type", frame.marshal(C.Exchange.Declare(exchange="e", exchange_type="nope"), 1),
         ("Connection.Close", 503, "COMMAND_INVALID - unknown exchange type 'nope'", 40, 10)),
        ("malformed arguments", struct.pack(">BHIHH", 1, 1, 6, 50, 10) + b"\x00\x00\xce",
         ("Connection.Close", 501, "FRAME_ERROR - cannot decode <<0,0>>", 50, 10)),
        ("malformed publish", struct.pack(">BHIHH", 1, 1, 7, 60, 40) + b"\x00\x00\x09\xce",
         ("Connection.Close", 501, "FRAME_ERROR - cannot decode <<0,0,9>>", 60, 40)),
        ("unknown delivery tag", frame.marshal(C.Basic.Ack(delivery_tag=5), 1),
         ("Channel.Close", 406, "PRECONDITION_FAILED - unknown delivery tag 5", 60, 80)),
    ],
)  # fmt: skip
def test_bad_input_is_closed_with_rabbitmqs_code(broker, bystander, name, payload, expected) -> None:
    s = _open(broker.ports["amqp"])
    s.sendall(payload)
    got = _close_of(_read_frames(s))
    assert got[:2] == expected[:2], name
    assert got[2].startswith(expected[2]), (name, got[2])
    assert got[3:] == expected[3:], name
    s.close()
    _bystander_works(bystander)


def test_wrong_vhost_is_530(broker, bystander) -> None:
    s = socket.create_connection(("127.0.0.1", broker.ports["amqp"]))
    s.sendall(HEADER)
    s.sendall(frame.marshal(C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"), 0))
    s.sendall(frame.marshal(C.Connection.TuneOk(channel_max=100, frame_max=131072, heartbeat=0), 0))
    s.sendall(frame.marshal(C.Connection.Open(virtual_host="other"), 0))
    assert _close_of(_read_frames(s))[:3] == ("Connection.Close", 530, "NOT_ALLOWED - vhost other not found")
    _bystander_works(bystander)


def test_amqplain_login_and_refused_password(broker) -> None:
    from pamqp import encode

    for password, ok in (("guest", True), ("nope", False)):
        s = socket.create_connection(("127.0.0.1", broker.ports["amqp"]))
        s.sendall(HEADER)
        table = encode.field_table({"LOGIN": "guest", "PASSWORD": password})[4:]
        s.sendall(
            frame.marshal(C.Connection.StartOk(mechanism="AMQPLAIN", response=table.decode("latin-1")), 0)
        )
        frames = _read_frames(s, 1.0)
        names = [f.name for _c, f in frames]
        if ok:
            assert names == ["Connection.Start", "Connection.Tune"]
        else:
            assert _close_of(frames)[:2] == ("Connection.Close", 403)
        s.close()


def test_silent_peer_is_closed_after_two_heartbeats(broker) -> None:
    s = socket.create_connection(("127.0.0.1", broker.ports["amqp"]))
    s.sendall(HEADER)
    s.sendall(frame.marshal(C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"), 0))
    s.sendall(frame.marshal(C.Connection.TuneOk(channel_max=100, frame_max=131072, heartbeat=1), 0))
    s.sendall(frame.marshal(C.Connection.Open(virtual_host="/"), 0))
    started = time.monotonic()
    frames = _read_frames(s, 6.0)  # reads until the broker closes the socket
    assert time.monotonic() - started < 5.0  # closed by the broker, not by our read timeout
    assert any(f.name == "Heartbeat" for _c, f in frames)  # the broker sent its own heartbeats
    s.close()
