"""The AMQP connection state machine without a network: negotiation and RabbitMQ's guest rule."""

from __future__ import annotations

from types import SimpleNamespace

from pamqp import commands as C
from pamqp import frame

from robustmq.bridges.amqp.limits import PROTOCOL_HEADER
from robustmq.bridges.amqp.listener import AmqpConnection, AmqpServer
from robustmq.config import load_settings
from robustmq.router import Router


class FakeTransport:
    """Just enough of an asyncio transport: it records what the connection writes."""

    def __init__(self, peer: str) -> None:
        self.peer = (peer, 40000)
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str) -> object:
        return self.peer if name == "peername" else None

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def _methods(data: bytes) -> list:
    out = []
    while data:
        n, _ch, f = frame.unmarshal(bytes(data))
        out.append(f)
        data = data[n:]
    return out


async def _handshake(
    peer: str, user: str = "guest", password: str = "guest"
) -> tuple[AmqpConnection, FakeTransport]:
    import asyncio

    broker = SimpleNamespace(settings=load_settings(environ={}), router=Router())
    server = AmqpServer(broker)
    server.loop = asyncio.get_running_loop()
    conn = AmqpConnection(server)
    transport = FakeTransport(peer)
    conn.connection_made(transport)
    conn.data_received(PROTOCOL_HEADER)
    ok = C.Connection.StartOk(mechanism="PLAIN", response=f"\0{user}\0{password}")
    conn.data_received(frame.marshal(ok, 0))
    conn.data_received(frame.marshal(C.Connection.TuneOk(channel_max=10, frame_max=8192, heartbeat=0), 0))
    conn.data_received(frame.marshal(C.Connection.Open(virtual_host="/"), 0))
    await asyncio.sleep(0)  # the connection flushes once per loop tick
    return conn, transport


async def test_guest_may_log_in_from_loopback() -> None:
    conn, transport = await _handshake("127.0.0.1")
    names = [m.name for m in _methods(transport.written)]
    assert names == ["Connection.Start", "Connection.Tune", "Connection.OpenOk"]
    assert (conn.state, conn.frame_max, conn.channel_max) == ("open", 8192, 10)
    conn.connection_lost(None)


async def test_guest_is_refused_from_another_address_as_rabbitmq_does() -> None:
    conn, transport = await _handshake("10.1.2.3")
    methods = _methods(transport.written)
    assert [m.name for m in methods] == ["Connection.Start", "Connection.Close"]
    assert methods[-1].reply_code == 403 and conn.state == "closing"
    conn.connection_lost(None)


async def test_other_users_are_refused_when_none_are_configured() -> None:
    conn, transport = await _handshake("127.0.0.1", "alice", "pw")
    assert _methods(transport.written)[-1].reply_code == 403
    conn.connection_lost(None)
